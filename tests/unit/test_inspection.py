"""convfix.guard.inspect: the rules applied to one call, in order, at most one problem."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convfix.call import Call
from convfix.geometry import static_shape
from convfix.guard import inspect, rules
from convfix.ops import V1_SPECS, V2_SPECS
from convfix.sweep import reference as ref
from tests.unit.builds import build
from tests.unit.standins import bind, tensor, unknown_rank

ONEDNN = pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "no_onednn"])
PROPERTY = settings(max_examples=300, deadline=None)


def reasons(call: Call, onednn: bool) -> list[str]:
    return [p.reason for p in inspect(call, build(onednn))]


# --- order -------------------------------------------------------------------------------


@ONEDNN
def test_a_healthy_call_has_no_problems(onednn: bool) -> None:
    call = bind("conv2d", tensor(2, 8, 8, 3), tensor(3, 3, 3, 4), 1, "SAME")
    assert inspect(call, build(onednn)) == []


@ONEDNN
def test_rank_comes_before_strided_dilation(onednn: bool) -> None:
    # given a depthwise call with no batch dim and strides with dilations
    x, f = tensor(9, 9, 3), tensor(3, 3, 3, 2)
    call = bind("depthwise_conv2d", x, f, [1, 2, 2, 1], "SAME", dilations=[2, 2])
    # then only the rank is reported (each rule assumes the ones before held)
    assert reasons(call, build(onednn)) == ["missing_batch_dim"]


@ONEDNN
def test_strided_dilation_is_found_on_both_builds(onednn: bool) -> None:
    x, f = tensor(1, 9, 9, 3), tensor(3, 3, 3, 2)
    call = bind("depthwise_conv2d", x, f, [1, 2, 2, 1], "SAME", dilations=[2, 2])
    (problem,) = inspect(call, build(onednn))
    assert (problem.reason, problem.owner, problem.hazard) == (
        "strided_dilation",
        "guard",
        "garbage",
    )


@ONEDNN
def test_strided_dilation_comes_before_the_kernel_fit(onednn: bool) -> None:
    # given strided dilation and a dilated kernel larger than a VALID input
    x, f = tensor(1, 3, 3, 3), tensor(3, 3, 3, 2)
    call = bind("depthwise_conv2d", x, f, [1, 2, 2, 1], "VALID", dilations=[2, 2])
    assert reasons(call, build(onednn)) == ["strided_dilation"]


@ONEDNN
def test_transposes_get_the_rank_check_only(onednn: bool) -> None:
    # given a transpose whose input is empty and smaller than its VALID kernel
    x, f = tensor(0, 2, 2, 4), tensor(3, 3, 3, 4)
    call = bind("conv2d_transpose", x, f, [0, 4, 4, 3], 1, "VALID")
    assert inspect(call, build(onednn)) == []


def test_transposes_are_rank_checked() -> None:
    call = bind("conv2d_transpose", tensor(2, 2, 4), tensor(3, 3, 3, 4), [1, 4, 4, 3], 1)
    assert reasons(call, True) == ["missing_batch_dim"]


@ONEDNN
def test_a_filter_of_the_wrong_rank_is_left_to_tensorflow(onednn: bool) -> None:
    # given a 2-d op with a 3-d filter larger than the VALID input
    call = bind("conv2d", tensor(1, 2, 2, 3), tensor(3, 3, 3, 3, 4), 1, "VALID")
    assert inspect(call, build(onednn)) == []


@ONEDNN
def test_an_unknown_filter_shape_is_left_to_tensorflow(onednn: bool) -> None:
    call = bind("conv2d", tensor(1, 2, 2, 3), unknown_rank(), 1, "VALID")
    assert inspect(call, build(onednn)) == []


@ONEDNN
def test_an_input_of_unknown_rank_is_left_to_tensorflow(onednn: bool) -> None:
    call = bind("conv2d", unknown_rank(), tensor(3, 3, 3, 4), 1, "VALID")
    assert inspect(call, build(onednn)) == []


@ONEDNN
def test_convolution_of_more_than_three_spatial_dims_is_left_to_tensorflow(onednn: bool) -> None:
    # given tf.nn.convolution with a 4-d filter (no such kernel: TensorFlow says so)
    call = bind("convolution", tensor(1, 2, 2, 2, 2, 1), tensor(3, 3, 3, 3, 1, 1))
    assert inspect(call, build(onednn)) == []


def test_convolution_takes_its_spatial_rank_from_the_filter() -> None:
    # given tf.nn.convolution, a 3-d filter and a rank-4 input
    call = bind("convolution", tensor(4, 4, 4, 1), tensor(3, 3, 3, 1, 2))
    # then the input is one rank short of the filter's
    assert reasons(call, True) == ["missing_batch_dim"]


def test_dilated_kernel_past_input_comes_before_the_empty_input() -> None:
    # given conv3d SAME, dilated past an input with an empty batch
    x, f = tensor(0, 4, 4, 4, 1), tensor(3, 3, 3, 1, 2)
    call = bind("conv3d", x, f, [1] * 5, "SAME", dilations=2)
    assert reasons(call, True) == ["dilated_kernel_past_input"]


@ONEDNN
def test_kernel_fit_comes_before_the_empty_input(onednn: bool) -> None:
    # given a VALID kernel larger than an input with an empty batch
    call = bind("conv2d", tensor(0, 2, 2, 3), tensor(3, 3, 3, 4), 1, "VALID")
    assert reasons(call, build(onednn)) == ["kernel_larger_than_input"]


def test_empty_input_comes_before_misanswered_windows() -> None:
    # given a one-channel strided single window with an empty batch
    call = bind("conv2d", tensor(0, 3, 3, 1), tensor(3, 3, 1, 4), 2, "VALID")
    assert reasons(call, True) == ["empty_input"]


@ONEDNN
def test_misanswered_windows_are_checked_last(onednn: bool) -> None:
    call = bind("conv3d", tensor(1, 7, 1, 1, 8), tensor(1, 1, 1, 8, 4), [1, 4, 1, 1, 1], "SAME")
    assert reasons(call, build(onednn)) == ["negative_same_padding"]


# --- properties over drawn calls ---------------------------------------------------------

# What each reason means on each build (guard/rules.py's docstring): (owner, hazards).
DOCUMENTED = {
    True: {
        "missing_batch_dim": ("batch_dim", {"abort"}),
        "bad_input_rank": ("guard", {"abort", "garbage"}),
        "strided_dilation": ("guard", {"garbage"}),
        "dilated_kernel_past_input": ("guard", {"abort"}),
        "kernel_larger_than_input": ("padding", {"garbage"}),
        "empty_input": ("guard", {"garbage", "abort"}),  # abort: a 3-D transpose
        "negative_same_padding": ("padding", {"garbage"}),
        "single_window_one_channel": ("padding", {"garbage"}),
        # TensorFlow raises without saying why (unclear), or oneDNN answers (garbage)
        "impossible_output_shape": ("guard", {"unclear", "garbage"}),
        "output_batch_mismatch": ("batch_dim", {"unclear", "answered"}),  # answered: traced
    },
    False: {  # TensorFlow answers the rest itself; these are wrong on every build
        "empty_input": ("guard", {"abort"}),  # a 3-D transpose's crash
        "missing_batch_dim": ("batch_dim", {"answered"}),
        "bad_input_rank": ("guard", {"answered"}),
        "strided_dilation": ("guard", {"garbage"}),
        "kernel_larger_than_input": ("padding", {"answered"}),
        "negative_same_padding": ("padding", {"garbage"}),
        "channels_first_on_cpu": ("data_format", {"answered"}),  # no such CPU kernel
        "impossible_output_shape": ("guard", {"unclear"}),
        "output_batch_mismatch": ("batch_dim", {"unclear", "answered"}),
    },
}

FORMATS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}


@st.composite
def calls(draw: st.DrawFn) -> Call:
    """A call of any wrapped op: mostly the right rank, small (sometimes empty) sizes, any
    form of strides, dilations and padding the op's signature takes."""
    v1 = draw(st.booleans())
    specs = V1_SPECS if v1 else V2_SPECS
    name = draw(st.sampled_from(sorted(specs)))
    spec = specs[name]
    spatial = spec.spatial or draw(st.integers(1, 3))
    last = draw(st.booleans())
    per_dim = st.lists(st.integers(1, 3), min_size=spatial, max_size=spatial)
    sizes = draw(st.lists(st.integers(0, 6), min_size=spatial, max_size=spatial))
    channels = draw(st.integers(1, 3))
    batch = draw(st.lists(st.integers(0, 2), min_size=1, max_size=2))
    x = [*batch, *sizes, channels] if last else [*batch, channels, *sizes]
    x = x[draw(st.sampled_from([0, 0, 0, 1, 2])) :]  # sometimes ranks short
    f = [*draw(per_dim), channels, draw(st.integers(1, 3))]

    def spread(values: list[int]) -> Any:
        form = draw(st.sampled_from(["int", "spatial", "all"]))
        if form == "int":
            return values[0]
        return values if form == "spatial" else [1, *values, 1] if last else [1, 1, *values]

    padding: Any = draw(st.sampled_from(["SAME", "VALID", "explicit"]))
    if padding == "explicit":
        pairs = [[draw(st.integers(0, 2)), draw(st.integers(0, 2))] for _ in range(spatial)]
        padding = [[0, 0], *pairs, [0, 0]] if last else [[0, 0], [0, 0], *pairs]
    arguments: dict[str, Any] = {
        spec.input_params[0]: tensor(*x),
        spec.filter_params[0]: tensor(*f),
        spec.padding_param: padding,
        spec.dilations_params[0]: spread(draw(per_dim)),
        spec.data_format_param: FORMATS[spatial][0 if last else 1],
    }
    if spec.strides_param:
        arguments[spec.strides_param] = spread(draw(per_dim))
    if spec.pointwise_param:
        arguments[spec.pointwise_param] = tensor(1, 1, channels * f[-1], 2)
    if spec.kind == "transpose":
        arguments["output_shape"] = x
    return bind(name, v1=v1, graph=draw(st.booleans()), **arguments)


@PROPERTY
@given(call=calls(), onednn=st.booleans())
def test_every_problem_has_its_documented_owner_and_hazard(call: Call, onednn: bool) -> None:
    # when the guard inspects any call
    problems = inspect(call, build(onednn))
    # then it finds at most one problem, owned and classed as rules.py documents
    assert len(problems) <= 1
    for problem in problems:
        owner, hazards = DOCUMENTED[onednn][problem.reason]
        assert problem.owner == owner
        assert problem.hazard in hazards
        assert problem.message.startswith(f"{call.spec.name}: ")


@PROPERTY
@given(call=calls())
def test_without_onednn_only_what_every_build_gets_wrong_is_unsafe(call: Call) -> None:
    # when the guard inspects a call for a build without oneDNN
    # ("unclear": TensorFlow raises, with an error that does not say why; refused in words)
    unsafe = [p.reason for p in inspect(call, build(False)) if p.unsafe and p.hazard != "unclear"]
    # then only the calls TensorFlow answers wrongly (or crashes on) everywhere are unsafe
    assert set(unsafe) <= {"strided_dilation", "negative_same_padding", "empty_input"}


@st.composite
def valid_convolutions(draw: st.DrawFn) -> tuple[list[int], list[int], Any, Any, Any, str]:
    """A well-formed plain convolution with VALID or explicit padding and a non-empty input:
    (input shape, filter shape, strides, dilations, padding, data format)."""
    spatial = draw(st.integers(1, 3))
    last = draw(st.booleans())
    per_dim = st.lists(st.integers(1, 3), min_size=spatial, max_size=spatial)
    sizes = draw(st.lists(st.integers(1, 6), min_size=spatial, max_size=spatial))
    x = [1, *sizes, 2] if last else [1, 2, *sizes]
    f = [*draw(st.lists(st.integers(1, 4), min_size=spatial, max_size=spatial)), 2, 1]
    padding: Any = "VALID"
    if spatial == 2 and draw(st.booleans()):  # conv2d takes explicit pads
        pairs = [[draw(st.integers(0, 2)), draw(st.integers(0, 2))] for _ in range(spatial)]
        padding = [[0, 0], *pairs, [0, 0]] if last else [[0, 0], [0, 0], *pairs]
    fmt = FORMATS[spatial][0 if last else 1]
    return x, f, draw(per_dim), draw(per_dim), padding, fmt


@PROPERTY
@given(case=valid_convolutions(), onednn=st.booleans())
def test_kernel_fit_is_exactly_where_the_reference_has_no_output(
    case: tuple[list[int], list[int], Any, Any, Any, str], onednn: bool
) -> None:
    x_shape, f_shape, strides, dilations, padding, fmt = case
    # given the float64 reference convolution of the call
    try:
        y = ref.conv(
            np.ones(x_shape),
            np.ones(f_shape),
            strides=strides,
            padding=padding,
            dilations=dilations,
            data_format=fmt,
        )
        empty_answer = y.size == 0
    except ValueError:  # negative output size: TensorFlow refuses it too
        empty_answer = True
    # when the rule judges the same call
    spatial = len(f_shape) - 2
    name = f"conv{spatial}d"
    call = bind(
        name,
        input=tensor(*x_shape),
        filters=tensor(*f_shape),
        padding=padding,
        data_format=fmt,
        dilations=dilations,
        **{V2_SPECS[name].strides_param or "strides": strides},
    )
    x, f = static_shape(call.input), static_shape(call.filter)
    assert x is not None and f is not None
    found = rules.kernel_larger_than_input(call, x, f, spatial, build(onednn))
    # then the kernel does not fit exactly where the definition has no output position
    assert (found is not None) is empty_answer
