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
- ``single_window_one_channel``: oneDNN's convolutions (TF 2.21, oneDNN 3.7, measured on
  AVX-512, float32 and bfloat16) leave parts of the answer unwritten when each group has
  one input channel (a one-channel input; depthwise with a channel multiplier of 2 or
  more) and some dimension has a single output window that is strided or reaches into
  padding. The measured conditions are narrower and differ by dtype (float32: the last
  dimension collapsed by a stride, batch 2 or more; bfloat16 also a padded depth of 1);
  convfix repairs the wider geometry, since it cannot tell which kernel a CPU will pick.
  Explicit padding lists are no cure (they run on the same kernel). Repair: pad the input
  by the call's own padding, cut each such dimension to its one window with stride 1, and
  run VALID: the same windows, the same products, on a geometry those kernels get right
  (measured on every wrong case found).

Both repairs are exact: the repaired call reads the same input positions with the same
kernel taps as TensorFlow's definition of the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from convfix.call import Call, Problem
from convfix.geometry import Shape, effective_kernel, explicit_pads, per_spatial, shown_padding


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
    if not onednn or kind not in ("conv", "depthwise", "separable"):
        return None
    # One input channel per group: a one-channel input to a plain convolution, or a
    # depthwise one with a channel multiplier of 2 or more (measured: 1 is right).
    if (channels != 1) if kind == "conv" else (multiplier or 0) < 2:
        return None
    cut = single_windows(dims)
    if not any(cut):
        return None
    if kind != "conv" and any(w.stride != 1 for w, c in zip(dims, cut) if not c):
        return None  # measured: never wrong there; and depthwise takes equal strides only
    return "single_window_one_channel"


def single_windows(dims: list[Window]) -> list[bool]:
    """Per dimension: one output whose window is strided or reaches into padding."""
    return [w.out == 1 and w.kernel >= 2 and (w.stride >= 2 or w.pads != (0, 0)) for w in dims]


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
            f"one input channel per group, spatial size {sizes}, strides {strides}: a "
            "dimension with a single output window that is strided or reaches into padding; "
            "TF 2.21's oneDNN kernels leave parts of such answers unwritten. Run that "
            "dimension as its one window (padded explicitly, VALID, stride 1)"
        )
    before = {"input_shape": x_shape, "strides": strides, "padding": shown_padding(call.padding)}
    return Problem(reason, "padding", "garbage", f"{call.spec.name}: {message}", before)


def _overshoot(w: Window) -> int:
    """How far TensorFlow's SAME padding total for ``w`` falls below zero."""
    return max(0, w.size - ((w.out - 1) * w.stride + w.kernel))
