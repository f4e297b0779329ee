"""Every "unsafe on this build" rule, written once: pure functions of a call and the build.

The build is an argument (a ``guard.build.Build``: the TensorFlow version, oneDNN on or
off, GPUs visible, and the bugs measured there, resolved once at patch time), never read
from the process here, so each rule can be tested for any build on any machine. A rule
returns the Problem it finds (its hazard on that build, the policy that can repair it, or
"guard") or None. Consulted by ``inspection`` (before dispatch) and
``graph_checks`` (inside tf.function); the fast checks of ``integrations.entry`` and
``integrations.express`` are cheaper predicates that clear only calls these rules clear
(a property test holds them to it), and ``plainly_safe`` is the pipeline's judgement when
the guard itself failed.

Measured on TF 2.21 (the README's table "What convfix does with each kind of call"):

- oneDNN (on by default on x86-64 CPUs with AVX-512 VNNI or BF16; TF_ENABLE_ONEDNN_OPTS
  overrides) aborts on a wrong input rank and answers an empty input, or a kernel larger
  than a VALID input, with a tensor of the wrong shape. Without oneDNN, TensorFlow raises
  its own errors for the same calls.
- depthwise and separable convolutions with strides and dilations both above 1 answer
  wrong values on every build; oneDNN's Conv3D corrupts the heap for a SAME dilated kernel
  longer than the input.
- Strided windows (``misanswered``), answered with wrong values, right shape, no error:

  ``negative_same_padding``: with SAME padding, a stride larger than the kernel can leave
  input positions past the last window, so TensorFlow's padding total is negative. The
  Conv3D kernel outside oneDNN (every dtype oneDNN does not take, and every dtype with
  oneDNN off) then centres the windows, starting ``-total // 2`` positions into the input
  where TensorFlow's definition starts at 0. Wrong whenever ``total <= -2``. Repair: crop
  each such dimension to the positions the windows read, ``(out - 1) * stride + kernel``:
  the total becomes 0 and every kernel answers the definition.

  ``single_window_one_channel``: oneDNN's convolutions (TF 2.21, oneDNN 3.7, measured on
  AVX-512, float32 and bfloat16) leave parts of the answer unwritten when each group has
  one input channel (a one-channel input; depthwise with a channel multiplier of 2 or
  more) and some dimension has a single output window that is strided or reaches into
  padding. The measured conditions are narrower and differ by dtype (float32: the last
  dimension collapsed by a stride, batch 2 or more; bfloat16 also a padded depth of 1);
  the rule covers the wider geometry, since convfix cannot tell which kernel a CPU will
  pick. Explicit padding lists are no cure (they run on the same kernel). Repair: pad the
  input by the call's own padding, cut each such dimension to its one window with stride
  1, and run VALID: the same windows, the same products, on a geometry those kernels get
  right (measured on every wrong case found).

  Both repairs (policies.padding) are exact: the repaired call reads the same input
  positions with the same kernel taps as TensorFlow's definition of the original.
"""

from __future__ import annotations

from typing import Any

from convfix.call import Call, Hazard, Problem
from convfix.geometry import (
    Shape,
    Window,
    crop_sizes,
    effective_kernel,
    explicit_pads,
    padding_name,
    per_spatial,
    shown_padding,
    single_windows,
    spatial_sizes,
    static_shape,
    windows_of,
)
from convfix.guard.build import Build
from convfix.ops import default_data_format


def input_rank(
    call: Call, x_shape: Shape, f_shape: Shape | None, spatial: int, build: Build
) -> Problem | None:
    """An input one rank short, or of any other rank the op does not take: oneDNN aborts on
    too few dims and answers too many wrongly. One rank short is read the ways TensorFlow
    would accept (``rank_short_readings``): as one example missing its batch (batch_dim's
    to repair; ambiguous with another reading: refused), as a batch missing its channel
    axis (a guess about the data's layout: the opt-in layout policy's), or not at all."""
    onednn = build.has("rank_aborts")
    bad_rank: Hazard = "abort" if onednn else "answered"
    wanted = spatial + 2
    rank = len(x_shape)
    layout = default_data_format(spatial) if call.channels_last() else call.format_name(spatial)
    short = (
        f"{call.spec.name}: input has shape {x_shape} (rank {rank}), one short of the rank "
        f"{wanted} ({layout}) it needs"
    )
    if rank == wanted - 1:
        readings = rank_short_readings(call, x_shape, f_shape)
        before: dict[str, object] = {"input_shape": x_shape}
        if readings != ["batch"]:  # the plain case keeps its event as it always was
            before["readings"] = readings
        channels = x_shape[-1] if call.channels_last() else x_shape[0]
        if readings == ["channel"]:
            return Problem(
                "missing_channel_dim",
                "layout",
                bad_rank,
                f"{short}. With filter {f_shape} it reads only as a batch of one-channel "
                f"examples missing their channel axis (as one example missing its batch, "
                f"its {channels} channels do not fit the filter): pass input[..., None]",
                before,
            )
        if not readings:
            return Problem(
                "bad_input_rank",
                "guard",
                bad_rank,
                f"{short}, and no reading of it fits filter {f_shape}: as one example "
                f"missing its batch, its {channels} channels do not fit the filter's "
                f"{f_shape[-2] if f_shape else '?'} input channels (and output channels)",
                before,
            )
        return Problem("missing_batch_dim", "batch_dim", bad_rank, short, before)
    if rank < wanted or (rank > wanted and not call.spec.extra_batch_dims):
        return Problem(
            "bad_input_rank",
            "guard",
            bad_rank if rank < wanted else ("garbage" if onednn else "answered"),
            f"{call.spec.name}: input has shape {x_shape} (rank {rank}); it needs rank "
            f"{wanted} ({layout})",
            {"input_shape": x_shape},
        )
    return None


def rank_short_readings(call: Call, x_shape: Shape, f_shape: Shape | None) -> list[str]:
    """How an input one rank short can be read so that TensorFlow takes every constraint
    (input channels a multiple of the filter's, output channels a multiple of the groups):

    - "batch": one example missing its batch dimension;
    - "channel": a batch of one-channel examples missing their channel axis (channels-last
      calls only; a last dimension of 1 is a channel, never a one-pixel-wide image);
    - "batch_channels_first": one channels-first example of a channels-last call, missing
      its batch (the layout policy's to transpose once the batch is added).

    Where the filter's channels are not known, the batch reading is assumed (as before
    convfix read channels at all); a transpose's output_shape names its batch: "batch"."""
    if call.spec.kind == "transpose" or f_shape is None or len(f_shape) < 3:
        return ["batch"]
    f_in, f_out = f_shape[-2], f_shape[-1]
    last = call.channels_last()
    channels = x_shape[-1] if last else x_shape[0]
    if f_in is None or f_out is None or channels is None:
        return ["batch"]
    grouped = call.spec.kind == "conv"

    def takes(c: int | None) -> bool:
        if c is None or c <= 0 or f_in <= 0:
            return c is None
        if not grouped:  # depthwise, separable: the filter names the channels exactly
            return c == f_in
        return c % f_in == 0 and f_out % (c // f_in) == 0

    found = []
    if takes(channels):
        found.append("batch")
    if last and f_in == 1 and channels > 1:  # (channels-last: channels is x_shape[-1])
        found.append("channel")
    if not found and grouped and last and takes(x_shape[0]):
        found.append("batch_channels_first")
    return found


def strided_dilation(call: Call, spatial: int, x_shape: Shape, build: Build) -> Problem | None:
    """depthwise_conv2d and separable_conv2d with strides > 1 *and* dilations > 1: TF 2.21
    only logs a warning, then computes a wrong result (measured: wrong values, and wrong
    shapes for SAME padding). tf.nn.convolution raises for the same combination."""
    if call.spec.kind not in ("depthwise", "separable") or not build.has("strided_dilation_wrong"):
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


def dilated_kernel_past_input(
    call: Call, spatial: int, x_shape: Shape, f_shape: Shape, build: Build
) -> Problem | None:
    """tf.nn.conv3d with SAME padding and a dilated kernel longer than the input: some
    windows then hold no input at all, and TF 2.21's oneDNN Conv3D was measured to corrupt
    the heap there (glibc aborts the process, at once or later) when a stride is above 1.
    Refused wherever such a window can exist, strides or not (a sweep found no crash with
    strides 1, which is a sample, not a proof). tf.nn.convolution dilates another way and is
    safe; the Eigen Conv3D refuses dilations itself."""
    if not build.has("conv3d_dilated_heap_corruption"):
        return None
    if call.spec.kind != "conv" or call.spec.spatial != 3:
        return None
    if padding_name(call.padding) != "SAME":
        return None
    channels_last = call.channels_last()
    dilations = per_spatial(call.dilations, spatial, channels_last)
    sizes = spatial_sizes(x_shape, spatial, channels_last)
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


def kernel_larger_than_input(
    call: Call, x_shape: Shape, f_shape: Shape, spatial: int, build: Build
) -> Problem | None:
    """VALID (or explicit) padding with a dilated kernel larger than the padded input in
    some dimension: oneDNN answers a wrongly shaped tensor; without it TensorFlow answers
    by itself (an empty result or its own error)."""
    channels_last = call.channels_last()
    sizes = spatial_sizes(x_shape, spatial, channels_last)
    dilations = per_spatial(call.dilations, spatial, channels_last)
    padding = call.padding
    pads = explicit_pads(padding, spatial, channels_last)
    if dilations is None or not (pads is not None or padding_name(padding) == "VALID"):
        return None
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
    if not too_small:
        return None
    return Problem(
        "kernel_larger_than_input",
        "padding",
        "garbage" if build.has("kernel_past_valid_input_misshaped") else "answered",
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


def empty_input(call: Call, x_shape: Shape, build: Build) -> Problem | None:
    """An input with a zero-sized dimension: oneDNN answers with the input's channel count
    where the output's belongs (the guard answers it instead: guard.answers)."""
    if not empty_input_unsafe(build) or not any(d == 0 for d in x_shape):
        return None
    return Problem(
        "empty_input",
        "guard",
        "garbage",
        f"{call.spec.name}: input has shape {x_shape}, which holds no elements",
        {"input_shape": x_shape},
    )


def empty_transpose_input(call: Call, x_shape: Shape, spatial: int, build: Build) -> Problem | None:
    """conv3d_transpose of an input with a zero-sized dimension: TF 2.21's Conv3D backprop
    kernel crashes the process (SIGSEGV; every dtype without oneDNN, float64 with it:
    measured by the hazard sweep). Its answer is known without dispatching: zeros of
    ``output_shape`` (the guard answers it, guard.answers)."""
    if call.spec.kind != "transpose" or spatial != 3 or not any(d == 0 for d in x_shape):
        return None
    if not build.has("empty_conv3d_transpose_crash"):
        return None
    return Problem(
        "empty_input",
        "guard",
        "abort",
        f"{call.spec.name}: input has shape {x_shape}, which holds no elements; TF 2.21's "
        "3-D transposed convolution crashes the process on it",
        {"input_shape": x_shape},
    )


def empty_input_unsafe(build: Build) -> bool:
    """Whether an empty input (or one whose sizes are known only at run time, which may be
    empty then, or smaller than a VALID kernel) is answered wrongly on this build."""
    return build.has("empty_input_misshaped")


def windows(call: Call, x_shape: Shape, f_shape: Shape, spatial: int) -> list[Window] | None:
    """The call's windows per spatial dimension, or None where something is not known."""
    last = call.channels_last()
    return windows_of(
        spatial_sizes(x_shape, spatial, last),
        f_shape[:spatial],
        call.strides,
        call.dilations,
        call.padding,
        spatial,
        last,
    )


def misanswered(
    kind: str,
    spatial: int,
    padding: Any,
    channels: int | None,
    multiplier: int | None,
    dims: list[Window],
    build: Build,
    dtype: str | None = None,
) -> str | None:
    """The reason this build would answer these windows wrongly (or crash on them), or None
    (module docstring). ``dtype``: the input's dtype name (None: unknown, judged as any
    dtype but bfloat16)."""
    shifted = kind == "conv" and spatial == 3 and padding == "SAME"
    if (
        shifted
        and build.has("conv3d_shifted_same_windows")
        and crop_sizes(dims) != [w.size for w in dims]
    ):
        return "negative_same_padding"
    if kind not in ("conv", "depthwise", "separable"):
        return None
    if (
        not isinstance(padding, str)
        and build.has("padding_only_window_crash")
        and any(reads_only_padding(w) for w in dims)
    ):
        return "padding_only_window"
    # One input channel per group: a one-channel input to a plain convolution, or a
    # depthwise one with a channel multiplier of 2 or more (measured: 1 is right).
    one_per_group = (channels == 1) if kind == "conv" else (multiplier or 0) >= 2
    if one_per_group and build.has("single_window_one_channel"):
        cut = single_windows(dims)
        # (depthwise: measured right where a dimension not cut has a stride)
        other_strides = kind == "conv" or all(w.stride == 1 for w, c in zip(dims, cut) if not c)
        if any(cut) and other_strides:
            return "single_window_one_channel"
    if (
        dtype == "bfloat16"
        and kind != "depthwise"
        and build.has("single_window_bfloat16")
        and _last_window_strided_alone(dims)
    ):
        return "single_window_bfloat16"
    return None


def reads_only_padding(w: Window) -> bool:
    """Does some window of this dimension lie wholly in its explicit padding? oneDNN on
    TF 2.16-2.19 crashes the process (SIGSEGV) on some such calls: measured on the last
    spatial dimension of conv2d and depthwise_conv2d, both layouts; the rule takes every
    dimension. Judged by the dilated window's span (every crash measured was one); the
    first or the last window is the one to lie in padding if any does."""
    lo = w.pads[0]
    first_end = w.kernel - 1  # the first window spans [0, kernel - 1]
    last_start = (w.out - 1) * w.stride  # the last spans [last_start, ... + kernel - 1]
    return w.out > 0 and (first_end < lo or last_start >= lo + w.size)


def _last_window_strided_alone(dims: list[Window]) -> bool:
    """oneDNN's bfloat16 kernels, any channel count (TF 2.21, measured by the hazard sweep
    and a bfloat16 sweep): the last spatial dimension has a single output window, of a
    kernel of 2 or more, with a stride of 2 or more, while another has several outputs."""
    if len(dims) < 2:
        return False
    last = dims[-1]
    return (
        last.out == 1
        and last.kernel >= 2
        and last.stride >= 2
        and any(w.out > 1 for w in dims[:-1])
    )


def misanswered_windows(
    call: Call, x_shape: Shape, f_shape: Shape, spatial: int, build: Build
) -> Problem | None:
    """A Problem for windows this build would answer wrongly or crash on (``misanswered``)."""
    dims = windows(call, x_shape, f_shape, spatial)
    if dims is None:
        return None
    channels = x_shape[-1] if call.channels_last() else x_shape[-spatial - 1]
    reason = misanswered(
        call.spec.kind, spatial, call.padding, channels, f_shape[-1], dims, build,
        dtype_name(call.input),
    )  # fmt: skip
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
    elif reason == "padding_only_window":
        message = (
            f"explicit padding {shown_padding(call.padding)} on input spatial size {sizes} "
            f"with strides {strides}: a window lies wholly in the padding; oneDNN on "
            "TF 2.16-2.19 crashes the process there (SIGSEGV). Pad the input with tf.pad and "
            "run VALID"
        )
    elif reason == "single_window_bfloat16":
        message = (
            f"bfloat16 input, spatial size {sizes}, strides {strides}: the last dimension "
            "has a single output window with a stride, the others several; TF 2.21's oneDNN "
            "bfloat16 kernels answer wrong values there. Run that dimension as its one window "
            "(padded explicitly, VALID, stride 1)"
        )
    else:
        message = (
            f"one input channel per group, spatial size {sizes}, strides {strides}: a "
            "dimension with a single output window that is strided or reaches into padding; "
            "TF 2.21's oneDNN kernels leave parts of such answers unwritten. Run that "
            "dimension as its one window (padded explicitly, VALID, stride 1)"
        )
    before = {"input_shape": x_shape, "strides": strides, "padding": shown_padding(call.padding)}
    hazard: Hazard = "abort" if reason == "padding_only_window" else "garbage"
    return Problem(reason, "padding", hazard, f"{call.spec.name}: {message}", before)


def dtype_name(value: Any) -> str | None:
    """A tensor's dtype as its name ("bfloat16"), read from its attribute; None if none."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return None
    name = getattr(dtype, "name", dtype)
    return name if isinstance(name, str) else None


def needs_run_time_check(call: Call, build: Build) -> bool:
    """A traced call whose input sizes are partly unknown: the empty-input and kernel-fit
    rules can only be decided when the graph runs (guard.graph_checks adds the check)."""
    if not empty_input_unsafe(build) or not call.graph or call.spec.kind == "transpose":
        return False
    x = static_shape(call.input)
    return x is not None and None in x


def plainly_safe(call: Call, build: Build) -> bool:
    """Safety judged without the other rules (the guard may be what failed), and more
    narrowly than they judge it, so that no rule could have objected: strides and dilations
    of 1 (no strided window, no strided dilation, no dilated kernel past the input), and
    no empty dimension (a 3-D transpose crashes on one), and with oneDNN also the exact
    rank, no unknown dimension, and every spatial size at least the kernel's (no single
    window reaching into padding). Without oneDNN a wrong rank or a kernel that does not
    fit is TensorFlow's own error, not a wrong answer. Where the build crashes on explicit
    padding (TF 2.16-2.19) or answers impossible transpose shapes, neither is judged safe."""
    x, f = static_shape(call.input), static_shape(call.filter)
    if f is None or len(f) < 3:
        return False
    if not isinstance(call.padding, str) and build.has("padding_only_window_crash"):
        return False
    if call.spec.kind == "transpose" and build.has("impossible_transpose_output_answered"):
        return False
    spatial, last = len(f) - 2, call.channels_last()
    ones = [1] * spatial
    if per_spatial(call.strides, spatial, last) != ones:
        return False
    if per_spatial(call.dilations, spatial, last) != ones:
        return False
    if x is not None and 0 in x:
        return False  # an empty 3-D transpose crashes every build
    if not build.onednn:
        return True
    if x is None or len(x) != len(f) or None in x or None in f:
        return False
    return all(s >= k for s, k in zip(spatial_sizes(x, spatial, last), f[:spatial]))  # type: ignore[operator]


def channels_first_on_cpu(call: Call, x_shape: Shape, spatial: int, build: Build) -> Problem | None:
    """A channels-first call (data_format "NC...") that will run on TensorFlow's own CPU
    kernels, which take channels-last only: without oneDNN every channels-first op raises
    (UnimplementedError, or InvalidArgumentError for conv3d and the transposes). Decided
    from what is known when the call is made: it runs on a CPU where no GPU is visible or
    its device scope is a CPU; never where XLA compiles it (XLA has its own kernels).
    TensorFlow answers the call itself (its error), so the hazard is "answered"; the
    data_format policy repairs it exactly (transpose, run channels-last, transpose back)."""
    fmt = call.data_format
    if fmt is None or not fmt.startswith("NC"):
        return None
    if not build.has("no_channels_first_cpu_kernels") or call.placement == "xla":
        return None
    if build.gpu and call.placement != "cpu":
        return None  # placed on the GPU, which has channels-first kernels
    last = default_data_format(spatial)
    return Problem(
        "channels_first_on_cpu",
        "data_format",
        "answered",
        f"{call.spec.name}: data_format {fmt!r} on a CPU, where TensorFlow without oneDNN "
        f"has only channels-last kernels; transpose the input to {last}, run, and "
        "transpose the result back",
        {"data_format": fmt, "input_shape": x_shape},
    )
