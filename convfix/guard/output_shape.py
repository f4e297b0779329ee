"""The rules for a transposed convolution's ``output_shape``: pure functions of a call and
the build, like guard.rules (no TensorFlow import; a tensor is read through its attributes).

A transpose runs the gradient of the forward convolution of ``output_shape``: TensorFlow
takes the shape as given and checks it against the input when the kernel runs. Measured on
TF 2.21 (every 1-D and 2-D geometry of sizes 1-4, kernels 1-4, strides 1-3, dilations 1-2,
SAME and VALID, and a sample of 3-D and explicit padding; tests/integration/
test_transpose_output_shape.py pins them):

- An output batch other than the input's: oneDNN raises ``AbortedError: could not create
  a primitive descriptor``; without oneDNN, "input and out_backprop must have the same
  batch size". The batch can only be the input's, so batch_dim repairs it exactly (the
  last, partial batch of an epoch against a hard-coded ``[batch_size, ...]``: tensorflow
  #27409).
- A spatial size the forward convolution cannot map to the input's: the same AbortedError
  with oneDNN, "Size of out_backprop doesn't match computed" without; and with oneDNN some
  are answered with no error at all (``impossible_transpose_output_answered``): a requested
  size of 0, and VALID padding with one input position and a size below the dilated
  kernel. Refused, naming the sizes that padding accepts and the padding that gives the
  size asked for, if one does: which one was meant is the caller's to say.
"""

from __future__ import annotations

from typing import Any

from convfix.call import Call, Hazard, Problem
from convfix.geometry import (
    Shape,
    effective_kernel,
    explicit_pads,
    output_dims,
    output_elements,
    padding_name,
    per_spatial,
    reads_batch_of,
    shown_padding,
    spatial_sizes,
)
from convfix.guard.build import Build

_NAMED = ("SAME", "VALID")


def output_batch(call: Call, x_shape: Shape) -> Problem | None:
    """``output_shape``'s batch is not the input's (batch_dim's to repair). Where the
    input's batch is known only when the graph runs, a batch given as a number may differ
    then (TensorFlow raises at run time; the repair reads the input's batch in the graph);
    a batch read from the input's own shape, as Keras passes it, is left alone."""
    given = call.arguments.get("output_shape")
    dims = output_dims(given)
    if dims is None or len(dims) != len(x_shape) or not x_shape or 0 in x_shape:
        return None  # (an empty input: the emptiness rule's, and guard.answers')
    batch, wanted = x_shape[0], dims[0]
    if batch is not None:
        if wanted is None or wanted == batch:
            return None  # a batch known only at run time: TensorFlow compares them then
        hazard: Hazard = "unclear"
        text = f"the input's batch is {batch}"
    else:
        elements = output_elements(given)
        if wanted is None and elements is not None and reads_batch_of(elements[0], call.input):
            return None
        hazard = "answered"  # right whenever the graph's batch happens to match
        text = "the input's batch is known only when the graph runs"
    shown = [d if d is not None else "?" for d in dims]
    return Problem(
        "output_batch_mismatch",
        "batch_dim",
        hazard,
        f"{call.spec.name}: output_shape {shown} has batch {shown[0]}, and {text}; a "
        "transposed convolution's output batch is always its input's (a hard-coded batch "
        "size meets the last, smaller batch of an epoch)",
        {"input_shape": x_shape, "output_shape": shown},
    )


def valid_sizes(size: int, kernel: int, stride: int, padding: str | tuple[int, int]) -> range:
    """The output sizes whose forward convolution (``kernel`` dilated) gives ``size``: the
    sizes a transpose of an input of ``size`` can produce with this stride and padding."""
    if padding == "SAME":
        return range((size - 1) * stride + 1, size * stride + 1)
    lo, hi = padding if isinstance(padding, tuple) else (0, 0)
    start = (size - 1) * stride + kernel - lo - hi
    return range(max(start, 0), start + stride)


def output_sizes(
    call: Call, x_shape: Shape, f_shape: Shape | None, spatial: int, build: Build
) -> Problem | None:
    """A spatial size of ``output_shape`` the input, filter, strides, dilations and padding
    cannot produce (module docstring); None where something is not known statically."""
    dims = output_dims(call.arguments.get("output_shape"))
    if 0 in x_shape:
        return None  # an empty input: the emptiness rule's, and guard.answers'
    if dims is None or f_shape is None or len(dims) != spatial + 2 or len(f_shape) != spatial + 2:
        return None
    last = call.channels_last()
    strides = per_spatial(call.strides, spatial, last)
    dilations = per_spatial(call.dilations, spatial, last)
    if strides is None or dilations is None or min(strides + dilations) < 1:
        return None
    pads = explicit_pads(call.padding, spatial, last)
    name = padding_name(call.padding)
    if pads is not None and spatial != 2:
        return None  # only the 2-D transposes take explicit padding: TF's TypeError
    if pads is None and name not in _NAMED:
        return None  # TensorFlow's own error (or the padding policy's repair first)
    kernel = effective_kernel(f_shape[:spatial], dilations)
    sizes = spatial_sizes(x_shape, spatial, last)
    wanted = spatial_sizes(dims, spatial, last)
    known = [
        i
        for i in range(spatial)
        if sizes[i] and wanted[i] is not None and kernel[i] is not None  # (0: emptiness rule)
    ]

    def ranges(how: Any) -> dict[int, range]:
        return {
            i: valid_sizes(sizes[i], kernel[i], strides[i], pads[i] if how is None else how)  # type: ignore[arg-type, index]
            for i in known
        }

    own = ranges(None if pads is not None else name)
    wrong = [i for i in known if wanted[i] not in own[i]]
    if not wrong:
        return None
    silent = build.has("impossible_transpose_output_answered") and any(
        wanted[i] == 0 or (name != "SAME" and sizes[i] == 1 and wanted[i] < kernel[i])  # type: ignore[operator]
        for i in wrong
    )
    asked = [wanted[i] for i in known]
    here = "padding " + (repr(name) if pads is None else str(shown_padding(call.padding)))
    others, none = [], True
    for other in (n for n in _NAMED if n != name):
        accepted = ranges(other)
        gives = all(wanted[i] in accepted[i] for i in known)
        none = none and not gives
        verdict = "gives" if gives else "does not give"
        others.append(f"padding {other!r} {verdict} {_one(asked)} (it accepts {_sizes(accepted)})")
    return Problem(
        "impossible_output_shape",
        "guard",
        "garbage" if silent else "unclear",
        f"{call.spec.name}: output_shape {dims} cannot come from input {x_shape} with filter "
        f"{f_shape} and strides {strides}{_dilated(dilations)}: with {here} "
        f"{'each spatial size' if spatial > 1 else 'the output size'} must be {_sizes(own)}; "
        f"{'; '.join(others)}"
        + ("; no padding name gives it" if none else "")
        + " (convfix never changes a padding for you: which one you meant is yours to say)",
        {"input_shape": x_shape, "output_shape": dims, "padding": shown_padding(call.padding)},
    )


def _choices(r: range) -> str:
    if len(r) == 1:
        return str(r.start)
    if len(r) == 2:
        return f"{r.start} or {r.start + 1}"
    return f"{r.start} to {r.stop - 1}"


def _sizes(by_dim: dict[int, range]) -> str:
    """ "5 or 6" when every dimension accepts the same sizes, else one entry per dimension."""
    found = list(by_dim.values())
    if len(set(found)) <= 1:
        return _choices(found[0]) if found else "unknown"
    return "[" + ", ".join(_choices(r) for r in found) + "]"


def _one(asked: list[int | None]) -> str:
    return str(asked[0]) if len(set(asked)) == 1 else str(asked)


def _dilated(dilations: list[int]) -> str:
    return f", dilations {dilations}" if max(dilations) > 1 else ""
