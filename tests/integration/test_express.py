"""The express lane: the generated wrapper with the wrapped function's own signature."""

from __future__ import annotations

import inspect
import threading
import traceback
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import convfix
from convfix.guard.build import Build
from convfix.integrations import express
from convfix.integrations import tensorflow as tf_integration
from convfix.integrations.entry import Capabilities, FilterShapes, make_fast_check
from convfix.memory import Memory
from convfix.ops import V2_SPECS
from convfix.testing import capture_events
from tests.integration.conftest import unpatched

X64 = tf.ones([1, 5, 5, 3], tf.float64)
K32 = tf.ones([3, 3, 3, 2])
EXPRESS_OPS = ("conv1d", "conv2d", "conv3d", "convolution", "conv2d_transpose")


def test_the_wrapper_keeps_tensorflows_signature_and_refuses_what_it_refuses() -> None:
    assert inspect.signature(tf.nn.conv2d) == inspect.signature(unpatched(tf.nn.conv2d))
    with pytest.raises(TypeError):
        unpatched(tf.nn.conv2d)(K32, K32, 1)
    # Python binds the call now: its TypeError names the function and the argument.
    with pytest.raises(TypeError, match=r"conv2d_v2\(\) missing 1 required .*'padding'"):
        tf.nn.conv2d(K32, K32, 1)  # type: ignore[call-arg]


def test_only_functions_behind_tensorflows_pass_through_wrappers_get_the_lane() -> None:
    # compat.v1 conv1d sits behind deprecation wrappers that notice which arguments were
    # passed: passing every default explicitly would not be the same call.
    assert express._plain_parameters(unpatched(tf.nn.conv2d)) is not None
    assert express._plain_parameters(unpatched(tf.compat.v1.nn.conv1d)) is None


def test_a_traceback_through_the_lane_shows_its_source() -> None:
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        tf.nn.conv2d(tf.ones([1, 5, 5, 4]), K32, 1, "SAME")  # 4 channels vs 3: TF's error
    text = "".join(traceback.format_exception(raised.value))
    # the lane's frame that stays (integrations/tracebacks.py) is where it hands the error
    # to recovery, which re-raises TensorFlow's: its source line is shown
    assert "<convfix express conv2d" in text and "return recover(" in text


def test_an_override_in_another_thread_leaves_this_threads_calls_checked() -> None:
    entered, release = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def other_thread() -> None:
        with convfix.override(mode="off"):
            entered.set()
            release.wait(timeout=30)
            try:
                tf.nn.conv2d(X64, K32, 1, "SAME")
            except Exception as error:  # off: TensorFlow's own error
                seen["other"] = type(error).__name__

    worker = threading.Thread(target=other_thread)
    worker.start()
    try:
        assert entered.wait(timeout=30)
        with capture_events() as captured:
            y = tf.nn.conv2d(X64, K32, 1, "SAME")  # this thread is still in fix mode
            healthy = tf.nn.conv2d(tf.ones([1, 5, 5, 3]), K32, 1, "SAME")
    finally:
        release.set()
        worker.join(timeout=30)
    assert y.dtype == tf.float32
    assert [e["policy"] for e in captured] == ["dtype"]
    assert healthy.shape == (1, 5, 5, 2)
    assert seen["other"] == "InvalidArgumentError"


def _caps(onednn: bool) -> Capabilities:
    real = tf_integration.caps
    assert real is not None
    return Capabilities(
        real.eager,
        real.symbolic,
        set(real.filter_types),
        Build((2, 21), onednn),
        real.direct_filter_types,
    )


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], Any, Any, Any, Any]:
    """An express-eligible op, its arguments in the lane's order (every parameter
    positional), and the input, filter, padding and strides the quick check reads."""
    op = draw(st.sampled_from(EXPRESS_OPS))
    spatial = {"conv1d": 1, "conv3d": 3}.get(op, 2)
    rank = draw(st.integers(spatial + 1, spatial + 3))
    x_shape = draw(st.lists(st.integers(0, 4), min_size=rank, max_size=rank))
    kernel = draw(st.lists(st.integers(1, 4), min_size=spatial, max_size=spatial))
    f_shape = [*kernel, draw(st.integers(1, 3)), 2]
    padding = draw(st.sampled_from(["SAME", "VALID", "same", [[0, 0]] * (spatial + 2)]))
    x, f = tf.zeros(x_shape), tf.zeros(f_shape)
    dilations = draw(st.sampled_from([None, 1, 2]))
    strides = draw(st.sampled_from([1, 2, [1] * spatial, [2] * spatial, None]))
    original = unpatched(getattr(tf.nn, op))
    bound = inspect.signature(original).bind_partial(x, f)
    name = "stride" if op == "conv1d" else "strides"
    if op == "conv2d_transpose":  # sizes 0-2: a 0 and a 1 are what oneDNN answers silently
        sizes = draw(st.lists(st.integers(0, 2), min_size=2, max_size=2))
        bound.arguments.update(output_shape=[1, *sizes, 2])
    bound.arguments.update({name: strides, "padding": padding, "dilations": dilations})
    bound.apply_defaults()
    return op, tuple(bound.arguments.values()), x, f, padding, strides


@settings(max_examples=300, deadline=None)
@given(case=calls(), onednn=st.booleans())
def test_the_quick_check_clears_only_calls_the_full_fast_check_clears(
    case: tuple[str, tuple[Any, ...], Any, Any, Any, Any], onednn: bool
) -> None:
    op, args, x, f, padding, strides = case
    caps = _caps(onednn)
    filters, memory = FilterShapes(caps), Memory()
    quick = express.make_quick_check(V2_SPECS[op], caps, memory)
    fast = make_fast_check(V2_SPECS[op], unpatched(getattr(tf.nn, op)), caps, filters, memory)
    checked = [x, f, padding, strides]
    if express.reads_output_shape(V2_SPECS[op], caps):
        checked.append(args[2])  # the transposes' output_shape
    if quick is not None and quick(*checked):
        assert fast(args, {}), f"the lane cleared a call the fast check sends to the pipeline: {op}"


@pytest.mark.parametrize("onednn", [False, True])
def test_the_quick_check_clears_a_healthy_same_call_and_not_a_rank_three_input(
    onednn: bool,
) -> None:
    caps = _caps(onednn)
    quick = express.make_quick_check(V2_SPECS["conv2d"], caps, Memory())
    assert quick is not None
    assert quick(tf.ones([1, 5, 5, 3]), K32, "SAME", 1)
    assert not quick(tf.ones([1, 5, 5, 3]), K32, "VALID", 1)  # the kernel fit: the full check
    assert not quick(tf.ones([5, 5, 3]).numpy(), K32, "SAME", 1)  # not a tensor
    assert quick(tf.ones([5, 5, 3]), K32, "SAME", 1) is (not onednn)  # TF raises without oneDNN
    # oneDNN: a one-channel input may be one whose answer the general path must look at
    assert quick(tf.ones([1, 5, 5, 1]), tf.ones([3, 3, 1, 2]), "SAME", 1) is (not onednn)


def test_odd_argument_types_go_to_the_general_path_instead_of_raising() -> None:
    x = tf.ones([1, 5, 5, 3])
    caps = _caps(onednn=False)
    quick = express.make_quick_check(V2_SPECS["conv3d"], caps, Memory())
    assert quick is not None
    assert not quick(x, K32, np.array(["SAME", "SAME"]), 1)
    assert not quick(x, K32, "SAME", [np.array([1, 1])] * 5)
    y = tf.nn.conv2d(x, K32, np.int64(1), "SAME")  # TensorFlow takes a NumPy stride
    assert y.shape == (1, 5, 5, 2)


def test_an_odd_output_shape_gets_tensorflows_own_error_not_the_lanes() -> None:
    # an array inside output_shape: the lane's check must not raise its own error
    x, f = tf.ones([1, 3, 3, 8]), tf.ones([3, 3, 4, 8])
    odd = [1, np.array([6, 6]), 6, 4]
    with convfix.override(mode="off"), pytest.raises(Exception) as bare:
        tf.nn.conv2d_transpose(x, f, odd, 2, "SAME")
    with pytest.raises(Exception) as patched:
        tf.nn.conv2d_transpose(x, f, odd, 2, "SAME")
    assert (type(patched.value), str(patched.value)) == (type(bare.value), str(bare.value))
