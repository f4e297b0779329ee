"""The guard: shapes TensorFlow would crash on or answer wrongly, found before dispatch.

Always on (unless mode = "off"). It reports structural problems; a policy may own the
repair (batch_dim, padding); what nobody repairs and is unsafe is refused by the pipeline.

Which calls are unsafe depends on the build: TF 2.21's oneDNN kernels (on by default on
x86-64 CPUs with AVX-512 VNNI or BF16; TF_ENABLE_ONEDNN_OPTS overrides) abort on a wrong
input rank and answer an empty input or a kernel larger than a VALID input with a tensor of
the wrong shape. Without oneDNN, TensorFlow raises its own errors for the same calls. Some
strided windows are answered with wrong values by either build (strided_windows.py).
Measured: the README's table "What convfix does with each kind of call".
"""

from __future__ import annotations

from convfix.call import Call, Hazard, Problem, spatial_rank
from convfix.geometry import (
    Shape,
    effective_kernel,
    explicit_pads,
    per_spatial,
    shown_padding,
    static_shape,
)
from convfix.guard import windows as strided_windows
from convfix.ops import default_data_format


def inspect(call: Call, onednn: bool) -> list[Problem]:
    """Structural problems of ``call`` (empty list: nothing the guard objects to)."""
    x_shape = static_shape(call.input)
    f_shape = static_shape(call.filter)
    spatial = spatial_rank(call, f_shape, x_shape)
    if x_shape is None or spatial is None or spatial not in (1, 2, 3):
        return []  # unknown rank: TensorFlow validates at run time (see docs on graphs)
    bad_rank: Hazard = "abort" if onednn else "answered"
    wanted = spatial + 2
    rank = len(x_shape)
    layout = default_data_format(spatial) if call.channels_last() else call.format_name(spatial)
    if rank == wanted - 1:
        return [
            Problem(
                "missing_batch_dim",
                "batch_dim",
                bad_rank,
                f"{call.spec.name}: input has shape {x_shape} (rank {rank}), one short of "
                f"the rank {wanted} ({layout}) it needs",
                {"input_shape": x_shape},
            )
        ]
    if rank < wanted or (rank > wanted and not call.spec.extra_batch_dims):
        return [
            Problem(
                "bad_input_rank",
                "guard",
                bad_rank if rank < wanted else ("garbage" if onednn else "answered"),
                f"{call.spec.name}: input has shape {x_shape} (rank {rank}); it needs rank "
                f"{wanted} ({layout})",
                {"input_shape": x_shape},
            )
        ]
    strided_dilation = _strided_dilation(call, spatial, x_shape)
    if strided_dilation is not None:
        return [strided_dilation]
    if call.spec.kind == "transpose" or f_shape is None or len(f_shape) != wanted:
        return []  # TensorFlow checks filter ranks itself; transposes take output_shape
    empty_window = _dilated_past_input(call, spatial, x_shape, f_shape, onednn)
    if empty_window is not None:
        return [empty_window]
    return _fit_problems(call, x_shape, f_shape, spatial, onednn) or _window_problems(
        call, x_shape, f_shape, spatial, onednn
    )


def _window_problems(
    call: Call, x_shape: Shape, f_shape: Shape, spatial: int, onednn: bool
) -> list[Problem]:
    """Strided windows TF 2.21's kernels answer with wrong values (strided_windows.py)."""
    found = strided_windows.problem(call, x_shape, f_shape, spatial, onednn)
    return [found] if found is not None else []


def _dilated_past_input(
    call: Call, spatial: int, x_shape: Shape, f_shape: Shape, onednn: bool
) -> Problem | None:
    """tf.nn.conv3d with SAME padding and a dilated kernel longer than the input: some
    windows then hold no input at all, and TF 2.21's oneDNN Conv3D was measured to corrupt
    the heap there (glibc aborts the process, at once or later) when a stride is above 1.
    Refused wherever such a window can exist, strides or not (a sweep found no crash with
    strides 1, which is a sample, not a proof). tf.nn.convolution dilates another way and is
    safe; the Eigen Conv3D refuses dilations itself."""
    if not onednn or call.spec.kind != "conv" or call.spec.spatial != 3:
        return None
    if not isinstance(call.padding, str) or call.padding.upper() != "SAME":
        return None
    channels_last = call.channels_last()
    dilations = per_spatial(call.dilations, spatial, channels_last)
    batch_dims = len(x_shape) - spatial - 1
    sizes = x_shape[batch_dims : batch_dims + spatial] if channels_last else x_shape[-spatial:]
    if dilations is None or max(dilations) <= 1:
        return None
    kernel = effective_kernel(f_shape[:spatial], dilations)
    longer = [
        i
        for i, (n, k, d) in enumerate(zip(sizes, kernel, dilations))
        if d > 1 and n is not None and k is not None and k > n
    ]
    if not longer:
        return None
    return Problem(
        "dilated_kernel_past_input",
        "guard",
        "abort",
        f"{call.spec.name}: SAME padding with dilations {dilations} makes the kernel "
        f"{kernel} longer than the input's spatial size {sizes}, so some windows hold no "
        "input; TF 2.21's oneDNN Conv3D corrupts memory there. Use tf.nn.convolution (it "
        "dilates another way), VALID padding, or dilations 1",
        {"input_shape": x_shape, "filter_shape": f_shape, "dilations": dilations},
    )


def _strided_dilation(call: Call, spatial: int, x_shape: Shape) -> Problem | None:
    """depthwise_conv2d and separable_conv2d with strides > 1 *and* dilations > 1: TF 2.21
    only logs a warning, then computes a wrong result (measured: wrong values, and wrong
    shapes for SAME padding). tf.nn.convolution raises for the same combination."""
    if call.spec.kind not in ("depthwise", "separable"):
        return None
    channels_last = call.channels_last()
    strides = per_spatial(call.strides, spatial, channels_last)
    dilations = per_spatial(call.dilations, spatial, channels_last)
    if not strides or not dilations or max(strides) <= 1 or max(dilations) <= 1:
        return None
    return Problem(
        "strided_dilation",
        "guard",
        "garbage",
        f"{call.spec.name}: strides {strides} together with dilations {dilations}; TensorFlow "
        "supports one or the other here (use strides 1 with dilations, or dilations 1)",
        {"input_shape": x_shape, "strides": strides, "dilations": dilations},
    )


def _fit_problems(
    call: Call, x_shape: Shape, f_shape: Shape, spatial: int, onednn: bool
) -> list[Problem]:
    channels_last = call.channels_last()
    batch_dims = len(x_shape) - spatial - 1
    sizes = x_shape[batch_dims : batch_dims + spatial] if channels_last else x_shape[-spatial:]
    dilations = per_spatial(call.dilations, spatial, channels_last)
    padding = call.padding
    pads = explicit_pads(padding, spatial, channels_last)
    if dilations is not None and (pads is not None or _is_valid(padding)):
        kernel = effective_kernel(f_shape[:spatial], dilations)
        padded = [
            None if s is None else s + (lo + hi if pads else 0)
            for s, (lo, hi) in zip(sizes, pads or [(0, 0)] * spatial)
        ]
        too_small = [
            i
            for i, (s, k) in enumerate(zip(padded, kernel))
            if s is not None and k is not None and 0 < s < k
        ]
        if too_small:
            return [
                Problem(
                    "kernel_larger_than_input",
                    "padding",
                    "garbage" if onednn else "answered",
                    f"{call.spec.name}: input spatial size {sizes} is smaller than the "
                    f"{'dilated ' if any(d > 1 for d in dilations) else ''}kernel "
                    f"{kernel} with padding {padding!r}; each spatial size must be at least "
                    "the kernel's (or use padding 'SAME')",
                    {
                        "input_shape": x_shape,
                        "filter_shape": f_shape,
                        "padding": shown_padding(padding),
                    },
                )
            ]
    if onednn and any(d == 0 for d in x_shape):
        return [
            Problem(
                "empty_input",
                "guard",
                "garbage",
                f"{call.spec.name}: input has shape {x_shape}, which holds no elements",
                {"input_shape": x_shape},
            )
        ]
    return []


def _is_valid(padding: object) -> bool:
    return isinstance(padding, str) and padding.upper() == "VALID"
