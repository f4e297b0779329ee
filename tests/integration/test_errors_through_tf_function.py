"""A ConvFixError or ConfigError keeps its type through tf.function and Keras fit.

AutoGraph re-creates few exception types; any other one raised while it traces would reach
the caller as its ``StagingError``, which no ``except ValueError`` catches. convfix's two
errors carry ``ag_pass_through`` and so come out as themselves, their message ending with
the user's callsite (mapped back from AutoGraph's generated file, which the traceback shows).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import convfix
from convfix import ConfigError, ConvFixError

pytestmark = pytest.mark.compat

X = tf.ones([2, 8, 8, 3])
K = tf.ones([3, 3, 3, 1])


def refused_conv(x: Any) -> Any:
    """A depthwise call with strides and dilations both above 1: the guard refuses it on
    every build (TensorFlow would answer with wrong values)."""
    return tf.nn.depthwise_conv2d(x, K, [1, 2, 2, 1], "SAME", dilations=[2, 2])


def _line_of(function: Callable[..., Any], text: str) -> str:
    """``"path:line"`` of the line of ``function``'s source that contains ``text``."""
    lines, first = inspect.getsourcelines(function)
    offset = next(i for i, line in enumerate(lines) if text in line)
    return f"{function.__code__.co_filename}:{first + offset}"


def _caught_as_value_error(run: Callable[[], Any]) -> ValueError:
    try:
        run()
    except ValueError as error:  # what code written for TensorFlow's argument errors catches
        return error
    raise AssertionError("no ValueError was raised")


def test_an_eager_refusal_is_a_value_error_naming_its_callsite() -> None:
    # when an eager call is refused
    error = _caught_as_value_error(lambda: refused_conv(X))
    # then it is convfix's error, and its message ends with the line that made the call
    assert isinstance(error, ConvFixError)
    assert str(error).endswith(f"Called from {_line_of(refused_conv, 'depthwise_conv2d(')}")


def test_a_refusal_while_tracing_reaches_the_caller_as_convfix_error() -> None:
    # given a tf.function whose body makes a call convfix refuses
    traced = tf.function(refused_conv)
    # when it is called (and so traced), then the error is ConvFixError, not StagingError
    with pytest.raises(ConvFixError) as raised:
        traced(X)
    assert "strides [2, 2] together with dilations [2, 2]" in str(raised.value)
    # and the message names the user's line, not AutoGraph's generated file
    assert str(raised.value).endswith(f"Called from {_line_of(refused_conv, 'depthwise_conv2d(')}")
    assert "__autograph_generated_file" not in str(raised.value)


def test_a_refusal_while_tracing_is_caught_by_except_value_error() -> None:
    traced = tf.function(refused_conv)

    error = _caught_as_value_error(lambda: traced(X))

    assert isinstance(error, ConvFixError)


def test_a_strict_refusal_while_tracing_keeps_its_type() -> None:
    # given strict mode and a tf.function making a call TensorFlow itself rejects
    @tf.function
    def lower_case_padding(x: Any) -> Any:
        return tf.nn.conv2d(x, tf.ones([3, 3, 3, 2]), 1, "same")

    # when it is traced, then the error is ConvFixError
    with convfix.override(mode="strict"), pytest.raises(ConvFixError) as raised:
        lower_case_padding(X)
    assert "convfix (strict) stopped conv2d" in str(raised.value)
    assert str(raised.value).endswith(
        f"Called from {_line_of(lower_case_padding.python_function, 'conv2d(')}"
    )


def test_a_config_error_while_tracing_reaches_the_caller_as_config_error() -> None:
    # given a tf.function whose body overrides convfix with a mode that does not exist
    @tf.function
    def badly_configured(x: Any) -> Any:
        with convfix.override(mode="sometimes"):
            return tf.nn.conv2d(x, tf.ones([3, 3, 3, 2]), 1, "SAME")

    # when it is traced, then the error is ConfigError (a ValueError), naming the bad value
    error = _caught_as_value_error(lambda: badly_configured(X))
    assert isinstance(error, ConfigError)
    assert "override: mode:" in str(error)


# -- Keras fit ------------------------------------------------------------------------


class StridedDilatedDepthwise(keras.layers.Layer):
    """A custom layer calling tf.nn.depthwise_conv2d with strides and dilations both 2."""

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(shape=(3, 3, int(input_shape[-1]), 1), name="kernel")

    def call(self, inputs: Any) -> Any:
        return tf.nn.depthwise_conv2d(inputs, self.kernel, [1, 2, 2, 1], "SAME", dilations=[2, 2])


class LowerCasePadding(keras.layers.Layer):
    """A custom layer calling tf.nn.conv2d with padding "same" (refused in strict mode)."""

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(shape=(3, 3, int(input_shape[-1]), 2), name="kernel")

    def call(self, inputs: Any) -> Any:
        return tf.nn.conv2d(inputs, self.kernel, 1, "same")


@pytest.mark.parametrize(
    ("layer", "built_in", "trained_in", "text"),
    [
        (StridedDilatedDepthwise, "off", "fix", "depthwise_conv2d("),
        (LowerCasePadding, "fix", "strict", "conv2d("),
    ],
    ids=["guard_refusal", "strict_mode"],
)
def test_keras_fit_raises_convfix_error_naming_the_layers_line(
    layer: type[keras.layers.Layer], built_in: str, trained_in: str, text: str
) -> None:
    # given a model built where convfix lets its custom layer's call through
    with convfix.override(mode=built_in):
        model = keras.Sequential(
            [keras.Input((8, 8, 3)), layer(), keras.layers.Flatten(), keras.layers.Dense(1)]
        )
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 8, 8, 3), np.float32), np.ones((8, 1), np.float32)
    # when it trains where convfix refuses that call (Keras traces its step in a tf.function)
    with convfix.override(mode=trained_in):
        error = _caught_as_value_error(lambda: model.fit(x, y, batch_size=4, verbose=0))
    # then the caller gets ConvFixError, naming the layer's line (Keras 3 re-creates the
    # error with the layer's arguments added to the message; the type stays)
    assert isinstance(error, ConvFixError)
    assert f"Called from {_line_of(layer.call, text)}" in str(error)
