"""Every op in the coverage list: healthy calls untouched, dtype mismatches repaired once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from convfix.errors import ConvFixError
from convfix.testing import capture_events
from tests.integration.conftest import unpatched
from tests.integration.layers import RawConv

pytestmark = pytest.mark.compat  # the version matrix runs all of these

rng = np.random.default_rng(7)


def t(*shape: int, dtype: Any = tf.float32) -> tf.Tensor:
    return tf.constant(rng.standard_normal(shape), dtype=dtype)


@dataclass
class Case:
    name: str
    function: Callable[[], Callable[..., Any]]  # looked up at call time (the patched name)
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _cases() -> list[Case]:
    x2, k2 = t(2, 8, 8, 3), t(3, 3, 3, 4)
    return [
        Case("conv1d", lambda: tf.nn.conv1d, (t(2, 10, 3), t(3, 3, 4), 1, "SAME"), {}),
        Case("conv2d", lambda: tf.nn.conv2d, (x2, k2, 1, "SAME"), {}),
        Case("conv2d_valid", lambda: tf.nn.conv2d, (x2, k2, 2, "VALID"), {}),
        Case(
            "conv3d",
            lambda: tf.nn.conv3d,
            (t(1, 6, 6, 6, 2), t(3, 3, 3, 2, 4), [1] * 5, "SAME"),
            {},
        ),
        Case("convolution", lambda: tf.nn.convolution, (x2, k2), {"padding": "VALID"}),
        Case(
            "depthwise_conv2d",
            lambda: tf.nn.depthwise_conv2d,
            (x2, t(3, 3, 3, 2), [1, 1, 1, 1], "SAME"),
            {},
        ),
        Case(
            "separable_conv2d",
            lambda: tf.nn.separable_conv2d,
            (x2, t(3, 3, 3, 2), t(1, 1, 6, 5), [1, 1, 1, 1], "SAME"),
            {},
        ),
        Case(
            "conv2d_transpose",
            lambda: tf.nn.conv2d_transpose,
            (t(2, 8, 8, 4), t(3, 3, 3, 4), [2, 8, 8, 3], 1),
            {},
        ),
        Case(
            "conv1d_transpose",
            lambda: tf.nn.conv1d_transpose,
            (t(2, 10, 4), t(3, 3, 4), [2, 10, 3], 1),
            {},
        ),
        Case(
            "conv3d_transpose",
            lambda: tf.nn.conv3d_transpose,
            (t(1, 6, 6, 6, 4), t(3, 3, 3, 2, 4), [1, 6, 6, 6, 2], 1),
            {},
        ),
        Case(
            "conv_transpose",
            lambda: tf.nn.conv_transpose,
            (t(2, 8, 8, 4), t(3, 3, 3, 4), [2, 8, 8, 3], 1),
            {},
        ),
        Case(
            "compat.v1.conv2d", lambda: tf.compat.v1.nn.conv2d, (x2, k2, [1, 1, 1, 1], "SAME"), {}
        ),
        Case(
            "compat.v1.conv2d_filter_kw",
            lambda: tf.compat.v1.nn.conv2d,
            (x2,),
            {"filter": k2, "strides": 1, "padding": "SAME"},
        ),
        Case("keras.ops.conv", lambda: keras.ops.conv, (x2, k2), {"padding": "same"}),
        Case(
            "keras.ops.depthwise_conv",
            lambda: keras.ops.depthwise_conv,
            (x2, t(3, 3, 3, 2)),
            {"padding": "valid"},
        ),
        Case(
            "keras.ops.separable_conv",
            lambda: keras.ops.separable_conv,
            (x2, t(3, 3, 3, 2), t(1, 1, 6, 5)),
            {},
        ),
        Case(
            "keras.ops.conv_transpose",
            lambda: keras.ops.conv_transpose,
            (t(2, 8, 8, 4), t(3, 3, 3, 4)),
            {"padding": "same"},
        ),
    ]


CASES = {c.name: c for c in _cases()}


def _as64(value: Any) -> Any:
    return tf.cast(value, tf.float64)


def _case(name: str) -> Case:
    """The case, skipped where it needs Keras 3's keras.ops (Keras 2 on TF 2.12-2.15)."""
    if name.startswith("keras.ops.") and not hasattr(keras, "ops"):
        pytest.skip(f"keras.ops exists from Keras 3 (Keras {keras.__version__} here)")
    return CASES[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_healthy_call_is_bit_identical_to_tensorflow_and_logs_nothing(name: str) -> None:
    case = _case(name)
    with capture_events() as captured:
        patched = case.function()(*case.args, **case.kwargs)
    original = _call_unpatched(case, case.args)
    np.testing.assert_array_equal(patched.numpy(), original.numpy())
    assert captured == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_dtype_mismatch_is_repaired_exactly_and_logged_once(name: str) -> None:
    # given: a float64 input with float32 filters, which TensorFlow refuses
    case = _case(name)
    mixed = (_as64(case.args[0]), *case.args[1:])
    # when: called twice from one line through convfix
    with capture_events() as captured:
        first, second = (case.function()(*mixed, **case.kwargs) for _ in range(2))
    # then: the result is the call repaired by hand (the input cast to Keras' compute dtype)
    by_hand = _call_unpatched(case, (tf.cast(mixed[0], tf.float32), *mixed[1:]))
    assert first.dtype == tf.float32
    np.testing.assert_array_equal(first.numpy(), by_hand.numpy())
    np.testing.assert_array_equal(second.numpy(), by_hand.numpy())
    interventions = [e for e in captured if e["event"] == "convfix.intervention"]
    assert len(interventions) == 1
    assert interventions[0]["policy"] == "dtype"
    assert interventions[0]["reason"] == "dtype_mismatch"
    assert interventions[0]["before"]["input"] == "float64"  # type: ignore[index]


def _call_unpatched(case: Case, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
    """The same call with every convfix wrapper bypassed."""
    import convfix

    with convfix.override(mode="off"):
        return case.function()(*args, **(case.kwargs if kwargs is None else kwargs))


def test_override_off_reaches_the_very_function_tensorflow_exports() -> None:
    x, k = t(1, 8, 8, 3), t(3, 3, 3, 4)
    direct = unpatched(tf.nn.conv2d)(x, k, 1, "SAME")
    np.testing.assert_array_equal(_call_unpatched(CASES["conv2d"], (x, k, 1, "SAME")), direct)
    # A call fix mode repairs (lower-case padding) reaches TensorFlow as made: its own
    # error, not a repaired result, and no event.
    with capture_events() as captured, pytest.raises(Exception) as raised:
        _call_unpatched(CASES["conv2d"], (x, k, 1, "same"))
    assert not isinstance(raised.value, ConvFixError)
    assert "same" in str(raised.value).lower()
    assert captured == []


KERAS_LAYERS = {
    "Conv1D": (lambda: keras.layers.Conv1D(4, 3), (2, 10, 3)),
    "Conv2D": (lambda: keras.layers.Conv2D(4, 3), (2, 8, 8, 3)),
    "Conv3D": (lambda: keras.layers.Conv3D(4, 3), (1, 6, 6, 6, 2)),
    "DepthwiseConv2D": (lambda: keras.layers.DepthwiseConv2D(3), (2, 8, 8, 3)),
    "SeparableConv2D": (lambda: keras.layers.SeparableConv2D(4, 3), (2, 8, 8, 3)),
    "Conv2DTranspose": (lambda: keras.layers.Conv2DTranspose(4, 3), (2, 8, 8, 3)),
}


@pytest.mark.parametrize("name", sorted(KERAS_LAYERS))
def test_keras_layer_healthy_call_is_bit_identical_and_logs_nothing(name: str) -> None:
    make, shape = KERAS_LAYERS[name]
    layer = make()
    x = t(*shape)
    layer.build(x.shape)
    with capture_events() as captured:
        patched = layer(x)
    import convfix

    with convfix.override(mode="off"):
        original = layer(x)
    np.testing.assert_array_equal(patched.numpy(), original.numpy())
    assert captured == []


def test_custom_keras_layer_float64_input_is_repaired_and_names_the_layer() -> None:
    layer = RawConv(name="my_conv")
    x = t(2, 8, 8, 3, dtype=tf.float64)
    with capture_events() as captured:
        y = layer(x)
    # the input is cast to the layer's compute dtype
    by_hand = unpatched(tf.nn.conv2d)(tf.cast(x, tf.float32), layer.kernel, 1, "SAME")
    np.testing.assert_array_equal(y.numpy(), by_hand.numpy())
    (event,) = [e for e in captured if e["event"] == "convfix.intervention"]
    assert event["layer"] == "my_conv"
    import tests.integration.layers as layers_module

    with open(layers_module.__file__) as source:
        line = next(n for n, text in enumerate(source, 1) if "tf.nn.conv2d(" in text)
    assert event["callsite"] == f"{layers_module.__file__}:{line}"  # the user's conv call


def test_two_layers_of_the_same_shapes_are_named_apart_in_events() -> None:
    first, second = RawConv(name="first_conv"), RawConv(name="second_conv")
    x = t(2, 8, 8, 3, dtype=tf.float64)
    with capture_events() as captured:
        for _ in range(3):
            first(x)
            second(x)
    layers = sorted(str(e["layer"]) for e in captured if e["event"] == "convfix.intervention")
    assert layers == ["first_conv", "second_conv"]
