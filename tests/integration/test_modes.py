"""fix / warn / strict / off, per policy and for the whole process, and override()."""

from __future__ import annotations

import pytest
import tensorflow as tf

import convfix
from convfix.testing import capture_events

X64 = tf.ones([1, 5, 5, 3], tf.float64)
K32 = tf.ones([3, 3, 3, 2])


def test_fix_mode_repairs_and_logs_an_intervention() -> None:
    with capture_events() as captured:
        y = tf.nn.conv2d(X64, K32, 1, "SAME")
    assert y.dtype == tf.float32  # Keras' compute dtype (target = "policy")
    assert captured[0]["event"] == "convfix.intervention"
    assert captured[0]["mode"] == "fix"
    assert captured[0]["action"] == "cast_input"


def test_warn_mode_leaves_tensorflows_error_exactly_and_logs_a_warning() -> None:
    with (
        convfix.override(mode="warn"),
        capture_events() as captured,
        pytest.raises(tf.errors.InvalidArgumentError) as raised,
    ):
        tf.nn.conv2d(X64, K32, 1, "SAME")
    assert "expected to be a double tensor" in str(raised.value)
    assert captured[0]["event"] == "convfix.warning"
    assert captured[0]["reason"] == "dtype_mismatch"


def test_strict_mode_names_problem_fix_and_key_chained_from_tensorflows_error() -> None:
    with convfix.override(mode="strict"), pytest.raises(convfix.ConvFixError) as raised:
        tf.nn.conv2d(X64, K32, 1, "SAME")
    message = str(raised.value)
    assert "dtype_mismatch" in message
    assert "cast input to float32" in message
    assert 'policies.dtype.mode = "fix"' in message
    assert isinstance(raised.value.__cause__, tf.errors.InvalidArgumentError)
    assert isinstance(raised.value, ValueError)


def test_strict_names_every_problem_it_found() -> None:
    empty64 = tf.ones([0, 5, 5, 3], tf.float64)
    with convfix.override(mode="strict"), pytest.raises(convfix.ConvFixError) as raised:
        tf.nn.conv2d(empty64, K32, 1, "SAME")
    assert "2 problem(s)" in str(raised.value)
    assert "dtype_mismatch" in str(raised.value) and "empty_input" in str(raised.value)


def test_policy_mode_off_lets_tensorflow_answer() -> None:
    with (
        convfix.override(policies={"dtype": "off"}),
        capture_events() as captured,
        pytest.raises(tf.errors.InvalidArgumentError),
    ):
        tf.nn.conv2d(X64, K32, 1, "SAME")
    assert captured == []


def test_policy_strict_under_fix_top_level_raises_only_for_that_policy() -> None:
    with convfix.override(policies={"dtype": "strict"}), pytest.raises(convfix.ConvFixError):
        tf.nn.conv2d(X64, K32, 1, "SAME")
    with convfix.override(policies={"dtype": "strict"}):
        assert tf.nn.conv2d(tf.ones([0, 5, 5, 3]), K32, 1, "SAME").shape == (0, 5, 5, 2)


def test_override_ends_with_its_block() -> None:
    with convfix.override(mode="off"), pytest.raises(tf.errors.InvalidArgumentError):
        tf.nn.conv2d(X64, K32, 1, "SAME")
    assert tf.nn.conv2d(X64, K32, 1, "SAME").dtype == tf.float32


def test_mode_off_is_pure_pass_through_even_for_unsafe_calls() -> None:
    # An empty batch is safe to pass through (TF answers with the wrong channel count, no
    # abort), so it shows that "off" skips the guard too.
    with convfix.override(mode="off"), capture_events() as captured:
        y = tf.nn.conv2d(tf.ones([0, 5, 5, 3]), K32, 1, "SAME")
    assert captured == []
    assert y.shape[-1] == 3  # TensorFlow's own (wrong) answer with oneDNN


def test_bad_override_raises_config_error_before_the_block() -> None:
    ran = False
    with (
        pytest.raises(convfix.ConfigError),
        convfix.override(policies={"dtype": {"target": "float8"}}),
    ):
        ran = True
    assert not ran


def test_dtype_target_input_and_output_input_from_override() -> None:
    x32, k64 = tf.ones([1, 5, 5, 3]), tf.ones([3, 3, 3, 2], tf.float64)
    with convfix.override(policies={"dtype": {"target": "input"}}):
        assert tf.nn.conv2d(x32, k64, 1, "SAME").dtype == tf.float32
    with convfix.override(policies={"dtype": {"target": "promote", "output": "input"}}):
        assert tf.nn.conv2d(x32, k64, 1, "SAME").dtype == tf.float32  # computed in float64


def test_uint8_images_are_cast_to_float32() -> None:
    images = tf.ones([1, 5, 5, 3], tf.uint8)
    with capture_events() as captured:
        y = tf.nn.conv2d(images, K32, 1, "SAME")
    assert y.dtype == tf.float32
    assert captured[0]["reason"] == "dtype_mismatch"
    assert captured[0]["after"] == {"input": "float32", "filter": "float32"}


def test_uint8_input_and_filter_are_promoted_to_float32() -> None:
    with capture_events() as captured:
        y = tf.nn.conv2d(
            tf.ones([1, 5, 5, 3], tf.uint8), tf.ones([3, 3, 3, 2], tf.uint8), 1, "SAME"
        )
    assert y.dtype == tf.float32
    assert captured[0]["reason"] == "unsupported_dtype"


def test_int32_conv2d_is_valid_on_cpu_and_untouched() -> None:
    with capture_events() as captured:
        y = tf.nn.conv2d(
            tf.ones([1, 5, 5, 3], tf.int32), tf.ones([3, 3, 3, 2], tf.int32), 1, "SAME"
        )
    assert y.dtype == tf.int32
    assert captured == []


def test_float16_with_bfloat16_promotes_to_float32() -> None:
    x, k = tf.ones([1, 5, 5, 3], tf.float16), tf.ones([3, 3, 3, 2], tf.bfloat16)
    with convfix.override(policies={"dtype": {"target": "promote"}}):
        assert tf.nn.conv2d(x, k, 1, "SAME").dtype == tf.float32


def test_numpy_float64_input_is_left_to_tensorflows_own_conversion() -> None:
    import numpy as np

    with capture_events() as captured:
        y = tf.nn.conv2d(np.ones([1, 5, 5, 3]), K32, 1, "SAME")
    assert y.dtype == tf.float32
    assert captured == []
