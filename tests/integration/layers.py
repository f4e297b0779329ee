"""Keras layers the tests share."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


class RawConv(keras.layers.Layer):
    """A custom layer that calls tf.nn.conv2d on whatever dtype it is given (autocast off:
    otherwise Keras casts inputs to the layer's float32 compute dtype first)."""

    def __init__(self, filters: int = 4, **kwargs: Any) -> None:
        super().__init__(autocast=False, **kwargs)
        self.filters = filters

    def build(self, input_shape: Any) -> None:
        shape = (3, 3, int(input_shape[-1]), self.filters)
        self.kernel = self.add_weight(shape=shape, name="kernel")

    def call(self, inputs: Any) -> Any:
        return tf.nn.conv2d(inputs, self.kernel, 1, "SAME")
