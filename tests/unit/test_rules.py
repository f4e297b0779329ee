"""convfix.guard.rules: each "unsafe on this build" rule, on both builds, without TensorFlow.

Every rule is a pure function of a bound call and ``onednn``; the calls here are bound from
stand-in tensors by stand-ins with TensorFlow's signatures (tests/unit/standins.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convfix.call import Call, Problem
from convfix.geometry import Shape, static_shape, windows_of
from convfix.guard import rules
from convfix.guard.inspection import inspect
from tests.unit.builds import build
from tests.unit.standins import Tensor, bind, tensor, unknown_rank
from tests.unit.test_inspection import calls

ONEDNN = pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "no_onednn"])


def by_build(with_onednn: str, without: str) -> pytest.MarkDecorator:
    """Parametrize a test over both builds, with the hazard expected on each."""
    return pytest.mark.parametrize(
        ("onednn", "hazard"), [(True, with_onednn), (False, without)], ids=["onednn", "no_onednn"]
    )


def shapes(call: Call) -> tuple[Shape, Shape]:
    x, f = static_shape(call.input), static_shape(call.filter)
    assert x is not None and f is not None
    return x, f


def verdict(problem: Problem | None) -> tuple[str, str, str] | None:
    """What a rule found: (reason, owner, hazard), or None."""
    return None if problem is None else (problem.reason, problem.owner, problem.hazard)


# --- input_rank --------------------------------------------------------------------------


@by_build("abort", "answered")
def test_input_one_rank_short_is_a_missing_batch_dim(onednn: bool, hazard: str) -> None:
    # given a conv2d input with no batch dim
    call = bind("conv2d", tensor(5, 5, 3), tensor(3, 3, 3, 4), 1, "SAME")
    # when the rank rule reads it
    problem = rules.input_rank(call, [5, 5, 3], static_shape(call.filter), 2, build(onednn))
    # then batch_dim owns it; oneDNN aborts on it, TensorFlow otherwise refuses it itself
    assert verdict(problem) == ("missing_batch_dim", "batch_dim", hazard)
    assert problem is not None and problem.before == {"input_shape": [5, 5, 3]}


@by_build("abort", "answered")
def test_input_two_ranks_short_is_a_bad_rank_for_the_guard(onednn: bool, hazard: str) -> None:
    call = bind("conv2d", tensor(5, 3), tensor(3, 3, 3, 4), 1, "SAME")
    problem = rules.input_rank(call, [5, 3], static_shape(call.filter), 2, build(onednn))
    assert verdict(problem) == ("bad_input_rank", "guard", hazard)


@by_build("garbage", "answered")
def test_input_rank_above_an_op_without_batch_folding_is_bad(onednn: bool, hazard: str) -> None:
    # given depthwise_conv2d (which does not fold leading batch dims) on a rank-5 input
    call = bind("depthwise_conv2d", tensor(2, 1, 5, 5, 3), tensor(3, 3, 3, 2), [1] * 4, "SAME")
    # then oneDNN answers it wrongly, TensorFlow otherwise refuses it itself
    problem = rules.input_rank(call, [2, 1, 5, 5, 3], static_shape(call.filter), 2, build(onednn))
    assert verdict(problem) == ("bad_input_rank", "guard", hazard)


@ONEDNN
def test_extra_batch_dims_are_fine_for_ops_that_fold_them(onednn: bool) -> None:
    # given conv2d, which folds leading batch dims itself, on a rank-5 input
    call = bind("conv2d", tensor(2, 1, 5, 5, 3), tensor(3, 3, 3, 4), 1, "SAME")
    assert (
        rules.input_rank(call, [2, 1, 5, 5, 3], static_shape(call.filter), 2, build(onednn)) is None
    )


@ONEDNN
def test_extra_batch_dims_are_bad_for_compat_v1_conv3d(onednn: bool) -> None:
    # given compat.v1.conv3d, whose row does not fold batch dims, on a rank-6 input
    x = tensor(2, 1, 4, 4, 4, 3)
    call = bind("conv3d", x, tensor(3, 3, 3, 3, 4), [1] * 5, "SAME", v1=True)
    problem = rules.input_rank(
        call, [2, 1, 4, 4, 4, 3], static_shape(call.filter), 3, build(onednn)
    )
    assert problem is not None and problem.reason == "bad_input_rank"


@ONEDNN
def test_input_of_the_exact_rank_is_fine(onednn: bool) -> None:
    call = bind("conv1d", tensor(1, 8, 3), tensor(3, 3, 4), 1, "SAME")
    assert rules.input_rank(call, [1, 8, 3], static_shape(call.filter), 1, build(onednn)) is None


def test_rank_message_names_the_channels_first_layout_given() -> None:
    # given a channels-first call one rank short
    call = bind("conv2d", tensor(3, 5, 5), tensor(3, 3, 3, 4), 1, "SAME", data_format="NCHW")
    problem = rules.input_rank(call, [3, 5, 5], static_shape(call.filter), 2, build(True))
    # then the message names the rank and layout it needs
    assert problem is not None
    assert "rank 4 (NCHW)" in problem.message


def test_rank_message_names_tensorflows_layout_for_channels_last() -> None:
    call = bind("convolution", tensor(8, 3), tensor(3, 3, 4))
    problem = rules.input_rank(call, [8, 3], static_shape(call.filter), 1, build(True))
    assert problem is not None
    assert "convolution: input has shape [8, 3]" in problem.message
    assert "rank 3 (NWC)" in problem.message


# --- strided_dilation (every build) ------------------------------------------------------


@pytest.mark.parametrize("name", ["depthwise_conv2d", "separable_conv2d"])
def test_depthwise_strides_with_dilations_are_garbage_for_the_guard(name: str) -> None:
    # given a depthwise or separable call with strides and dilations above 1
    x = tensor(1, 9, 9, 3)
    operands = (tensor(3, 3, 3, 2), tensor(1, 1, 6, 4))[: 2 if name == "separable_conv2d" else 1]
    call = bind(name, x, *operands, [1, 2, 2, 1], "SAME", dilations=[2, 2])
    # when the rule reads it (it needs no build: TF answers wrong values on every one)
    problem = rules.strided_dilation(call, 2, [1, 9, 9, 3], build(True))
    # then the guard owns it, with the per-spatial values
    assert verdict(problem) == ("strided_dilation", "guard", "garbage")
    assert problem is not None
    assert problem.before == {"input_shape": [1, 9, 9, 3], "strides": [2, 2], "dilations": [2, 2]}


def test_compat_v1_rate_counts_as_dilation() -> None:
    # given compat.v1 depthwise_conv2d with rate= (its name for dilations)
    x, f = tensor(1, 9, 9, 3), tensor(3, 3, 3, 2)
    call = bind("depthwise_conv2d", x, f, [1, 2, 2, 1], "SAME", rate=[2, 2], v1=True)
    problem = rules.strided_dilation(call, 2, [1, 9, 9, 3], build(True))
    assert problem is not None and problem.before["dilations"] == [2, 2]


def test_channels_first_strides_are_read_from_the_spatial_dims() -> None:
    # given NCHW strides [1, 1, 2, 2] (the spatial ones are the last two)
    x, f = tensor(1, 3, 9, 9), tensor(3, 3, 3, 2)
    call = bind("depthwise_conv2d", x, f, [1, 1, 2, 2], "SAME", "NCHW", [2, 2])
    problem = rules.strided_dilation(call, 2, [1, 3, 9, 9], build(True))
    assert problem is not None and problem.before["strides"] == [2, 2]


@pytest.mark.parametrize(
    ("strides", "dilations"),
    [([1, 2, 2, 1], None), ([1, 1, 1, 1], [2, 2]), ([1, 2, 2, 1], [1, 1])],
    ids=["strides_only", "dilations_only", "unit_dilations"],
)
def test_strides_or_dilations_alone_are_fine(strides: list[int], dilations: Any) -> None:
    call = bind("depthwise_conv2d", tensor(1, 9, 9, 3), tensor(3, 3, 3, 2), strides, "SAME")
    call = call.replace(dilations=dilations)
    assert rules.strided_dilation(call, 2, [1, 9, 9, 3], build(True)) is None


def test_plain_convolutions_with_strides_and_dilations_are_not_this_rules() -> None:
    # given conv2d with both (TensorFlow raises its own error for it)
    call = bind("conv2d", tensor(1, 9, 9, 3), tensor(3, 3, 3, 4), 2, "SAME", dilations=2)
    assert rules.strided_dilation(call, 2, [1, 9, 9, 3], build(True)) is None


def test_unreadable_strides_leave_the_rule_silent() -> None:
    call = bind("depthwise_conv2d", tensor(1, 9, 9, 3), tensor(3, 3, 3, 2), "2", "SAME")
    assert rules.strided_dilation(call.replace(dilations=2), 2, [1, 9, 9, 3], build(True)) is None


# --- dilated_kernel_past_input -----------------------------------------------------------


def conv3d_dilated(padding: str = "SAME", dilations: Any = 2, v1: bool = False) -> Call:
    """conv3d, kernel 3 dilated by 2 (reach 5) on a 4x4x4 input."""
    x, f = tensor(1, 4, 4, 4, 1), tensor(3, 3, 3, 1, 2)
    return bind("conv3d", x, f, [1, 2, 2, 2, 1], padding, dilations=dilations, v1=v1)


@ONEDNN
def test_same_dilated_kernel_longer_than_a_conv3d_input_aborts_on_onednn(onednn: bool) -> None:
    # given conv3d, SAME, a dilated kernel (5) longer than the input (4)
    call = conv3d_dilated()
    # when the rule reads it on either build
    problem = rules.dilated_kernel_past_input(call, 3, *shapes(call), build(onednn))
    # then oneDNN's Conv3D corrupts the heap: the guard refuses; elsewhere nothing to do
    expected = ("dilated_kernel_past_input", "guard", "abort") if onednn else None
    assert verdict(problem) == expected


def test_compat_v1_conv3d_runs_the_same_kernel() -> None:
    call = conv3d_dilated(v1=True)
    problem = rules.dilated_kernel_past_input(call, 3, *shapes(call), build(True))
    assert verdict(problem) == ("dilated_kernel_past_input", "guard", "abort")


def test_lower_case_same_is_read_as_same() -> None:
    call = conv3d_dilated(padding="same")
    assert rules.dilated_kernel_past_input(call, 3, *shapes(call), build(True)) is not None


def test_valid_padding_is_not_this_rules() -> None:
    call = conv3d_dilated(padding="VALID")
    assert rules.dilated_kernel_past_input(call, 3, *shapes(call), build(True)) is None


def test_undilated_kernel_longer_than_the_input_is_not_this_rules() -> None:
    # given a plain kernel 5 on input 4 with SAME padding
    call = bind("conv3d", tensor(1, 4, 4, 4, 1), tensor(5, 5, 5, 1, 2), [1] * 5, "SAME")
    assert rules.dilated_kernel_past_input(call, 3, *shapes(call), build(True)) is None


def test_dilated_kernel_that_fits_is_fine() -> None:
    # given reach 5 on a 5x5x5 input
    call = bind("conv3d", tensor(1, 5, 5, 5, 1), tensor(3, 3, 3, 1, 2), [1] * 5, "SAME")
    call = call.replace(dilations=2)
    assert rules.dilated_kernel_past_input(call, 3, *shapes(call), build(True)) is None


def test_only_dilated_dimensions_count() -> None:
    # given a kernel longer than the input only in the undilated depth dimension
    x, f = tensor(1, 2, 9, 9, 1), tensor(3, 3, 3, 1, 2)
    call = bind("conv3d", x, f, [1] * 5, "SAME", dilations=[1, 1, 2, 2, 1])
    assert rules.dilated_kernel_past_input(call, 3, *shapes(call), build(True)) is None


@pytest.mark.parametrize(
    ("name", "x", "f"),
    [
        ("convolution", tensor(1, 4, 4, 4, 1), tensor(3, 3, 3, 1, 2)),
        ("conv2d", tensor(1, 4, 4, 1), tensor(3, 3, 1, 2)),
    ],
)
def test_ops_other_than_conv3d_are_not_this_rules(name: str, x: Any, f: Any) -> None:
    # given tf.nn.convolution (dilates another way) or a 2-d op, SAME and dilated past input
    call = bind(name, x, f, padding="SAME", dilations=2, strides=1)
    spatial = len(shapes(call)[1]) - 2
    assert rules.dilated_kernel_past_input(call, spatial, *shapes(call), build(True)) is None


# --- kernel_larger_than_input ------------------------------------------------------------


@by_build("garbage", "answered")
def test_valid_kernel_larger_than_the_input_is_for_the_padding_policy(
    onednn: bool, hazard: str
) -> None:
    # given a 3x3 kernel, VALID, on a 2x2 input
    call = bind("conv2d", tensor(1, 2, 2, 3), tensor(3, 3, 3, 4), 1, "VALID")
    # when the rule reads it
    problem = rules.kernel_larger_than_input(call, *shapes(call), 2, build(onednn))
    # then the padding policy owns it; oneDNN answers the wrong shape, TF otherwise answers
    assert verdict(problem) == ("kernel_larger_than_input", "padding", hazard)
    assert problem is not None
    assert problem.before == {
        "input_shape": [1, 2, 2, 3],
        "filter_shape": [3, 3, 3, 4],
        "padding": "VALID",
    }


@ONEDNN
def test_a_dilated_kernel_is_measured_dilated(onednn: bool) -> None:
    # given kernel 2 dilated by 3 (reach 4) on a 3x3 input
    call = bind("conv2d", tensor(1, 3, 3, 1), tensor(2, 2, 1, 1), 1, "VALID", dilations=3)
    problem = rules.kernel_larger_than_input(call, *shapes(call), 2, build(onednn))
    assert problem is not None
    assert "dilated kernel [4, 4]" in problem.message


@by_build("garbage", "answered")
def test_explicit_pads_too_small_to_fit_the_kernel(onednn: bool, hazard: str) -> None:
    # given a 5x5 kernel on 2x2 input padded by one each side (4x4)
    padding = [[0, 0], [1, 1], [1, 1], [0, 0]]
    call = bind("conv2d", tensor(1, 2, 2, 1), tensor(5, 5, 1, 1), 1, padding)
    problem = rules.kernel_larger_than_input(call, *shapes(call), 2, build(onednn))
    assert verdict(problem) == ("kernel_larger_than_input", "padding", hazard)
    assert problem is not None and problem.before["padding"] == str(padding)


@ONEDNN
def test_explicit_pads_that_make_the_kernel_fit_are_fine(onednn: bool) -> None:
    padding = [[0, 0], [1, 1], [1, 1], [0, 0]]
    call = bind("conv2d", tensor(1, 2, 2, 1), tensor(3, 3, 1, 1), 1, padding)
    assert rules.kernel_larger_than_input(call, *shapes(call), 2, build(onednn)) is None


@ONEDNN
def test_channels_first_sizes_are_the_trailing_dims(onednn: bool) -> None:
    # given NCHW input [1, 8, 2, 2]: spatial 2x2, 8 channels
    call = bind("conv2d", tensor(1, 8, 2, 2), tensor(3, 3, 8, 1), 1, "VALID", "NCHW")
    assert rules.kernel_larger_than_input(call, *shapes(call), 2, build(onednn)) is not None


@ONEDNN
@pytest.mark.parametrize(
    ("x", "padding"),
    [
        pytest.param(tensor(1, 2, 2, 1), "SAME", id="same_padding"),
        pytest.param(tensor(1, 3, 3, 1), "VALID", id="kernel_equal_to_input"),
        pytest.param(tensor(1, 0, 3, 1), "VALID", id="empty_dim_left_to_empty_input"),
        pytest.param(tensor(1, None, None, 1), "VALID", id="unknown_sizes"),
    ],
)
def test_kernel_that_fits_or_cannot_be_judged_is_fine(onednn: bool, x: Any, padding: str) -> None:
    call = bind("conv2d", x, tensor(3, 3, 1, 1), 1, padding)
    assert rules.kernel_larger_than_input(call, *shapes(call), 2, build(onednn)) is None


def test_lower_case_valid_is_read_as_valid() -> None:
    call = bind("conv2d", tensor(1, 2, 2, 3), tensor(3, 3, 3, 4), 1, "valid")
    assert rules.kernel_larger_than_input(call, *shapes(call), 2, build(True)) is not None


# --- empty_input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x",
    [tensor(0, 5, 5, 3), tensor(1, 5, 0, 3), tensor(1, 5, 5, 0)],
    ids=["batch", "width", "channels"],
)
@ONEDNN
def test_empty_input_is_answered_by_the_guard_on_onednn(onednn: bool, x: Any) -> None:
    # given an input with a zero-sized dimension
    call = bind("conv2d", x, tensor(3, 3, 3, 4), 1, "SAME")
    # when the rule reads it
    problem = rules.empty_input(call, shapes(call)[0], build(onednn))
    # then with oneDNN the guard answers it (oneDNN answers the wrong channel count)
    assert verdict(problem) == (("empty_input", "guard", "garbage") if onednn else None)


@ONEDNN
def test_input_with_elements_is_not_empty(onednn: bool) -> None:
    call = bind("conv2d", tensor(1, 1, 1, 1), tensor(3, 3, 1, 4), 1, "SAME")
    assert rules.empty_input(call, [1, 1, 1, 1], build(onednn)) is None


@ONEDNN
def test_unknown_sizes_are_not_empty_before_run_time(onednn: bool) -> None:
    call = bind("conv2d", tensor(None, 5, 5, 3), tensor(3, 3, 3, 4), 1, "SAME")
    assert rules.empty_input(call, [None, 5, 5, 3], build(onednn)) is None


def test_empty_inputs_are_unsafe_only_on_onednn() -> None:
    assert rules.empty_input_unsafe(build(True))
    assert not rules.empty_input_unsafe(build(False))


# --- windows / misanswered ---------------------------------------------------------------


def test_windows_of_a_call_read_its_layout_strides_and_padding() -> None:
    # given a channels-first call with per-dimension strides
    call = bind("conv2d", tensor(1, 2, 7, 5), tensor(3, 1, 2, 4), [1, 1, 2, 1], "VALID", "NCHW")
    # then its windows are those of its spatial dims
    dims = rules.windows(call, *shapes(call), 2)
    assert dims == windows_of([7, 5], [3, 1], [2, 1], None, "VALID", 2, False)
    assert [w.out for w in dims or []] == [3, 5]


def line(size: int, kernel: int, stride: int, padding: Any = "SAME") -> list[Any]:
    """The windows of one spatial dimension, with two trivial ones to make it 3-d."""
    dims = windows_of([size, 1, 1], [kernel, 1, 1], [stride, 1, 1], 1, padding, 3, True)
    assert dims is not None
    return dims


@ONEDNN
def test_same_windows_shifted_two_or_more_are_negative_same_padding(onednn: bool) -> None:
    # given conv3d SAME, size 7, kernel 1, stride 4: padding total -2
    dims = line(7, 1, 4)
    # then either build answers wrong values (outside oneDNN's dtypes on a oneDNN build)
    found = rules.misanswered("conv", 3, "SAME", 8, 4, dims, build(onednn))
    assert found == "negative_same_padding"


@ONEDNN
def test_same_padding_total_of_minus_one_shifts_nothing(onednn: bool) -> None:
    assert rules.misanswered("conv", 3, "SAME", 8, 4, line(6, 1, 4), build(onednn)) is None


@ONEDNN
@pytest.mark.parametrize(
    ("kind", "spatial", "padding"),
    [("conv", 2, "SAME"), ("conv", 3, "VALID"), ("depthwise", 3, "SAME"), ("transpose", 3, "SAME")],
    ids=["2d", "valid", "depthwise", "transpose"],
)
def test_negative_same_padding_is_conv3d_same_only(
    onednn: bool, kind: str, spatial: int, padding: str
) -> None:
    # given geometry that would shift conv3d's SAME windows, on another op or padding
    found = rules.misanswered(kind, spatial, padding, 8, 1, line(7, 1, 4), build(onednn))
    assert found is None


@ONEDNN
def test_one_channel_strided_single_window_is_misanswered_on_onednn(onednn: bool) -> None:
    # given a one-channel input, size 3, kernel 3, stride 2, VALID: one strided window
    dims = line(3, 3, 2, "VALID")
    # then oneDNN leaves parts of the answer unwritten; the other build is right
    found = rules.misanswered("conv", 3, "VALID", 1, 4, dims, build(onednn))
    assert found == ("single_window_one_channel" if onednn else None)


def test_one_channel_single_window_reaching_into_padding_is_misanswered() -> None:
    # given size 1, kernel 3, stride 1, SAME: one window padded each side
    assert rules.misanswered("conv", 3, "SAME", 1, 4, line(1, 3, 1), build(True)) is not None


@ONEDNN
def test_more_than_one_input_channel_is_answered_right(onednn: bool) -> None:
    assert (
        rules.misanswered("conv", 3, "VALID", 2, 4, line(3, 3, 2, "VALID"), build(onednn)) is None
    )


@pytest.mark.parametrize(("multiplier", "found"), [(2, "single_window_one_channel"), (1, None)])
def test_depthwise_needs_a_channel_multiplier_of_two_or_more(multiplier: int, found: Any) -> None:
    # given a depthwise single strided window (each group has one input channel)
    dims = windows_of([3, 3], [3, 3], 2, 1, "VALID", 2, True) or []
    # then only a multiplier of 2 or more is misanswered (measured: 1 is right)
    assert rules.misanswered("depthwise", 2, "VALID", 5, multiplier, dims, build(True)) == found


def test_depthwise_with_another_strided_dimension_is_answered_right() -> None:
    # given a single window in height, several strided windows in width
    dims = windows_of([3, 9], [3, 3], 2, 1, "VALID", 2, True) or []
    assert rules.misanswered("separable", 2, "VALID", 5, 2, dims, build(True)) is None


def test_a_kernel_of_one_is_never_a_single_window_problem() -> None:
    assert rules.misanswered("conv", 3, "VALID", 1, 4, line(2, 1, 2, "VALID"), build(True)) is None


def test_transposes_are_never_single_window_problems() -> None:
    assert (
        rules.misanswered("transpose", 3, "VALID", 1, 4, line(3, 3, 2, "VALID"), build(True))
        is None
    )


# --- misanswered_windows -----------------------------------------------------------------


@ONEDNN
def test_conv3d_same_windows_shifted_are_for_the_padding_policy(onednn: bool) -> None:
    # given conv3d SAME with 2 input positions past the last window
    x, f = tensor(1, 7, 1, 1, 8), tensor(1, 1, 1, 8, 4)
    call = bind("conv3d", x, f, [1, 4, 1, 1, 1], "SAME")
    # when the rule reads it
    problem = rules.misanswered_windows(call, *shapes(call), 3, build(onednn))
    # then the padding policy owns it (garbage on either build), and the message says so
    assert verdict(problem) == ("negative_same_padding", "padding", "garbage")
    assert problem is not None
    assert problem.before == {
        "input_shape": [1, 7, 1, 1, 8],
        "strides": [4, 1, 1],
        "padding": "SAME",
    }
    assert "the windows read [5, 1, 1]" in problem.message


@ONEDNN
def test_one_channel_single_window_is_for_the_padding_policy_on_onednn(onednn: bool) -> None:
    # given a one-channel conv2d whose width has one window, stride 2
    call = bind("conv2d", tensor(2, 6, 3, 1), tensor(3, 3, 1, 4), [1, 1, 2, 1], "VALID")
    problem = rules.misanswered_windows(call, *shapes(call), 2, build(onednn))
    expected = ("single_window_one_channel", "padding", "garbage") if onednn else None
    assert verdict(problem) == expected


def test_channels_are_read_where_the_layout_puts_them() -> None:
    # given NCHW: one channel in dim 1, although the last dim is 3
    call = bind("conv2d", tensor(2, 1, 6, 3), tensor(3, 3, 1, 4), [1, 1, 1, 2], "VALID", "NCHW")
    problem = rules.misanswered_windows(call, *shapes(call), 2, build(True))
    assert problem is not None and problem.reason == "single_window_one_channel"


@ONEDNN
def test_windows_with_unknown_sizes_are_not_judged(onednn: bool) -> None:
    call = bind("conv2d", tensor(2, None, None, 1), tensor(3, 3, 1, 4), 2, "VALID")
    assert rules.misanswered_windows(call, *shapes(call), 2, build(onednn)) is None


# --- needs_run_time_check ----------------------------------------------------------------


def traced(x: Any, name: str = "conv2d", **kwargs: Any) -> Call:
    f = tensor(3, 3, 3, 4)
    if name == "conv2d_transpose":
        return bind(name, x, f, [1, 9, 9, 4], 1, graph=True)
    return bind(name, x, f, 1, "VALID", graph=True, **kwargs)


@ONEDNN
def test_traced_call_with_unknown_sizes_is_checked_at_run_time_on_onednn(onednn: bool) -> None:
    # given a call traced with unknown batch and height
    call = traced(tensor(None, None, 5, 3))
    # then on oneDNN the empty-input and kernel-fit rules wait for the run
    assert rules.needs_run_time_check(call, build(onednn)) is onednn


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            bind("conv2d", tensor(None, 5, 5, 3), tensor(3, 3, 3, 4), 1, "SAME"), id="eager"
        ),
        pytest.param(traced(tensor(2, 5, 5, 3)), id="all_known"),
        pytest.param(traced(unknown_rank()), id="unknown_rank"),
        pytest.param(traced(tensor(None, 5, 5, 3), "conv2d_transpose"), id="transpose"),
    ],
)
def test_other_calls_need_no_run_time_check(call: Call) -> None:
    assert not rules.needs_run_time_check(call, build(True))


# --- plainly_safe ------------------------------------------------------------------------


def test_without_onednn_a_call_of_the_wrong_rank_is_plainly_safe() -> None:
    # given a call of the wrong rank, then TensorFlow without oneDNN refuses it itself
    call = bind("conv2d", tensor(5, 3), tensor(3, 3, 3, 4), 1, "VALID")
    assert rules.plainly_safe(call, build(False))


@pytest.mark.parametrize("onednn", [False, True])
@pytest.mark.parametrize(
    ("op", "x", "f", "strides", "dilations"),
    [
        pytest.param(
            "depthwise_conv2d", (1, 9, 9, 2), (3, 3, 2, 1), [1, 2, 2, 1], 2, id="strided_dilation"
        ),
        pytest.param(
            "conv3d", (1, 4, 4, 4, 1), (3, 3, 3, 1, 2), [1, 2, 2, 2, 1], None, id="strided_window"
        ),
        pytest.param(
            "conv3d", (1, 4, 4, 4, 1), (3, 3, 3, 1, 2), [1, 1, 1, 1, 1], 2, id="dilated_kernel"
        ),
    ],
)
def test_a_strided_or_dilated_call_is_never_plainly_safe(
    op: str, x: tuple[int, ...], f: tuple[int, ...], strides: Any, dilations: Any, onednn: bool
) -> None:
    call = bind(op, tensor(*x), tensor(*f), strides, "SAME", dilations=dilations)
    assert not rules.plainly_safe(call, build(onednn))


@given(call=calls(), onednn=st.booleans())
def test_what_is_plainly_safe_no_rule_calls_unsafe(call: Call, onednn: bool) -> None:
    if rules.plainly_safe(call, build(onednn)):
        assert not [p.reason for p in inspect(call, build(onednn)) if p.unsafe]


@pytest.mark.parametrize("onednn", [False, True])
def test_a_healthy_call_is_plainly_safe(onednn: bool) -> None:
    call = bind("conv2d", tensor(2, 8, 8, 3), tensor(3, 3, 3, 4), 1, "SAME")
    assert rules.plainly_safe(call, build(onednn))


@pytest.mark.parametrize(
    ("x", "f", "padding", "dilations", "safe"),
    [
        pytest.param((1, 5, 5, 3), (3, 3, 3, 4), "VALID", None, True, id="fits"),
        pytest.param((1, 2, 2, 3), (3, 3, 3, 4), "SAME", None, False, id="same_larger_kernel"),
        pytest.param((1, 2, 2, 3), (3, 3, 3, 4), "VALID", None, False, id="valid_larger_kernel"),
        pytest.param((1, 5, 5, 3), (3, 3, 3, 4), "VALID", 2, False, id="valid_dilated"),
        pytest.param((5, 5, 3), (3, 3, 3, 4), "VALID", None, False, id="wrong_rank"),
        pytest.param((2, 1, 5, 5, 3), (3, 3, 3, 4), "VALID", None, False, id="extra_batch_dims"),
        pytest.param((0, 5, 5, 3), (3, 3, 3, 4), "SAME", None, False, id="empty"),
        pytest.param((None, 5, 5, 3), (3, 3, 3, 4), "SAME", None, False, id="unknown_size"),
    ],
)
def test_plainly_safe_on_onednn_is_exact_rank_nothing_empty_and_a_fitting_kernel_on_every_padding(
    x: tuple[int | None, ...], f: tuple[int, ...], padding: str, dilations: Any, safe: bool
) -> None:
    call = bind("conv2d", tensor(*x), tensor(*f), 1, padding, dilations=dilations)
    assert rules.plainly_safe(call, build(True)) is safe


def test_an_unknown_rank_is_not_plainly_safe_on_onednn() -> None:
    call = bind("conv2d", unknown_rank(), tensor(3, 3, 3, 4), 1, "SAME")
    assert not rules.plainly_safe(call, build(True))


# --- empty_transpose_input -----------------------------------------------------------------


@pytest.mark.parametrize("x", [(1, 2, 0, 1, 1), (0, 2, 2, 1, 1)], ids=["spatial", "batch"])
def test_a_3d_transpose_of_an_empty_input_is_an_abort_the_guard_answers(
    x: tuple[int, ...],
) -> None:
    call = bind("conv3d_transpose", tensor(*x), tensor(3, 3, 3, 2, 1), [1, 5, 2, 5, 2], 1)
    found = rules.empty_transpose_input(call, list(x), 3, build(False))
    assert found is not None
    assert (found.reason, found.owner, found.hazard) == ("empty_input", "guard", "abort")


def test_a_2d_transpose_of_an_empty_input_is_left_to_tensorflow() -> None:
    call = bind("conv2d_transpose", tensor(1, 0, 2, 1), tensor(3, 3, 2, 1), [1, 3, 4, 2], 1)
    assert rules.empty_transpose_input(call, [1, 0, 2, 1], 2, build(True)) is None


# --- single_window_bfloat16 ----------------------------------------------------------------


@pytest.mark.parametrize("channels", [2, 3])  # one channel: single_window_one_channel
def test_a_strided_single_last_window_in_bfloat16_is_misanswered_on_onednn(channels: int) -> None:
    # the hazard sweep's case: conv2d x [1, 6, 3, 3] bfloat16, SAME, strides [1, 1, 3, 1]
    x = Tensor((1, 6, 3, channels), "bfloat16")
    call = bind("conv2d", x, tensor(3, 4, channels, 3), [1, 1, 3, 1], "SAME")
    found = rules.misanswered_windows(
        call, [1, 6, 3, channels], [3, 4, channels, 3], 2, build(True)
    )
    assert found is not None
    assert (found.reason, found.owner, found.hazard) == (
        "single_window_bfloat16",
        "padding",
        "garbage",
    )


@pytest.mark.parametrize(
    ("dtype", "onednn"), [("float32", True), ("float16", True), ("bfloat16", False)]
)
def test_the_same_geometry_is_right_in_other_dtypes_and_without_onednn(
    dtype: str, onednn: bool
) -> None:
    x = Tensor((1, 6, 3, 3), dtype)
    call = bind("conv2d", x, tensor(3, 4, 3, 3), [1, 1, 3, 1], "SAME")
    assert rules.misanswered_windows(call, [1, 6, 3, 3], [3, 4, 3, 3], 2, build(onednn)) is None


def test_a_strided_single_window_that_is_not_the_last_dimension_is_left_alone() -> None:
    x = Tensor((1, 3, 6, 3), "bfloat16")
    call = bind("conv2d", x, tensor(4, 3, 3, 3), [1, 3, 1, 1], "SAME")
    assert rules.misanswered_windows(call, [1, 3, 6, 3], [4, 3, 3, 3], 2, build(True)) is None


# -- an input one rank short: the readings TensorFlow would accept ------------------------


def _readings(name: str, x: tuple[int, ...], f: tuple[int, ...], **kwargs: Any) -> list[str]:
    call = bind(name, tensor(*x), tensor(*f), 1, "VALID", **kwargs)
    return rules.rank_short_readings(call, list(x), list(f))


@pytest.mark.parametrize(
    ("x", "f", "expected"),
    [
        # grayscale images without their trailing 1: as one example, 28 channels in groups
        # of 1 need output channels divisible by 28, and 32 is not
        ((32, 28, 28), (3, 3, 1, 32), ["channel"]),
        ((32, 28, 28), (3, 3, 1, 28), ["batch", "channel"]),  # both valid: ambiguous
        ((28, 28, 3), (3, 3, 3, 8), ["batch"]),  # one RGB image
        ((28, 28, 1), (3, 3, 1, 8), ["batch"]),  # a last dim of 1 is a channel
        ((128, 128, 4), (3, 3, 3, 64), []),  # nothing fits
        ((3, 8, 8), (3, 3, 3, 4), ["batch_channels_first"]),  # one channels-first image
        ((8, 8, 6), (3, 3, 3, 4), ["batch"]),  # grouped: 6 channels in 2 groups of 3, 4 out
        ((8, 8, 6), (3, 3, 3, 3), []),  # 3 outputs do not divide into 2 groups
    ],
)
def test_rank_short_readings_are_those_tensorflow_accepts(
    x: tuple[int, ...], f: tuple[int, ...], expected: list[str]
) -> None:
    assert _readings("conv2d", x, f) == expected


def test_depthwise_readings_need_the_filters_channels_exactly() -> None:
    call = bind("depthwise_conv2d", tensor(8, 8, 3), tensor(3, 3, 3, 2), [1, 1, 1, 1], "SAME")
    assert rules.rank_short_readings(call, [8, 8, 3], [3, 3, 3, 2]) == ["batch"]
    call = bind("depthwise_conv2d", tensor(8, 8, 4), tensor(3, 3, 1, 2), [1, 1, 1, 1], "SAME")
    assert rules.rank_short_readings(call, [8, 8, 4], [3, 3, 1, 2]) == ["channel"]


def test_channels_first_calls_have_no_channel_reading() -> None:
    # (as one NCHW example its 32 channels fit the filter: the batch reading)
    assert _readings("conv2d", (32, 28, 28), (3, 3, 1, 32), data_format="NCHW") == ["batch"]


@by_build(with_onednn="abort", without="answered")
def test_only_the_channel_reading_is_the_layout_policys(onednn: bool, hazard: str) -> None:
    call = bind("conv2d", tensor(32, 28, 28), tensor(3, 3, 1, 32), 1, "VALID")
    problem = rules.input_rank(call, [32, 28, 28], [3, 3, 1, 32], 2, build(onednn))
    assert verdict(problem) == ("missing_channel_dim", "layout", hazard)
    assert problem is not None and "input[..., None]" in problem.message
    assert "missing its batch" not in problem.message.split(":")[-1]


def test_no_valid_reading_is_the_guards_refusal_in_the_callers_shapes() -> None:
    call = bind("conv2d", tensor(128, 128, 4), tensor(3, 3, 3, 64), 1, "SAME")
    problem = rules.input_rank(call, [128, 128, 4], [3, 3, 3, 64], 2, build(True))
    assert verdict(problem) == ("bad_input_rank", "guard", "abort")
    assert problem is not None and "[128, 128, 4]" in problem.message
    assert "[1, 128, 128, 4]" not in problem.message
