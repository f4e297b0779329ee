"""The guard: calls TF 2.21 (oneDNN on) aborts on or answers wrongly never reach it.

Each abort case runs twice in a fresh interpreter: without convfix (to pin down that
TensorFlow really aborts, so the test would notice a TensorFlow that stopped doing so)
and with convfix (ConvFixError, process alive).
"""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

import convfix
from convfix.testing import capture_events
from tests.subproc import run_python

pytestmark = pytest.mark.compat  # the version matrix runs all of these

ABORTS = {
    "conv2d_rank3": "tf.nn.conv2d(tf.ones([10, 10, 3]), tf.ones([3, 3, 3, 4]), 1, 'SAME')",
    "conv1d_rank2": "tf.nn.conv1d(tf.ones([10, 3]), tf.ones([3, 3, 4]), 1, 'SAME')",
    "conv3d_rank3": "tf.nn.conv3d(tf.ones([10, 10, 3]), tf.ones([3, 3, 3, 3, 4]), [1]*5, 'SAME')",
    "convolution_rank3": "tf.nn.convolution(tf.ones([10, 10, 3]), tf.ones([3, 3, 3, 4]))",
    "depthwise_rank3": (
        "tf.nn.depthwise_conv2d(tf.ones([10, 10, 3]), tf.ones([3, 3, 3, 2]), [1]*4, 'SAME')"
    ),
    "compat_v1_conv2d_rank2": (
        "tf.compat.v1.nn.conv2d(tf.ones([10, 3]), tf.ones([3, 3, 3, 4]), [1]*4, 'SAME')"
    ),
}

CHILD = """
import os
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
{prelude}
import tensorflow as tf
try:
    y = {call}
    print("SHAPE", list(y.shape))
except Exception as e:
    print("RAISED", type(e).__name__)
"""
# With every repairing policy off, what is left is the guard alone.
GUARD_ONLY = (
    "import convfix.auto, convfix\n"
    "guard_only = convfix.override(policies={'batch_dim': 'off', 'padding': 'off'})\n"
    "guard_only.__enter__()"
)


@pytest.mark.subprocess
@pytest.mark.parametrize("name", sorted(ABORTS))
def test_call_that_aborts_tensorflow_is_refused_by_the_guard(name: str) -> None:
    bare = run_python(CHILD.format(prelude="", call=ABORTS[name]))
    assert bare.returncode == -6, f"TensorFlow no longer aborts on {name}: {bare.stdout}"
    guarded = run_python(CHILD.format(prelude=GUARD_ONLY, call=ABORTS[name]))
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    assert "RAISED ConvFixError" in guarded.stdout


@pytest.mark.subprocess
@pytest.mark.parametrize("name", sorted(ABORTS))
def test_call_that_aborts_tensorflow_is_repaired_or_refused_by_default(name: str) -> None:
    guarded = run_python(CHILD.format(prelude="import convfix.auto", call=ABORTS[name]))
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    assert "SHAPE" in guarded.stdout or "RAISED ConvFixError" in guarded.stdout


GARBAGE = [
    # (call, the shape TF with oneDNN returns, the shape that is right)
    ("tf.nn.conv2d(tf.ones([1, 2, 2, 3]), tf.ones([3, 3, 3, 4]), 1, 'VALID')", None),
    ("tf.nn.conv2d(tf.ones([1, 4, 4, 3]), tf.ones([3, 3, 3, 4]), 1, 'VALID', dilations=2)", None),
    ("tf.nn.conv3d(tf.ones([1, 2, 2, 2, 3]), tf.ones([3, 3, 3, 3, 4]), [1]*5, 'VALID')", None),
    ("tf.nn.depthwise_conv2d(tf.ones([1, 2, 2, 3]), tf.ones([3, 3, 3, 2]), [1]*4, 'VALID')", None),
    ("tf.nn.conv3d(tf.ones([10, 10, 10, 3]), tf.ones([3, 3, 3, 3, 4]), [1]*5, 'VALID')", None),
    (
        "tf.nn.depthwise_conv2d(tf.ones([2, 10, 10, 10, 3]), tf.ones([3, 3, 3, 2]), [1]*4,"
        " 'VALID')",
        None,
    ),
]


@pytest.mark.parametrize("call", [c for c, _ in GARBAGE])
def test_call_tensorflow_answers_with_wrong_shape_is_refused_by_the_guard(call: str) -> None:
    with (
        convfix.override(policies={"batch_dim": "off", "padding": "off"}),
        pytest.raises(convfix.ConvFixError) as raised,
    ):
        eval(call)
    assert "shape" in str(raised.value)


def test_garbage_cases_really_are_garbage_without_convfix() -> None:
    # Pins the premise: if TensorFlow fixes these, the guard's refusal should be revisited.
    code = CHILD.format(prelude="", call=GARBAGE[0][0])
    out = run_python(code)
    assert "SHAPE [1, 2, 2, 3]" in out.stdout


EMPTY = [
    ("tf.nn.conv2d(tf.ones([0, 10, 10, 3]), tf.ones([3, 3, 3, 4]), 1, 'SAME')", [0, 10, 10, 4]),
    ("tf.nn.conv2d(tf.ones([0, 10, 10, 3]), tf.ones([3, 3, 3, 4]), 2, 'VALID')", [0, 4, 4, 4]),
    ("tf.nn.conv2d(tf.ones([1, 0, 0, 3]), tf.ones([3, 3, 3, 4]), 1, 'SAME')", [1, 0, 0, 4]),
    ("tf.nn.conv1d(tf.ones([0, 10, 3]), tf.ones([3, 3, 5]), 1, 'SAME')", [0, 10, 5]),
    (
        "tf.nn.conv3d(tf.ones([0, 4, 4, 4, 3]), tf.ones([3, 3, 3, 3, 2]), [1]*5, 'SAME')",
        [0, 4, 4, 4, 2],
    ),
    (
        "tf.nn.depthwise_conv2d(tf.ones([0, 10, 10, 3]), tf.ones([3, 3, 3, 2]), [1]*4, 'SAME')",
        [0, 10, 10, 6],
    ),
    (
        "tf.nn.separable_conv2d(tf.ones([0, 8, 8, 3]), tf.ones([3, 3, 3, 2]),"
        " tf.ones([1, 1, 6, 5]), [1]*4, 'SAME')",
        [0, 8, 8, 5],
    ),
    ("tf.nn.convolution(tf.ones([0, 10, 10, 3]), tf.ones([3, 3, 3, 4]))", [0, 8, 8, 4]),
]


@pytest.mark.parametrize(("call", "right"), EMPTY)
def test_empty_input_is_answered_with_the_right_shape(call: str, right: list[int]) -> None:
    with capture_events() as captured:
        y = eval(call)
    assert list(y.shape) == right
    assert y.dtype == tf.float32
    assert captured[0]["reason"] == "empty_input"
    assert captured[0]["after"] == {"output_shape": right}


def test_empty_input_result_has_zero_gradients_not_none() -> None:
    x = tf.ones([0, 6, 6, 3])
    k = tf.Variable(tf.ones([3, 3, 3, 4]))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME"))
    grad = tape.gradient(y, k)
    assert grad is not None
    assert float(tf.reduce_sum(tf.abs(grad))) == 0.0


def test_refusal_names_argument_shape_and_what_would_be_valid() -> None:
    with (
        convfix.override(policies={"batch_dim": "off"}),
        pytest.raises(convfix.ConvFixError) as raised,
    ):
        tf.nn.conv2d(tf.ones([10, 10, 3]), tf.ones([3, 3, 3, 4]), 1, "SAME")
    message = str(raised.value)
    assert "input has shape [10, 10, 3] (rank 3), one short of the rank 4 (NHWC)" in message
    assert "abort the whole process" in message
    assert 'policies.batch_dim.mode = "fix"' in message


def test_refusal_is_logged_as_an_event() -> None:
    with (
        convfix.override(policies={"batch_dim": "off"}),
        capture_events() as captured,
        pytest.raises(convfix.ConvFixError),
    ):
        tf.nn.conv2d(tf.ones([10, 10, 3]), tf.ones([3, 3, 3, 4]), 1, "SAME")
    assert captured[0]["event"] == "convfix.refused"
    assert captured[0]["reason"] == "missing_batch_dim"
    assert captured[0]["level"] == "error"


def test_refusal_of_a_small_input_names_input_kernel_and_padding() -> None:
    with (
        convfix.override(policies={"padding": "off"}),
        pytest.raises(convfix.ConvFixError) as raised,
    ):
        tf.nn.conv2d(tf.ones([1, 4, 4, 3]), tf.ones([3, 3, 3, 4]), 1, "VALID", dilations=2)
    message = str(raised.value)
    assert "input spatial size [4, 4] is smaller than the dilated kernel [5, 5]" in message
    assert 'policies.padding.mode = "fix"' in message


def test_guard_refuses_in_warn_mode_too() -> None:
    with convfix.override(mode="warn"), pytest.raises(convfix.ConvFixError):
        tf.nn.conv2d(tf.ones([1, 2, 2, 3]), tf.ones([3, 3, 3, 4]), 1, "VALID")


def test_same_padding_on_small_input_is_valid_and_untouched() -> None:
    with capture_events() as captured:
        y = tf.nn.conv2d(tf.ones([1, 2, 2, 3]), tf.ones([3, 3, 3, 4]), 1, "SAME")
    assert list(y.shape) == [1, 2, 2, 4]
    assert captured == []


def test_valid_grouped_convolution_is_untouched() -> None:
    with capture_events() as captured:
        y = tf.nn.conv2d(tf.ones([1, 8, 8, 6]), tf.ones([3, 3, 3, 4]), 1, "SAME")
    assert list(y.shape) == [1, 8, 8, 4]
    assert captured == []


def test_extra_leading_batch_dims_are_valid_and_untouched() -> None:
    with capture_events() as captured:
        y = tf.nn.conv2d(tf.ones([2, 1, 10, 10, 3]), tf.ones([3, 3, 3, 4]), 1, "VALID")
    assert list(y.shape) == [2, 1, 8, 8, 4]
    assert captured == []


@pytest.mark.parametrize(
    "call",
    [
        "tf.nn.depthwise_conv2d(tf.ones([1, 5, 5, 1]), tf.ones([1, 1, 1, 1]), [1, 3, 3, 1],"
        " 'SAME', dilations=[2, 2])",
        "tf.nn.depthwise_conv2d(tf.ones([1, 8, 8, 1]), tf.ones([3, 3, 1, 1]), [1, 2, 2, 1],"
        " 'VALID', dilations=[2, 2])",
        "tf.nn.separable_conv2d(tf.ones([1, 8, 8, 1]), tf.ones([3, 3, 1, 1]),"
        " tf.ones([1, 1, 1, 2]), [1, 2, 2, 1], 'SAME', dilations=[2, 2])",
        "tf.compat.v1.nn.depthwise_conv2d(tf.ones([1, 8, 8, 1]), tf.ones([3, 3, 1, 1]),"
        " [1, 2, 2, 1], 'SAME', rate=[2, 2])",
    ],
)
def test_depthwise_with_strides_and_dilations_is_refused_not_garbage(call: str) -> None:
    with pytest.raises(convfix.ConvFixError, match=r"strides .* together with dilations"):
        eval(call)


def test_empty_batch_with_an_impossible_grouping_is_not_answered() -> None:
    # 4 channels / filter in-channels 2 = 2 groups, but 3 output channels do not split in 2
    with pytest.raises((convfix.ConvFixError, tf.errors.InvalidArgumentError)):
        tf.nn.conv2d(tf.zeros([0, 5, 5, 4]), tf.ones([3, 3, 2, 3]), 1, "SAME")


# glibc notices the heap corruption at once only with its debugging allocator; without it
# the process may die later, or run on corrupted.
MALLOC_DEBUG = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"
CONV3D_EMPTY_WINDOW = (
    "tf.nn.conv3d(tf.ones([1, 1, 5, 2, 2]), tf.ones([2, 3, 1, 2, 2]), [1, 4, 1, 4, 1], 'SAME',"
    " dilations=[1, 2, 2, 1, 1])"
)


@pytest.mark.subprocess
@pytest.mark.skipif(
    not tf.__version__.startswith("2.21."),
    reason="measured on TF 2.21 (TF 2.12 ran this call without a crash: a sample, not a proof)",
)
def test_tensorflow_corrupts_memory_on_conv3d_dilated_past_the_input() -> None:
    if not os.path.exists(MALLOC_DEBUG):
        pytest.skip("glibc's debugging allocator is not installed here")
    env = {"LD_PRELOAD": MALLOC_DEBUG, "MALLOC_CHECK_": "3"}
    # Which bytes the kernel overwrites depends on its threads: seen to pass unharmed once
    # in a loaded run, so up to three tries
    for _ in range(3):
        bare = run_python(CHILD.format(prelude="", call=CONV3D_EMPTY_WINDOW), env=env)
        if bare.returncode == -6:
            break
    assert bare.returncode == -6, f"TensorFlow no longer corrupts memory here: {bare.stdout}"


@pytest.mark.subprocess
def test_conv3d_dilated_kernel_longer_than_the_input_is_refused_before_it_corrupts_memory() -> None:
    if not os.path.exists(MALLOC_DEBUG):
        pytest.skip("glibc's debugging allocator is not installed here")
    env = {"LD_PRELOAD": MALLOC_DEBUG, "MALLOC_CHECK_": "3"}
    guarded = run_python(CHILD.format(prelude=GUARD_ONLY, call=CONV3D_EMPTY_WINDOW), env=env)
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    assert "RAISED ConvFixError" in guarded.stdout


def test_conv3d_dilated_past_the_input_names_the_way_that_is_safe() -> None:
    x, k = tf.ones([1, 1, 5, 2, 2]), tf.ones([2, 3, 1, 2, 2])
    with pytest.raises(convfix.ConvFixError, match=r"tf\.nn\.convolution"):
        tf.nn.conv3d(x, k, [1, 1, 1, 1, 1], "SAME", dilations=[1, 2, 2, 1, 1])
    y = tf.nn.convolution(x, k, padding="SAME", dilations=[2, 2, 1])  # dilates by itself
    assert y.shape == (1, 1, 5, 2, 2)


@pytest.mark.subprocess
def test_conv3d_transpose_of_an_empty_input_is_answered_not_crashed() -> None:
    # TF 2.21's Conv3D backprop kernel crashes (SIGSEGV) on it, with oneDNN off in every
    # dtype and with it on in float64 (found by convfix doctor --sweep)
    code = """
import convfix.auto
import tensorflow as tf
x, f = tf.ones([1, 2, 0, 1, 1], tf.float64), tf.ones([3, 3, 3, 2, 1], tf.float64)
y = tf.nn.conv3d_transpose(x, f, [1, 5, 2, 5, 2], [2, 2, 3], "VALID")
print("RESULT", list(y.shape), float(tf.reduce_sum(tf.abs(y))))
"""
    for onednn in ("0", "1"):
        done = run_python(code, env={"TF_ENABLE_ONEDNN_OPTS": onednn})
        assert done.returncode == 0, done.stderr[-2000:]
        assert "RESULT [1, 5, 2, 5, 2] 0.0" in done.stdout
        assert '"action": "answer_empty"' in done.stderr


def test_conv3d_transpose_of_an_empty_input_with_an_impossible_output_shape_is_refused() -> None:
    x, f = tf.ones([1, 2, 0, 1, 1], tf.float64), tf.ones([3, 3, 3, 2, 1], tf.float64)
    with pytest.raises(convfix.ConvFixError, match="holds no elements"):
        tf.nn.conv3d_transpose(x, f, [1, 9, 2, 5, 2], [2, 2, 3], "VALID")


def test_an_empty_answer_undoes_the_repairs_made_before_it() -> None:
    # one example missing its batch, with an empty height: the batch is added, the empty
    # input answered, and the added batch taken off again (as a dispatched call's is)
    with capture_events() as captured:
        y = tf.nn.conv2d(tf.ones([0, 10, 3]), tf.ones([3, 3, 3, 4]), 1, "SAME")
    assert y.shape == (0, 10, 4)
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0":  # oneDNN: guard answers it
        assert [e["action"] for e in captured] == ["add_batch_dim", "answer_empty"]
