"""convfix.call: binding a function's arguments to a Call, and the values stages share."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from convfix.call import Binder, Call, Problem, Repair, spatial_rank
from convfix.ops import V2_SPECS
from tests.unit.standins import Received, bind, binder, tensor

X = tensor(1, 5, 5, 3)
F = tensor(3, 3, 3, 4)


# --- Binder.bind ---------------------------------------------------------------------------


def test_positional_arguments_are_bound_by_parameter_name() -> None:
    # when tf.nn.conv2d's arguments are all given by position
    call = bind("conv2d", X, F, [1, 2, 2, 1], "SAME", "NHWC", 2, "c")
    # then each lands under its parameter's name
    assert call.arguments == {
        "input": X,
        "filters": F,
        "strides": [1, 2, 2, 1],
        "padding": "SAME",
        "data_format": "NHWC",
        "dilations": 2,
        "name": "c",
    }


def test_defaults_fill_in_every_parameter_not_given() -> None:
    # when only the required arguments are given
    call = bind("conv2d", X, F, 1, "VALID")
    # then the others carry TensorFlow's defaults
    assert call.arguments["data_format"] == "NHWC"
    assert call.arguments["dilations"] is None
    assert call.arguments["name"] is None


def test_keyword_arguments_bind_like_positional_ones() -> None:
    # given the same call made by position and by keyword
    positional = bind("conv2d", X, F, 1, "VALID")
    keywords = bind("conv2d", padding="VALID", strides=1, filters=F, input=X)
    # then they bind alike
    assert positional.arguments == keywords.arguments


def test_input_and_filter_roles_are_the_ops_parameter_names() -> None:
    # when depthwise_conv2d (whose filter parameter is "filter") is bound
    call = bind("depthwise_conv2d", X, F, [1, 1, 1, 1], "SAME")
    # then the roles name its parameters
    assert (call.input_name, call.filter_name) == ("input", "filter")
    assert (call.input, call.filter) == (X, F)


def test_v1_filter_given_as_filters_takes_the_filter_role() -> None:
    # when compat.v1 conv2d gets its filter under the newer name
    call = bind("conv2d", X, strides=[1] * 4, padding="SAME", filters=F, v1=True)
    # then "filters" is the filter role
    assert call.filter_name == "filters"
    assert call.filter is F


def test_v1_filter_given_as_filter_takes_the_filter_role() -> None:
    # when compat.v1 conv2d gets its filter under the older name
    call = bind("conv2d", X, F, [1] * 4, "SAME", v1=True)
    # then "filter" is the filter role
    assert call.filter_name == "filter"


def test_v1_role_with_no_value_given_names_the_first_parameter() -> None:
    # when neither filter= nor filters= is given to compat.v1 conv2d
    call = bind("conv2d", X, strides=[1] * 4, padding="SAME", v1=True)
    # then the role falls back to the first name (TensorFlow reports it missing)
    assert call.filter_name == "filter"
    assert call.filter is None


def test_v1_conv1d_input_given_as_input_takes_the_input_role() -> None:
    # when compat.v1 conv1d gets input= rather than its older value=
    x = tensor(1, 8, 3)
    call = bind("conv1d", filters=tensor(3, 3, 4), stride=1, padding="SAME", input=x, v1=True)
    # then "input" is the input role
    assert call.input_name == "input"
    assert call.input is x


def test_v1_conv1d_input_given_as_value_takes_the_input_role() -> None:
    # when compat.v1 conv1d gets its input positionally, as value
    call = bind("conv1d", tensor(1, 8, 3), tensor(3, 3, 4), 1, "SAME", v1=True)
    # then "value" is the input role
    assert call.input_name == "value"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((X, F, 1), {}, id="missing_required"),
        pytest.param((X, F, 1, "SAME"), {"bogus": 1}, id="unknown_keyword"),
        pytest.param((X, F, 1, "SAME"), {"filters": F}, id="given_twice"),
        pytest.param((X, F, 1, "SAME", "NHWC", None, "n", "extra"), {}, id="too_many"),
    ],
)
def test_a_call_python_would_reject_raises_pythons_type_error(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    # given a call of tf.nn.conv2d that does not fit its signature
    conv2d = binder("conv2d")
    # when it is bound, then Python's own TypeError is raised
    with pytest.raises(TypeError):
        conv2d.bind(args, kwargs)


def flexible(input: Any, filters: Any, *rest: Any, padding: str = "VALID", **extra: Any) -> None:
    """A function with *args, keyword-only parameters and **kwargs."""


def test_a_signature_with_star_args_binds_through_inspect() -> None:
    # given a binder for a function that is not all plain parameters
    flexible_binder = Binder(V2_SPECS["convolution"], flexible)
    # when it binds a call
    call = flexible_binder.bind((X, F, 7), {"padding": "SAME", "strides": 2})
    # then the arguments are as inspect.Signature binds them, defaults applied
    assert call.input is X
    assert call.arguments["rest"] == (7,)
    assert call.arguments["padding"] == "SAME"
    assert call.arguments["extra"] == {"strides": 2}


# --- Binder.rewrite / can_rewrite / dispatch -----------------------------------------------


def test_plain_signatures_can_be_rewritten() -> None:
    # given a binder for TensorFlow's conv2d, then it can rewrite its arguments
    assert binder("conv2d").can_rewrite


def test_a_signature_with_star_args_cannot_be_rewritten() -> None:
    # given a binder for a function with *args, then it cannot
    assert not Binder(V2_SPECS["convolution"], flexible).can_rewrite


def test_rewrite_replaces_a_positional_argument_in_place() -> None:
    # given padding passed by position
    args, kwargs = (X, F, 1, "same"), {"name": "c"}
    # when padding is rewritten
    new_args, new_kwargs = binder("conv2d").rewrite(args, kwargs, {"padding": str.upper})
    # then it stays positional, the rest untouched
    assert new_args == (X, F, 1, "SAME")
    assert new_kwargs == {"name": "c"}


def test_rewrite_replaces_a_keyword_argument_as_a_keyword() -> None:
    # given padding passed by keyword
    args, kwargs = (X, F), {"strides": 1, "padding": "same"}
    # when padding is rewritten
    new_args, new_kwargs = binder("conv2d").rewrite(args, kwargs, {"padding": str.upper})
    # then it stays a keyword
    assert new_args == (X, F)
    assert new_kwargs == {"strides": 1, "padding": "SAME"}


def test_rewrite_of_an_absent_argument_starts_from_its_default() -> None:
    # given a call that leaves data_format at its default
    args: tuple[Any, ...] = (X, F, 1, "SAME")
    # when data_format is rewritten
    _, new_kwargs = binder("conv2d").rewrite(args, {}, {"data_format": lambda old: old + "!"})
    # then the rewrite saw the default, and its result is passed by keyword
    assert new_kwargs == {"data_format": "NHWC!"}


def test_rewrite_leaves_the_callers_arguments_alone() -> None:
    # given the caller's arguments
    args, kwargs = (X, F, 1), {"padding": "same"}
    # when they are rewritten
    binder("conv2d").rewrite(args, kwargs, {"padding": str.upper, "input": lambda x: None})
    # then the originals are unchanged
    assert args == (X, F, 1)
    assert kwargs == {"padding": "same"}


def test_dispatch_calls_the_function_with_the_calls_arguments() -> None:
    # given a bound call whose padding was changed
    conv2d = binder("conv2d")
    call = conv2d.bind((X, F, 1, "same"), {}).replace(padding="SAME")
    # when it is dispatched to the (stand-in) function
    received = conv2d.dispatch(lambda **kwargs: Received("conv2d", kwargs), call)
    # then the function got every argument by name, the change included
    assert received.arguments == {**call.arguments, "padding": "SAME"}


# --- Call --------------------------------------------------------------------------------


def test_strides_are_read_from_the_ops_strides_parameter() -> None:
    # when conv1d (whose parameter is "stride") is bound
    call = bind("conv1d", tensor(1, 8, 3), tensor(3, 3, 4), 2, "SAME")
    # then strides reads it
    assert call.strides == 2


def test_dilations_are_the_first_dilations_parameter_given() -> None:
    # when compat.v1 depthwise_conv2d gets rate= (its older name for dilations)
    call = bind("depthwise_conv2d", X, F, [1] * 4, "SAME", rate=[2, 2], v1=True)
    # then dilations reads it
    assert call.dilations == [2, 2]


def test_dilations_given_under_the_newer_name_are_read_too() -> None:
    # when compat.v1 depthwise_conv2d gets dilations= and no rate
    call = bind("depthwise_conv2d", X, F, [1] * 4, "SAME", dilations=[3, 3], v1=True)
    # then dilations reads it
    assert call.dilations == [3, 3]


def test_data_format_that_is_not_a_string_reads_as_none() -> None:
    # when a data_format is something other than a string
    call = bind("conv2d", X, F, 1, "SAME", data_format=b"NCHW")
    # then the call has no data format (and counts as channels-last)
    assert call.data_format is None
    assert call.channels_last()


@pytest.mark.parametrize(
    ("data_format", "last"),
    [("NHWC", True), ("NCHW", False), ("nchw", False), (None, True), ("NWC", True)],
)
def test_channels_last_unless_the_format_starts_with_nc(
    data_format: str | None, last: bool
) -> None:
    # when depthwise_conv2d gets a data_format
    call = bind("depthwise_conv2d", X, F, [1] * 4, "SAME", data_format=data_format)
    # then the format decides where channels are
    assert call.channels_last() is last


def test_format_name_defaults_to_tensorflows_channels_last_name() -> None:
    # given a call with no data_format
    call = bind("depthwise_conv2d", X, F, [1] * 4, "SAME")
    # then its format is named after the spatial rank
    assert call.format_name(2) == "NHWC"
    assert call.format_name(3) == "NDHWC"


def test_pointwise_filter_is_read_for_separable_convolutions_only() -> None:
    # given a separable and a plain convolution
    pointwise = tensor(1, 1, 6, 8)
    separable = bind("separable_conv2d", X, tensor(3, 3, 3, 2), pointwise, [1] * 4, "SAME")
    plain = bind("conv2d", X, F, 1, "SAME")
    # then only the separable one has a pointwise filter
    assert separable.pointwise_filter is pointwise
    assert plain.pointwise_filter is None


def test_replace_by_role_changes_the_ops_own_parameter() -> None:
    # given a depthwise call (filter parameter "filter")
    call = bind("depthwise_conv2d", X, F, [1] * 4, "SAME")
    smaller = tensor(1, 1, 3, 2)
    # when its filter is replaced by role
    changed = call.replace(filter=smaller, padding="VALID")
    # then the op's parameter changed, and only the copy
    assert changed.arguments["filter"] is smaller
    assert changed.padding == "VALID"
    assert call.filter is F


def test_replace_keeps_graph_and_layer() -> None:
    # given a traced call made by a layer
    call = Call(V2_SPECS["conv2d"], {"input": X, "filters": F}, "input", "filters", True, "dense")
    # when an argument is replaced, then where the call came from stays
    changed = call.replace(input=tensor(2, 5, 5, 3))
    assert (changed.graph, changed.layer) == (True, "dense")


def test_call_is_frozen() -> None:
    call = bind("conv2d", X, F, 1, "SAME")
    with pytest.raises(FrozenInstanceError):
        call.graph = True  # type: ignore[misc]


# --- spatial_rank ------------------------------------------------------------------------


def test_spatial_rank_is_the_ops_own_when_it_has_one() -> None:
    # given conv2d and a filter of another rank, then the op decides
    assert spatial_rank(bind("conv2d", X, F, 1, "SAME"), [3, 3, 3, 3, 4], [1, 5, 5, 3]) == 2


def test_spatial_rank_of_convolution_comes_from_the_filter() -> None:
    # given tf.nn.convolution, which takes any rank
    call = bind("convolution", X, F)
    # then the filter's rank decides, ahead of the input's
    assert spatial_rank(call, [3, 3, 3, 3, 4], [1, 5, 5, 3]) == 3


def test_spatial_rank_falls_back_to_the_input() -> None:
    call = bind("convolution", X, F)
    # given no filter shape, then the input's rank decides
    assert spatial_rank(call, None, [1, 8, 3]) == 1


def test_spatial_rank_is_unknown_without_either_shape() -> None:
    assert spatial_rank(bind("convolution", X, F), None, None) is None


# --- Problem / Repair --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hazard", "unsafe"), [("abort", True), ("garbage", True), ("answered", False)]
)
def test_a_problem_is_unsafe_unless_tensorflow_answers_it(hazard: Any, unsafe: bool) -> None:
    # given a problem with a hazard, then it is unsafe exactly when TF would not answer it
    assert Problem("reason", "guard", hazard, "message").unsafe is unsafe


def test_a_problem_allows_probing_by_default() -> None:
    problem = Problem("reason", "guard", "answered", "message")
    assert problem.probe
    assert problem.before == {}


def test_a_repair_by_default_changes_only_the_call() -> None:
    # given a repair that only names its new call
    call = bind("conv2d", X, F, 1, "SAME")
    repair = Repair(call, "use_same_padding", {"padding": "SAME"})
    # then it has no finishing step, no rewrites and runs nothing itself
    assert (repair.finish, repair.rewrites, repair.run) == (None, None, None)


@pytest.mark.parametrize(
    ("hazard", "unsafe", "dangerous"),
    [
        ("abort", True, True),
        ("garbage", True, True),
        ("unclear", True, False),
        ("answered", False, False),
    ],
)
def test_an_unclear_error_is_refused_but_is_a_safe_fallback(
    hazard: str, unsafe: bool, dangerous: bool
) -> None:
    # unclear: TensorFlow only raises (an error that does not say why), so convfix refuses
    # it in its own words, yet may fall back to it when its own repair fails
    problem = Problem("r", "guard", hazard, "m", {})  # type: ignore[arg-type]
    assert (problem.unsafe, problem.dangerous) == (unsafe, dangerous)
