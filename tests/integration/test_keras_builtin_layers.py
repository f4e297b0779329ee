"""What convfix does for Keras 3's built-in conv layers, claim by claim (README, "Use"):
they cast float inputs to their compute dtype and check ranks and sizes themselves; what
they pass on to TensorFlow is covered like any call."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from convfix import events
from convfix.testing import capture_events

pytestmark = pytest.mark.skipif(
    int(keras.__version__.split(".")[0]) < 3, reason="the claims are Keras 3's"
)


@pytest.mark.parametrize("dtype", [tf.uint8, tf.int32])
def test_an_integer_input_reaches_tensorflow_and_is_repaired_naming_the_layer(
    dtype: tf.DType,
) -> None:
    layer = keras.layers.Conv2D(4, 3, name="edges")
    events.reset()  # each parameter's first repair written in full, not folded
    with capture_events() as captured:
        y = layer(tf.ones([1, 8, 8, 3], dtype))
    assert (y.shape, y.dtype) == ((1, 6, 6, 4), tf.float32)
    assert [(e["event"], e["op"], e["layer"], e["reason"]) for e in captured] == [
        ("convfix.intervention", "convolution", "edges", "dtype_mismatch")
    ]


@pytest.mark.parametrize("dtype", [tf.float64, tf.float16])
def test_float_inputs_keras_casts_itself_are_left_alone(dtype: tf.DType) -> None:
    with capture_events() as captured:
        y = keras.layers.Conv2D(4, 3)(tf.ones([1, 8, 8, 3], dtype))
    assert y.dtype == tf.float32
    assert captured == []


@pytest.mark.parametrize(
    ("layer", "x"),
    [
        (keras.layers.Conv2D(4, 3), tf.ones([8, 8, 3])),  # rank 3: Keras checks min_ndim
        (keras.layers.Conv2D(4, 5), tf.ones([1, 3, 3, 3])),  # smaller than the VALID kernel
    ],
    ids=["rank_short", "kernel_past_input"],
)
def test_shape_errors_are_keras_own_before_tensorflow_is_called(
    layer: keras.layers.Layer, x: tf.Tensor
) -> None:
    with capture_events() as captured, pytest.raises(ValueError):
        layer(x)
    assert captured == []
