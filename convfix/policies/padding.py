"""padding: padding strings in the wrong case, a kernel that does not fit the input, and
strided windows TF 2.21's kernels answer wrongly (guard/rules.py: cropped to the positions
the windows read, or run as a single window; exact, whatever ``strategy`` says).

- ``"same"`` / ``"valid"`` are TensorFlow's own names in the wrong case: upper-cased.
- VALID (or explicit) padding where the dilated kernel is larger than the (padded) input in
  some spatial dimension: TF 2.21 with oneDNN returns a wrongly shaped tensor, without it an
  empty one. Repaired by ``strategy``:
  "pad" (default) - zero-pad each dimension that is too small by ``kernel - size``, split as
                    SAME splits it (any odd pixel at the end), so exactly one output
                    position exists there; the caller's padding applies unchanged, so the
                    dimensions that fit keep their size (x[2, 40, 3, 1] * k[3, 5, 1, 8]
                    VALID gives (2, 38, 1, 8));
  "same"          - run with padding "SAME" instead (every dimension then keeps the
                    input's size: 40 there, where VALID gives 38).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from convfix.call import Call, Problem, Repair, spatial_rank
from convfix.config import PaddingPolicyConfig
from convfix.geometry import (
    Window,
    crop_sizes,
    effective_kernel,
    explicit_pads,
    per_spatial,
    shown_padding,
    single_windows,
    spatial_sizes,
    static_shape,
)
from convfix.guard import rules

name = "padding"
_NAMES = ("SAME", "VALID")


class PaddingPolicy:
    """Normalise padding names; make a too-large kernel fit by SAME or zero-padding."""

    name = name

    def __init__(self, settings: PaddingPolicyConfig) -> None:
        self.settings = settings

    def detect(self, call: Call) -> Problem | None:
        padding = call.padding
        if isinstance(padding, str) and padding != padding.upper() and padding.upper() in _NAMES:
            return Problem(
                "padding_case",
                name,
                "answered",
                f"{call.spec.name}: padding {padding!r} is not a TensorFlow padding name; "
                "use 'SAME' or 'VALID' (upper case)",
                {"padding": padding},
            )
        return None  # kernel_larger_than_input comes from the guard, owned by this policy

    def describe(self, call: Call, problem: Problem) -> str:
        if problem.reason == "padding_case":
            return f"use padding {str(problem.before['padding']).upper()!r}"
        if problem.reason == "negative_same_padding":
            return "crop the input to the positions the windows read"
        if problem.reason in ("single_window_one_channel", "single_window_bfloat16"):
            return "run each single-window dimension as that window (padded, VALID, stride 1)"
        if problem.reason == "padding_only_window":
            return "zero-pad the input by the call's own padding and run VALID"
        if self.settings.strategy == "same":
            return "run with padding 'SAME'"
        return f"zero-pad the input by {self._extra(call)} per spatial dimension"

    def apply(self, call: Call, problem: Problem) -> Repair:
        param = call.spec.padding_param
        if problem.reason == "padding_case":
            upper = str(call.padding).upper()
            return Repair(
                call.replace(**{param: upper}),
                "uppercase_padding",
                {"padding": upper},
                rewrites={param: lambda _: upper},
            )
        if problem.reason == "negative_same_padding":
            return _crop_to_windows(call)
        if problem.reason in ("single_window_one_channel", "single_window_bfloat16"):
            return _one_window(call)
        if problem.reason == "padding_only_window":
            return _one_window(call, cut_single=False)
        if self.settings.strategy == "same":
            return Repair(
                call.replace(**{param: "SAME"}),
                "use_same_padding",
                {"padding": "SAME"},
                rewrites={param: lambda _: "SAME"},
            )
        extra = self._extra(call)
        spatial = len(extra)
        pairs = [[0, 0], *extra, [0, 0]] if call.channels_last() else [[0, 0], [0, 0], *extra]
        batch_dims = len(static_shape(call.input) or []) - spatial - 2
        pads = [[0, 0]] * batch_dims + pairs
        padded = tf.pad(call.input, pads)
        after = {"input_shape": static_shape(padded), "padding": shown_padding(call.padding)}
        # A plain rewrite of the input: a remembered plan replays it (memory.py).
        return Repair(
            call.replace(input=padded),
            "zero_pad_input",
            after,
            rewrites={call.input_name: _zero_pad(pads)},
        )

    def _extra(self, call: Call) -> list[list[int]]:
        """(lo, hi) zeros to add per spatial dimension so the dilated kernel fits once."""
        x = static_shape(call.input) or []
        f = static_shape(call.filter) or []
        spatial = spatial_rank(call, f, x) or 0
        channels_last = call.channels_last()
        sizes = spatial_sizes(x, spatial, channels_last)
        dilations = per_spatial(call.dilations, spatial, channels_last) or [1] * spatial
        kernel = effective_kernel(f[:spatial], dilations)
        pads = explicit_pads(call.padding, spatial, channels_last) or [(0, 0)] * spatial
        extra = []
        for size, k, (lo, hi) in zip(sizes, kernel, pads):
            total = max(0, (k or 0) - ((size or 0) + lo + hi))
            extra.append([total // 2, total - total // 2])
        return extra


def _zero_pad(pads: list[list[int]]) -> Callable[[Any], Any]:
    """tf.pad by ``pads``, given as a tensor made once: converting the nested list is most
    of tf.pad's cost on a small input, and a replay (eager only) pays it on every call."""
    with tf.init_scope():  # an eager tensor even while tracing
        paddings = tf.constant(pads, tf.int32)

    def zero_pad(x: Any) -> Any:
        return tf.pad(x, paddings)

    return zero_pad


def _crop_to_windows(call: Call) -> Repair:
    """negative_same_padding: cut each dimension to the positions its windows read."""
    _, dims, _ = _windows(call)
    crop = crop_sizes(dims)
    index = _spatial_index([slice(0, n) for n in crop], call.channels_last())

    def crop_input(x: Any) -> Any:
        return _as_tensor(x)[index]

    cropped = crop_input(call.input)
    after = {"input_shape": static_shape(cropped)}
    return Repair(
        call.replace(input=cropped), "crop_input", after, rewrites={call.input_name: crop_input}
    )


def _one_window(call: Call, cut_single: bool = True) -> Repair:
    """single_window_one_channel: pad by the call's own padding, cut each single-window
    dimension to that window with stride 1, run VALID (the other strides as they were).
    padding_only_window (``cut_single=False``): pad and run VALID, every stride as it was:
    explicit padding's definition, spelled out, on a kernel path with no padding to get
    wrong."""
    spatial, dims, x_shape = _windows(call)
    last = call.channels_last()
    lead = len(x_shape) - spatial - 1 if last else len(x_shape) - spatial
    pairs = [[lo, hi] for lo, hi in (w.pads for w in dims)]
    pads = [[0, 0]] * lead + pairs + ([[0, 0]] if last else [])
    cut = single_windows(dims) if cut_single else [False] * len(dims)
    index = _spatial_index(
        [slice(0, w.kernel) if c else slice(None) for w, c in zip(dims, cut)], last
    )

    def one_window(x: Any) -> Any:
        return tf.pad(_as_tensor(x), pads)[index]

    spec = call.spec
    steps = [1 if c else w.stride for w, c in zip(dims, cut)]
    # tf.nn.convolution takes one stride per spatial dimension, the others one per dimension.
    strides: Any = [1, *steps, 1] if last else [1, 1, *steps]
    if spec.name.endswith("convolution"):
        strides = steps
    param = spec.strides_param or "strides"
    windowed = one_window(call.input)
    after = {"input_shape": static_shape(windowed), "padding": "VALID", "strides": strides}
    return Repair(
        call.replace(input=windowed, **{spec.padding_param: "VALID", param: strides}),
        "one_window" if cut_single else "pad_explicitly",
        after,
        rewrites={
            call.input_name: one_window,
            spec.padding_param: lambda _: "VALID",
            param: lambda _: strides,
        },
    )


def _windows(call: Call) -> tuple[int, list[Window], list[int | None]]:
    x_shape = static_shape(call.input) or []
    f_shape = static_shape(call.filter) or []
    spatial = spatial_rank(call, f_shape, x_shape) or 0
    dims = rules.windows(call, x_shape, f_shape, spatial)
    if dims is None:
        raise ValueError("the guard saw these windows: their sizes must be known")
    return spatial, dims, x_shape


def _spatial_index(cuts: list[slice], channels_last: bool) -> tuple[Any, ...]:
    """An index taking ``cuts`` of the spatial dimensions, whatever leads them."""
    return (Ellipsis, *cuts, slice(None)) if channels_last else (Ellipsis, *cuts)


def _as_tensor(x: Any) -> Any:
    return x if isinstance(x, (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(x)
