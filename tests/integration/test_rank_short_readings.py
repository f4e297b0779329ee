"""An input one rank short, read only the ways TensorFlow would accept (guard/rules.py
``rank_short_readings``): a batch missing its channel axis is refused by default, naming
the one valid reading, and repaired with the layout policy on; a refusal names the policy
that refused and the caller's own shapes."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import convfix
from convfix.integrations.tensorflow import onednn_enabled
from convfix.sweep import reference as ref
from convfix.testing import capture_events

pytestmark = pytest.mark.compat

# Rank-short calls abort only with oneDNN; without it TensorFlow raises its own error,
# which convfix leaves alone unless a policy is on to repair it.
ONEDNN = onednn_enabled()


def _grayscale() -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(3)
    x = tf.constant(rng.standard_normal([32, 28, 28]), tf.float32)  # no trailing 1
    k = tf.constant(rng.standard_normal([3, 3, 1, 32]), tf.float32)
    return x, k


@pytest.mark.skipif(not ONEDNN, reason="without oneDNN TensorFlow raises its own error")
def test_a_batch_missing_its_channel_axis_is_refused_naming_the_one_valid_reading() -> None:
    x, k = _grayscale()
    with capture_events() as captured, pytest.raises(convfix.ConvFixError) as refused:
        tf.nn.conv2d(x, k, 1, "VALID")
    message = str(refused.value)
    assert "input[..., None]" in message
    assert "policies.layout.mode" in message  # the key that turns the repair on
    assert "one example of shape" not in message  # no reading TensorFlow would reject
    assert [(e["policy"], e["reason"]) for e in captured] == [("layout", "missing_channel_dim")]


def test_with_layout_on_it_is_repaired_exactly_as_input_with_its_channel_axis() -> None:
    x, k = _grayscale()
    with convfix.override(policies={"layout": "fix"}), capture_events() as captured:
        y = tf.nn.conv2d(x, k, 1, "VALID")
        traced = tf.function(lambda a: tf.nn.conv2d(a, k, 1, "VALID"))(x)
    assert y.shape == (32, 26, 26, 32)
    expected = ref.conv(x.numpy()[..., None], k.numpy(), padding="VALID")
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(traced.numpy(), y.numpy())
    assert {(e["policy"], e["reason"], e["action"]) for e in captured} == {
        ("layout", "missing_channel_dim", "add_channel_dim")
    }


def test_the_repair_keeps_gradients() -> None:
    x, k = _grayscale()
    with convfix.override(policies={"layout": "fix"}), tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.nn.conv2d(x, k, 1, "VALID")
    grad = tape.gradient(y, x)
    assert grad is not None and grad.shape == x.shape


@pytest.mark.skipif(not ONEDNN, reason="without oneDNN TensorFlow raises its own error")
def test_two_valid_readings_are_refused_by_batch_dim_naming_both() -> None:
    x = tf.ones([32, 28, 28])
    with capture_events() as captured, pytest.raises(convfix.ConvFixError, match="input\\[None\\]"):
        tf.nn.conv2d(x, tf.ones([3, 3, 1, 28]), 1, "VALID")
    assert [(e["policy"], e["reason"]) for e in captured] == [("batch_dim", "missing_batch_dim")]


@pytest.mark.skipif(not ONEDNN, reason="without oneDNN TensorFlow raises its own error")
def test_a_refusal_names_the_policy_that_refused_and_the_callers_shapes() -> None:
    # no reading of [128, 128, 4] fits a 3-channel filter, layout on or off
    with (
        convfix.override(policies={"layout": "fix"}),
        capture_events() as captured,
        pytest.raises(convfix.ConvFixError) as refused,
    ):
        tf.nn.conv2d(tf.ones([128, 128, 4]), tf.ones([3, 3, 3, 64]), 1, "SAME")
    message = str(refused.value)
    assert "[128, 128, 4]" in message and "[1, 128, 128, 4]" not in message
    (event,) = captured
    assert (event["event"], event["policy"], event["reason"]) == (
        "convfix.refused",
        "guard",
        "bad_input_rank",
    )


def test_one_channels_first_image_is_still_batched_then_transposed_by_layout() -> None:
    rng = np.random.default_rng(5)
    x = tf.constant(rng.standard_normal([3, 8, 8]), tf.float32)
    k = tf.constant(rng.standard_normal([3, 3, 3, 4]), tf.float32)
    with convfix.override(policies={"layout": "fix"}), capture_events() as captured:
        y = tf.nn.conv2d(x, k, 1, "SAME")
    expected = ref.conv(x.numpy()[None], k.numpy(), padding="SAME", data_format="NCHW")[0]
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert [e["policy"] for e in captured] == ["batch_dim", "layout"]
