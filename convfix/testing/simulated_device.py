"""A simulated small device: convolution kernels that run out of memory, or whose cuDNN
fails, on a CPU-only machine. Public as :func:`convfix.testing.small_device`.

It replaces the two C entry points every eager op goes through,
``pywrap_tfe.TFE_Py_FastPathExecute`` (the generated ``gen_nn_ops`` functions) and
``pywrap_tfe.TFE_Py_Execute`` (their fallback, via ``execute.quick_execute``), so every
Python layer above, convfix's own wrappers included, sees what a real device would give.
TensorFlow is imported only when a block is entered: ``import convfix.testing`` stays light.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Op type -> (tensor inputs it takes, the input whose dim 0 is the batch). Reading the
# batch from an input lets a refused kernel (dnn_failure) report it without running.
_FORWARD, _GRAD_INPUT, _GRAD_FILTER = (2, 0), (3, 2), (3, 0)
_KERNELS: dict[str, tuple[int, int]] = {
    "Conv": _FORWARD,  # only tf.raw_ops.Conv reaches it in TF 2.21; batch_dims may be > 1
    "Conv2D": _FORWARD,
    "Conv3D": _FORWARD,
    "DepthwiseConv2dNative": _FORWARD,
    "Conv2DBackpropInput": _GRAD_INPUT,
    "Conv2DBackpropInputV2": _GRAD_INPUT,
    "Conv3DBackpropInput": _GRAD_INPUT,
    "Conv3DBackpropInputV2": _GRAD_INPUT,
    "DepthwiseConv2dNativeBackpropInput": _GRAD_INPUT,
    "Conv2DBackpropFilter": _GRAD_FILTER,
    "Conv2DBackpropFilterV2": _GRAD_FILTER,
    "Conv3DBackpropFilter": _GRAD_FILTER,
    "Conv3DBackpropFilterV2": _GRAD_FILTER,
    "DepthwiseConv2dNativeBackpropFilter": _GRAD_FILTER,
}
# The fallback path names ops as bytes: one lookup serves both spellings.
_NAMES: dict[str | bytes, str] = {
    **{op: op for op in _KERNELS},
    **{op.encode(): op for op in _KERNELS},
}

_JOINS = ("ConcatV2", b"ConcatV2")  # limited by max_join_bytes

# TensorFlow's own text (stream_executor's cuDNN convolution), the error convfix exists for.
CUDNN_MESSAGE = (
    "Failed to get convolution algorithm. This is probably because cuDNN failed to "
    "initialize, so try looking to see if a warning log message was printed above."
)
_RESOURCE_EXHAUSTED, _UNKNOWN = 8, 2  # tf.errors codes, fixed by TensorFlow's protos

_install_lock = threading.Lock()
_installed: list[SmallDevice] = []  # at most one: blocks do not nest


@dataclass
class SmallDevice:
    """What one ``small_device`` block limits, and what its convolution kernels did."""

    max_batch: int | None = None
    max_bytes: int | None = None
    device: tuple[str, int | None] | None = None  # (type, index); None index = any
    dnn_failure: bool = False
    max_join_bytes: int | None = None
    attempts: list[tuple[str, int]] = field(default_factory=list)
    """(op type, batch) of every kernel on the device, run or refused, in order."""
    ooms: int = 0
    dnn_failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _refuses(self, op: str, batch: int, nbytes: int | None) -> int | None:
        """Record one kernel (nbytes None: not run); the error code that fails it, if any."""
        with self._lock:  # kernels may run on several threads at once
            self.attempts.append((op, batch))
            if nbytes is None:
                self.dnn_failures += 1
                return _UNKNOWN
            over_batch = self.max_batch is not None and batch > self.max_batch
            if over_batch or (self.max_bytes is not None and nbytes > self.max_bytes):
                self.ooms += 1
                return _RESOURCE_EXHAUSTED
        return None


@contextmanager
def small_device(
    *,
    max_batch: int | None = None,
    max_bytes: int | None = None,
    device: str | None = None,
    dnn_failure: bool = False,
    max_join_bytes: int | None = None,
) -> Iterator[SmallDevice]:
    """Make eager convolution kernels fail as on a small GPU, beneath every Python layer.

    ``max_batch``: a kernel whose batch (dim 0 of the activations) exceeds it raises
    ``tf.errors.ResourceExhaustedError`` ("OOM when allocating tensor with shape[...]").
    ``max_bytes``: likewise when its input bytes plus output bytes exceed it. The kernel
    really runs first (its output gives the shape the message names), then is discarded.
    The batch is the kernel's: dilated tf.nn.convolution / depthwise_conv2d run
    SpaceToBatchND first, so their kernel's batch is the batch times the dilations' product.
    ``device`` ("GPU:0", "/device:CPU:1", ...): limit only kernels placed there: the
    eager device scope (``with tf.device(...)``), else TensorFlow's default placement (the
    first GPU if there is one, else the CPU; not the inputs' device). On a
    CPU-only machine ``with tf.device("/GPU:0")`` still runs ops, on /CPU:0 (soft
    placement), but the scope names GPU:0: that is how a GPU is simulated. None = any.
    ``dnn_failure``: kernels raise ``tf.errors.UnknownError`` with cuDNN's "Failed to get
    convolution algorithm" message instead of running.
    ``max_join_bytes``: a concatenation (ConcatV2, how the results of a split batch are
    joined) whose inputs plus output exceed it runs out of memory too; it is not recorded
    in ``attempts``, but counted in ``ooms``.

    Errors are raised as TensorFlow's C layer raises them, so TensorFlow's own Python turns
    them into the usual exception, message suffix (" [Op:Conv2D] name: ") included.
    Only eager kernels are limited: inside ``tf.function`` they run in C++ unseen. The
    device is process-wide (all threads); blocks do not nest (RuntimeError).

        with small_device(max_batch=4) as dev:
            tf.nn.conv2d(x, k, 1, "SAME")  # ResourceExhaustedError when x has batch > 4
        dev.attempts, dev.ooms, dev.dnn_failures
    """
    limits = (
        ("max_batch", max_batch),
        ("max_bytes", max_bytes),
        ("max_join_bytes", max_join_bytes),
    )
    for name, limit in limits:
        if limit is not None and (isinstance(limit, bool) or limit < 0):
            raise ValueError(f"small_device: {name} must be a non-negative int, not {limit!r}")
    from tensorflow.python import pywrap_tfe

    wanted = None if device is None else _placement(device)[:2]  # fails early on a typo
    dev = SmallDevice(max_batch, max_bytes, wanted, dnn_failure, max_join_bytes)
    with _install_lock:
        if _installed:
            raise RuntimeError("small_device blocks do not nest: leave the active one first")
        saved = pywrap_tfe.TFE_Py_FastPathExecute, pywrap_tfe.TFE_Py_Execute
        fast, slow = _hooks(dev, *saved)
        pywrap_tfe.TFE_Py_FastPathExecute, pywrap_tfe.TFE_Py_Execute = fast, slow
        _installed.append(dev)
    try:
        yield dev
    finally:
        with _install_lock:
            pywrap_tfe.TFE_Py_FastPathExecute, pywrap_tfe.TFE_Py_Execute = saved
            _installed.clear()


def _hooks(
    dev: SmallDevice, fast_execute: Callable[..., Any], execute: Callable[..., Any]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Replacements for the two C entry points, passing every other op straight through."""
    from tensorflow.python.eager import core
    from tensorflow.python.framework import errors

    def fast(*args: Any) -> Any:  # (ctx, op_name, name, *inputs, *attr name/value pairs)
        op = _NAMES.get(args[1])
        if op is None:
            if args[1] in _JOINS and dev.max_join_bytes is not None:
                return join(args[0].device_name, args[3], lambda: fast_execute(*args), True)
            return fast_execute(*args)
        count = _KERNELS[op][0]
        inputs, attrs = args[3 : 3 + count], args[3 + count :]
        return run(op, args[0].device_name, inputs, attrs, lambda: fast_execute(*args), True)

    def slow(*args: Any) -> Any:  # (ctx handle, device name, op_name, inputs, attrs, outputs)
        op = _NAMES.get(args[2])
        if op is None:
            if args[2] in _JOINS and dev.max_join_bytes is not None:
                return join(args[1], args[3][:-1], lambda: execute(*args), False)
            return execute(*args)
        return run(op, args[1], args[3], args[4], lambda: execute(*args), False)

    def join(scope: str | None, values: Any, kernel: Callable[[], Any], fast_path: bool) -> Any:
        place = scope or _default_device()
        kind, index, full = _placement(place or "/CPU:0")
        if dev.device is not None and (
            dev.device[0] != kind or dev.device[1] not in (None, index or 0)
        ):
            return kernel()
        result = kernel()
        output = result[0] if isinstance(result, (list, tuple)) else result
        assert dev.max_join_bytes is not None
        if sum(map(_nbytes, (*values, output))) <= dev.max_join_bytes:
            return result
        with dev._lock:
            dev.ooms += 1
        allocator = "cpu" if kind == "CPU" else f"{kind}_{index or 0}_bfc"
        text = f"OOM when allocating tensor with {_described(output)} on {full}"
        text += f" by allocator {allocator}"
        del result, output
        text = f"{{{{function_node __wrapped__ConcatV2_device_{full}}}}} {text} [Op:ConcatV2]"
        if fast_path:
            raise core._NotOkStatusException(text, _RESOURCE_EXHAUSTED, {})
        raise errors.exception_type_from_error_code(_RESOURCE_EXHAUSTED)(None, None, text)

    def run(
        op: str,
        scope: str | None,
        inputs: Sequence[Any],
        attrs: Sequence[Any],
        kernel: Callable[[], Any],
        fast_path: bool,
    ) -> Any:
        place = scope or _default_device()
        kind, index, full = _placement(place or "/CPU:0")
        index = index or 0
        if dev.device is not None and (dev.device[0] != kind or dev.device[1] not in (None, index)):
            return kernel()
        batch = _batch(op, inputs, attrs)
        result = None if dev.dnn_failure else kernel()
        output = result[0] if isinstance(result, (list, tuple)) else result
        nbytes = None if output is None else sum(map(_nbytes, (*inputs, output)))
        code = dev._refuses(op, batch, nbytes)
        if code is None:
            return result
        if code == _UNKNOWN:
            text = CUDNN_MESSAGE
        else:
            allocator = "cpu" if kind == "CPU" else f"{kind}_{index}_bfc"
            text = f"OOM when allocating tensor with {_described(output)} on {full}"
            text += f" by allocator {allocator}"
        del result, output  # the "device" never had room for it
        # The C layer's framing of every eager kernel error in TF 2.x.
        text = f"{{{{function_node __wrapped__{op}_device_{full}}}}} {text} [Op:{op}]"
        if fast_path:  # gen_nn_ops catches this and calls raise_from_not_ok_status, as for C's
            raise core._NotOkStatusException(text, code, {})
        # C's TFE_Py_Execute raises the OpError subclass itself (so no " name: " suffix).
        raise errors.exception_type_from_error_code(code)(None, None, text)

    return fast, slow


@functools.lru_cache(maxsize=1)
def _default_device() -> str:
    """Where TensorFlow places an eager op outside any ``tf.device`` scope: the first GPU
    when there is one (whatever device its inputs live on), else the CPU."""
    from tensorflow.python.eager import context

    return "/GPU:0" if context.context().list_logical_devices("GPU") else "/CPU:0"


@functools.lru_cache(maxsize=64)
def _placement(name: str) -> tuple[str, int | None, str]:
    """(device type, index or None, full name) of a device string; ValueError if it has no
    device type. Cached: a kernel's device is looked up on every call."""
    import tensorflow as tf

    spec = tf.DeviceSpec.from_string(name)
    if spec.device_type is None:
        raise ValueError(f"small_device: {name!r} names no device type (e.g. 'GPU:0')")
    kind, index = spec.device_type.upper(), spec.device_index
    job, replica, task = spec.job or "localhost", spec.replica or 0, spec.task or 0
    return kind, index, f"/job:{job}/replica:{replica}/task:{task}/device:{kind}:{index or 0}"


def _shape(value: Any) -> tuple[int, ...]:
    shape = getattr(value, "shape", None)
    if shape is None:  # a Python list reaching the fast path (e.g. conv2d_transpose sizes)
        import numpy as np

        shape = np.shape(value)
    return tuple(int(d) for d in shape)


def _batch(op: str, inputs: Sequence[Any], attrs: Sequence[Any]) -> int:
    shape = _shape(inputs[_KERNELS[op][1]])
    pairs = dict(zip(attrs[::2], attrs[1::2]))
    return math.prod(shape[: int(pairs.get("batch_dims", 1))])  # Conv folds leading dims


def _nbytes(value: Any) -> int:
    import tensorflow as tf

    dtype = getattr(value, "dtype", None)
    if dtype is None:
        import numpy as np

        dtype = np.asarray(value).dtype
    return math.prod(_shape(value)) * int(tf.dtypes.as_dtype(dtype).size)


def _described(output: Any) -> str:
    """'shape[8,32,32,16] and type float', in TensorFlow's allocator wording."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    enum = tf.dtypes.as_dtype(output.dtype).as_datatype_enum
    dtype = types_pb2.DataType.Name(enum).removeprefix("DT_").lower()  # DT_HALF -> half
    return f"shape[{','.join(map(str, _shape(output)))}] and type {dtype}"
