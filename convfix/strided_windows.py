"""Strided windows TF 2.21's CPU kernels answer with wrong values (right shape, no error).

Two measured bugs (sweeps over every small geometry against a float64 reference; the
README's table and tests/integration/test_properties.py pin them down):

- ``negative_same_padding``: with SAME padding, a stride larger than the kernel can leave
  input positions past the last window, so TensorFlow's padding total is negative. The
  Conv3D kernel outside oneDNN (every dtype oneDNN does not take, and every dtype with
  oneDNN off) then centres the windows, starting ``-total // 2`` positions into the input
  where TensorFlow's definition starts at 0. Wrong whenever ``total <= -2``. Repair: crop
  each such dimension to the positions the windows read, ``(out - 1) * stride + kernel``:
  the total becomes 0 and every kernel answers the definition.
- ``collapsed_strided_window``: oneDNN's convolution (TF 2.21, oneDNN 3.7, measured on
  AVX-512 where it picks its brgemm kernel) leaves output rows unwritten when the input has
  one channel and the last spatial dimension collapses to a single output through a stride
  of 2 or more, the other dimensions having stride 1 and at least two outputs. Explicit
  padding lists are no cure (they run on the same kernel). Repair: pad the input by the
  call's own padding, cut the last dimension to its one window, and run VALID with stride 1:
  the same window, the same products, on a geometry that kernel gets right. convfix cannot
  tell which oneDNN kernel a CPU will pick, so with oneDNN on it repairs every call of this
  geometry (a rare one: a single-channel input, its width collapsed by a stride).

Both repairs are exact: the repaired call reads the same input positions with the same
kernel taps as TensorFlow's definition of the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from convfix.call import Call
from convfix.geometry import Shape, effective_kernel, explicit_pads, per_spatial
from convfix.policies.base import Problem


@dataclass(frozen=True, slots=True)
class Window:
    """One spatial dimension of a call, all sizes known."""

    size: int
    kernel: int  # dilated
    stride: int
    pads: tuple[int, int]
    out: int


def windows(call: Call, x_shape: Shape, f_shape: Shape, spatial: int) -> list[Window] | None:
    """Per spatial dimension, or None where a size, stride or padding is not known."""
    last = call.channels_last()
    sizes = x_shape[-spatial - 1 : -1] if last else x_shape[-spatial:]
    return windows_of(
        sizes, f_shape[:spatial], call.strides, call.dilations, call.padding, spatial, last
    )


def windows_of(
    sizes: Sequence[int | None],
    kernel: Sequence[int | None],
    strides: Any,
    dilations: Any,
    padding: Any,
    spatial: int,
    last: bool,
) -> list[Window] | None:
    """The same from raw arguments (the fast check has no bound call)."""
    steps = per_spatial(strides, spatial, last)
    rates = per_spatial(dilations, spatial, last)
    if steps is None or rates is None or min(steps + rates) < 1:
        return None
    same = isinstance(padding, str) and padding == "SAME"
    valid = isinstance(padding, str) and padding == "VALID"
    given = explicit_pads(padding, spatial, last)
    if not (same or valid or given):
        return None
    found = []
    for i, (n, k, s) in enumerate(zip(sizes, effective_kernel(kernel, rates), steps)):
        if n is None or k is None:
            return None
        if same:
            out = -(-n // s)
            total = max((out - 1) * s + k - n, 0)
            pads = (total // 2, total - total // 2)
        else:
            pads = given[i] if given else (0, 0)
            out = (n + pads[0] + pads[1] - k) // s + 1
        found.append(Window(n, k, s, pads, out))
    return found


def misanswered(
    kind: str,
    spatial: int,
    padding: Any,
    channels: int | None,
    multiplier: int | None,
    dims: list[Window],
    onednn: bool,
) -> str | None:
    """The reason TF 2.21 would answer these windows wrongly, or None."""
    shifted = kind == "conv" and spatial == 3 and padding == "SAME"
    if shifted and crop_sizes(dims) != [w.size for w in dims]:
        return "negative_same_padding"
    if not onednn or kind not in ("conv", "depthwise", "separable") or spatial < 2:
        return None
    if channels != 1 or (kind != "conv" and (multiplier or 0) < 2):
        return None  # measured: depthwise with a channel multiplier of 1 is right
    *rest, last = dims
    if last.out != 1 or last.stride < 2 or last.kernel < 2:
        return None
    if any(w.stride != 1 for w in rest) or not any(w.out >= 2 for w in rest):
        return None
    return "collapsed_strided_window"


def crop_sizes(dims: list[Window]) -> list[int]:
    """Per dimension, the input positions SAME windows read where TF 2.21's Conv3D outside
    oneDNN would shift them (``total <= -2``), else the whole size."""
    return [w.size - _overshoot(w) if _overshoot(w) >= 2 else w.size for w in dims]


def problem(
    call: Call, x_shape: Shape, f_shape: Shape, spatial: int, onednn: bool
) -> Problem | None:
    """The guard's view: a Problem for windows TF 2.21 would answer wrongly."""
    dims = windows(call, x_shape, f_shape, spatial)
    if dims is None:
        return None
    channels = x_shape[-1] if call.channels_last() else x_shape[-spatial - 1]
    reason = misanswered(call.spec.kind, spatial, call.padding, channels, f_shape[-1], dims, onednn)
    if reason is None:
        return None
    sizes, strides = [w.size for w in dims], [w.stride for w in dims]
    if reason == "negative_same_padding":
        message = (
            f"SAME padding with strides {strides} on input spatial size {sizes} leaves input "
            f"past the last window (the windows read {crop_sizes(dims)}); TF 2.21's Conv3D "
            "kernel outside oneDNN then shifts every window and answers wrong values. Crop "
            "the input to the positions read, or use VALID"
        )
    else:
        message = (
            f"a one-channel input of spatial size {sizes} whose last dimension a stride of "
            f"{strides[-1]} collapses to one output; TF 2.21's oneDNN kernel leaves rows of "
            "that answer unwritten. Run it as that one window (VALID, stride 1), or give the "
            "input a second channel"
        )
    before = {"input_shape": x_shape, "strides": strides, "padding": _show(call.padding)}
    return Problem(reason, "padding", "garbage", f"{call.spec.name}: {message}", before)


def _show(padding: Any) -> Any:
    return padding if isinstance(padding, str) else str(padding)


def _overshoot(w: Window) -> int:
    """How far TensorFlow's SAME padding total for ``w`` falls below zero."""
    return max(0, w.size - ((w.out - 1) * w.stride + w.kernel))
