"""Running one convolution as several smaller ones along the batch dimension.

Examples of a batch are independent in every convolution TensorFlow has, so running the
batch in slices and concatenating the results along axis 0 is the same computation; the
only difference is rounding in kernels that block differently for another batch size
(even chunks came out bit-identical in tf-facts' measurements). Slicing and concatenation
are differentiable, so gradients through a split call are those of the whole call.

Chunks all have one size except perhaps the last, so TensorFlow's autotune cache and any
traced functions are reused from one chunk to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf

try:  # TF 2.13 and later
    from tensorflow.python.eager import record
except ImportError:  # TF 2.12: the same function lived in eager.tape
    from tensorflow.python.eager import tape as record

from convfix.call import Call
from convfix.geometry import shape_values, static_shape
from convfix.guard.answers import output_shape


def tape_active() -> bool:
    """Whether a GradientTape may record what runs now (the in-place join has no gradient)."""
    return bool(record.could_possibly_record())


Send = Callable[[Call], Any]
"""Runs one (chunk) call on TensorFlow and returns its result."""


def batch_size(call: Call) -> int | None:
    """The static size of the input's first (batch) dimension, if known."""
    shape = static_shape(call.input)
    if not shape or shape[0] is None:
        return None
    return shape[0]


def chunk_sizes(batch: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of each chunk: all ``chunk`` long but perhaps the last."""
    for start in range(0, batch, chunk):
        yield start, min(start + chunk, batch)


def even_chunk(batch: int, wanted: int) -> int:
    """The largest chunk no bigger than ``wanted`` that divides ``batch`` evenly (under op
    determinism uneven chunks could round differently from run to run of other sizes)."""
    for size in range(max(1, min(wanted, batch)), 0, -1):
        if batch % size == 0:
            return size
    return 1


def slice_call(call: Call, start: Any, stop: Any) -> Call:
    """The call for examples ``start:stop`` (ints, or scalar tensors inside a graph)."""
    part = call.replace(input=call.input[start:stop])
    if call.spec.kind == "transpose":  # the output shape names the batch size too
        part = part.replace(output_shape=_with_batch(call.arguments["output_shape"], stop - start))
    return part


def _with_batch(shape: Any, size: Any) -> Any:
    """``output_shape`` with its batch replaced: a list of ints stays a list (NumPy arrays
    and TensorShapes become one: TF wants int32, NumPy's default is int64); a tensor, or a
    size known only at run time, gives an int32 tensor."""
    if not isinstance(shape, tf.Tensor):
        values = [int(v) for v in shape]
        if not isinstance(size, tf.Tensor):
            return [int(size), *values[1:]]
        shape = tf.constant(values, tf.int32)
    head = tf.reshape(tf.cast(size, shape.dtype), [1])
    return tf.concat([head, shape[1:]], 0)


def run_split(call: Call, chunk: int, send: Send, in_place: bool = False) -> Any:
    """Run ``call`` eagerly in chunks of ``chunk`` examples and join the results.

    Each chunk's input slice is made just before it runs and dropped after. The results
    are concatenated: fast, differentiable, but holding every chunk's result and the
    joined output at once (twice the output). ``in_place`` (honoured only when no gradient
    tape records, as the in-place op has no gradient) writes each chunk's result into one
    preallocated output as soon as it exists instead: the peak is the output plus one
    chunk (measured: 250 vs 400 MiB for a 200 MiB output in four chunks), at the price of
    a slower copy (TF's CPU InplaceUpdate: ~3x concat's time).
    """
    batch = batch_size(call)
    assert batch is not None, "eager inputs have a known batch size"
    spans = list(chunk_sizes(batch, chunk))
    if len(spans) == 1:
        return send(call)
    if not in_place or tape_active():
        parts = [send(slice_call(call, start, stop)) for start, stop in spans]
        return _joining(tf.concat, values=parts, axis=0)
    return _join_in_place(call, spans, batch, send)


def _join_in_place(call: Call, spans: list[tuple[int, int]], batch: int, send: Send) -> Any:
    output: Any = None
    parts: list[Any] = []  # used only if this device has no in-place kernel for the dtype
    for start, stop in spans:
        part = send(slice_call(call, start, stop))
        if parts:
            parts.append(part)
            continue
        try:
            if output is None:
                shape = [batch, *part.shape[1:]]
                output = tf.raw_ops.Empty(shape=shape, dtype=part.dtype, init=False)
            # InplaceUpdate writes into ``output``'s own buffer: a buffer nobody else holds.
            # (Out of memory here is like a chunk's: smaller chunks leave more room.)
            output = tf.raw_ops.InplaceUpdate(x=output, i=tf.range(start, stop), v=part)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError):
            parts = [part] if output is None else [output[:start], part]
    return _joining(tf.concat, values=parts, axis=0) if parts else output


def _joining(op: Callable[..., Any], **arguments: Any) -> Any:
    """A concatenation needs the whole output next to its parts, whatever their size: if
    that does not fit, smaller chunks will not either."""
    try:
        return op(**arguments)
    except tf.errors.ResourceExhaustedError as error:
        raise JoinOutOfMemory(error) from error


class JoinOutOfMemory(Exception):
    """Every chunk ran, but joining their results ran out of memory."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def run_split_in_graph(call: Call, chunk: int, send: Send) -> Any:
    """Build ``call`` into the graph as chunks that run one after another, each written
    into one preallocated output (the output plus one chunk alive at the peak, where a
    concatenation holds twice the output: measured 500 vs 800 MiB for a 400 MiB output).

    A ``tf.while_loop`` with one iteration in flight runs the chunks (left alone, the
    runtime runs independent chunks at once, which saves nothing); a known batch gives it
    a fixed chunk count; an unknown one runs the call whole when it fits in one chunk.

    The in-place write has no gradient of its own, so the split call gets one: in the
    backward pass each chunk's forward pass is recomputed under a tape and its gradients
    are joined (input) or summed (filters): the whole call's gradients, at the cost of one
    more forward pass, as in gradient checkpointing. The backward pass concatenates, so
    gradients of gradients exist too.
    """
    x = tf.convert_to_tensor(call.input)
    x_shape = static_shape(x) or []
    batch = x_shape[0] if x_shape else None
    per_example = _output_per_example(call, x_shape) if len(x_shape) > 1 else None
    if per_example is None or _compiling_with_xla():
        # XLA has no InplaceUpdate kernel; it assigns buffers itself, and writes a
        # TensorArray in place (dynamic-update-slice) anyway.
        return _loop_concatenating(call, chunk, send)
    names = [n for n in (call.filter_name, call.spec.pointwise_param) if n]
    weights = [tf.convert_to_tensor(call.arguments[n]) for n in names]

    def with_operands(x_part: Any, parts: Any, start: Any, stop: Any) -> Call:
        replaced = call.replace(input=x_part, **dict(zip(names, parts)))
        if call.spec.kind == "transpose":
            shape = _with_batch(call.arguments["output_shape"], stop - start)
            replaced = replaced.replace(output_shape=shape)
        return replaced

    @tf.custom_gradient  # type: ignore[untyped-decorator]
    def split(x: Any, *weights: Any) -> Any:
        total = tf.shape(x)[0]
        count = (total + chunk - 1) // chunk
        output = tf.raw_ops.Empty(
            shape=tf.concat([[total], per_example], 0), dtype=x.dtype, init=False
        )

        def forward(i: Any, output: Any) -> tuple[Any, Any]:
            start, stop = i * chunk, tf.minimum((i + 1) * chunk, total)
            part = send(with_operands(x[start:stop], weights, start, stop))
            return i + 1, tf.raw_ops.InplaceUpdate(x=output, i=tf.range(start, stop), v=part)

        def chunked() -> Any:
            _, joined = tf.while_loop(
                lambda i, _: i < count, forward, (tf.constant(0), output), parallel_iterations=1
            )
            return joined

        if batch is None:  # known at run time only: one call when it fits, else the chunks
            small = tf.logical_and(total <= chunk, total > 0)  # empty: the loop answers it
            whole = with_operands(x, weights, 0, total)
            output = tf.cond(small, lambda: send(whole), chunked)
        else:
            output = chunked()

        def backward(dy: Any) -> Any:
            # Sizes again from x: tensors made in the forward pass may live in another
            # graph (a tf.cond branch) than the gradient is built in.
            total = tf.shape(x)[0]
            count = (total + chunk - 1) // chunk

            def step(i: Any, dx: Any, dws: Any) -> tuple[Any, Any, Any]:
                start, stop = i * chunk, tf.minimum((i + 1) * chunk, total)
                x_part = x[start:stop]
                with tf.GradientTape() as tape:
                    tape.watch([x_part, *weights])
                    y_part = send(with_operands(x_part, weights, start, stop))
                grads = tape.gradient(y_part, [x_part, *weights], output_gradients=dy[start:stop])
                grads = [tf.zeros_like(v) if g is None else g
                         for g, v in zip(grads, [x_part, *weights])]  # fmt: skip
                sums = [a + b for a, b in zip(dws, grads[1:])]
                return i + 1, dx.write(i, grads[0]), sums

            element = tf.TensorShape([None, *x.shape[1:]])  # an empty batch concatenates too
            dx = tf.TensorArray(x.dtype, size=count, infer_shape=False, element_shape=element)
            zeros = [tf.zeros_like(w) for w in weights]
            _, dx, dws = tf.while_loop(
                lambda i, *_: i < count,
                step,
                (tf.constant(0), dx, zeros),
                parallel_iterations=1,
            )
            joined = dx.concat()
            joined.set_shape(x.shape)
            return (joined, *dws)

        return output, backward

    out = split(x, *weights)
    out.set_shape([batch, *per_example])
    return out


def _compiling_with_xla() -> bool:
    """Whether the graph being traced is compiled by XLA (tf.function(jit_compile=True),
    which Keras picks on GPU machines): TensorFlow marks it with an XLA context."""
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))
    except Exception:  # a TensorFlow without it: the portable loop is always safe
        return True


def _loop_concatenating(call: Call, chunk: int, send: Send) -> Any:
    """The chunks joined by a TensorArray concatenation (per-example output shape not
    known statically, so no output can be preallocated)."""
    x = tf.convert_to_tensor(call.input)
    total = tf.shape(x)[0]
    count = (total + chunk - 1) // chunk
    results = tf.TensorArray(x.dtype, size=count, infer_shape=False)

    def body(i: Any, results: Any) -> tuple[Any, Any]:
        start = i * chunk
        stop = tf.minimum(start + chunk, total)
        return i + 1, results.write(i, send(slice_call(call.replace(input=x), start, stop)))

    _, results = tf.while_loop(
        lambda i, _: i < count, body, (tf.constant(0), results), parallel_iterations=1
    )
    return results.concat()


def estimate_bytes(call: Call) -> tuple[int, int] | None:
    """(bytes for the whole call, bytes per example): input + output + workspace, from
    static shapes; None when the per-example shapes are not known.

    The workspace is taken as the im2col patch matrix of a GEMM-based kernel (output
    positions x kernel volume x input channels), the largest scratch a common CPU or
    cuDNN algorithm needs; real algorithms may use less. An estimate, for a budget.
    """
    x_shape = static_shape(call.input)
    f_shape = static_shape(call.filter)
    if not x_shape or not f_shape or None in x_shape[1:] or None in f_shape:
        return None
    item = tf.as_dtype(getattr(call.input, "dtype", tf.float32)).size
    per_input = _product(x_shape[1:])
    out = _output_per_example(call, x_shape)
    if out is None:
        return None
    per_output = _product(out)
    spatial = len(f_shape) - 2
    kernel_volume = _product(f_shape[:spatial]) * int(f_shape[-2] or 1)
    positions = _product(out[:-1]) if call.channels_last() else _product(out[1:])
    per_example = (per_input + per_output + positions * kernel_volume) * item
    batch = x_shape[0]
    return (per_example * batch if batch is not None else -1), per_example


def output_bytes_per_example(call: Call) -> int | None:
    """Bytes of one example's output, from static shapes; None when unknown."""
    x_shape = static_shape(call.input)
    if not x_shape or None in x_shape[1:]:
        return None
    out = _output_per_example(call, x_shape)
    if out is None:
        return None
    item: int = tf.as_dtype(getattr(call.input, "dtype", tf.float32)).size
    return _product(out) * item


def _output_per_example(call: Call, x_shape: list[int | None]) -> list[int] | None:
    if call.spec.kind == "transpose":
        wanted = shape_values(call.arguments.get("output_shape"))
        return None if wanted is None else wanted[1:]
    out = output_shape(call, [1, *x_shape[1:]])
    return None if out is None else out[1:]


def _product(values: Any) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result
