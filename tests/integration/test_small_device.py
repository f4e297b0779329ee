"""convfix.testing.small_device: a simulated small GPU beneath every Python layer.

The session has convfix patched (conftest). These tests are about the device, so convfix
is switched off around each (its wrappers then call TensorFlow straight through): its
recovery policies would otherwise answer the simulated OOMs, and learn from them. One
test turns it back on to show convfix's wrappers take the simulated error for TF's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python import pywrap_tfe
from tensorflow.python.eager import context
from tensorflow.python.ops import gen_nn_ops

import convfix
from convfix.testing import small_device
from convfix.testing.simulated_device import CUDNN_MESSAGE
from tests.integration.conftest import unpatched
from tests.subproc import run_python

ORIGINALS = (pywrap_tfe.TFE_Py_FastPathExecute, pywrap_tfe.TFE_Py_Execute)


def _normal(*shape: int, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), tf.float32)


_KERAS = keras.layers.Conv2D(4, 3, kernel_initializer="glorot_uniform")
_KERAS.build((None, 16, 16, 3))

# name -> (call for a batch size, kernel op type, output shape for a batch of 8)
CASES: dict[str, tuple[Callable[[int], Any], str, str]] = {
    "conv2d": (
        lambda b: tf.nn.conv2d(_normal(b, 16, 16, 3), _normal(3, 3, 3, 5, seed=1), 1, "SAME"),
        "Conv2D",
        "shape[8,16,16,5]",
    ),
    "conv1d": (
        lambda b: tf.nn.conv1d(_normal(b, 16, 3), _normal(3, 3, 4, seed=1), 1, "SAME"),
        "Conv2D",  # conv1d is an expanded Conv2D
        "shape[8,1,16,4]",
    ),
    "conv3d": (
        lambda b: tf.nn.conv3d(
            _normal(b, 4, 6, 6, 2), _normal(3, 3, 3, 2, 4, seed=1), [1] * 5, "SAME"
        ),
        "Conv3D",
        "shape[8,4,6,6,4]",
    ),
    "depthwise_conv2d": (
        lambda b: tf.nn.depthwise_conv2d(
            _normal(b, 16, 16, 3), _normal(3, 3, 3, 2, seed=1), [1] * 4, "SAME"
        ),
        "DepthwiseConv2dNative",
        "shape[8,16,16,6]",
    ),
    "conv2d_transpose": (
        lambda b: tf.nn.conv2d_transpose(
            _normal(b, 8, 8, 4), _normal(3, 3, 3, 4, seed=1), [b, 16, 16, 3], 2
        ),
        "Conv2DBackpropInput",
        "shape[8,16,16,3]",
    ),
    "keras_conv2d": (lambda b: _KERAS(_normal(b, 16, 16, 3)), "Conv2D", "shape[8,14,14,4]"),
}


@pytest.fixture(autouse=True)
def _tensorflow_alone() -> Any:
    with convfix.override(mode="off"):
        yield
    assert (pywrap_tfe.TFE_Py_FastPathExecute, pywrap_tfe.TFE_Py_Execute) == ORIGINALS


@pytest.mark.parametrize("name", sorted(CASES))
def test_within_capacity_is_bit_identical(name: str) -> None:
    call, op, _ = CASES[name]
    bare = call(4).numpy()
    with small_device(max_batch=4) as dev:
        limited = call(4).numpy()
    assert np.array_equal(bare, limited)
    assert dev.attempts[-1] == (op, 4)
    assert dev.ooms == 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_over_capacity_raises_a_real_oom(name: str) -> None:
    call, op, shape = CASES[name]
    with small_device(max_batch=4) as dev, pytest.raises(tf.errors.ResourceExhaustedError) as info:
        call(8)
    message = str(info.value)
    assert f"OOM when allocating tensor with {shape} and type float on " in message
    assert "/job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu" in message
    assert f"[Op:{op}]" in message
    assert dev.attempts == [(op, 8)]
    assert dev.ooms == 1


def test_tensorflows_own_python_raises_it() -> None:
    x, k = _normal(8, 16, 16, 3), _normal(3, 3, 3, 5)
    with small_device(max_batch=4), pytest.raises(tf.errors.ResourceExhaustedError) as info:
        unpatched(tf.nn.conv2d)(x, k, 1, "SAME")
    # raise_from_not_ok_status's suffix (TF 2.13 and later add " name: ")
    assert str(info.value).rstrip(": ").removesuffix(" name").endswith("[Op:Conv2D]")


def test_convfix_wrappers_take_it_for_a_real_oom() -> None:
    # Shapes no other test uses: whatever convfix learns here stays with this signature.
    x, k = _normal(8, 11, 13, 3, seed=7), _normal(3, 3, 3, 7, seed=8)
    bare = tf.nn.conv2d(x, k, 1, "SAME").numpy()
    # convfix may recover (its own policies decide how): then the answer must be right.
    unless_raised = contextlib.suppress(tf.errors.ResourceExhaustedError)
    with convfix.override(mode="fix"), small_device(max_batch=4) as dev, unless_raised:
        np.testing.assert_allclose(tf.nn.conv2d(x, k, 1, "SAME").numpy(), bare, atol=1e-5)
    assert dev.attempts[0] == ("Conv2D", 8)
    assert dev.ooms >= 1


def test_the_fallback_path_raises_as_the_c_layer_does() -> None:
    # The eager fallback goes through execute.quick_execute -> pywrap_tfe.TFE_Py_Execute.
    x, k = _normal(8, 16, 16, 3), _normal(3, 3, 3, 5)
    args = {"strides": [1] * 4, "use_cudnn_on_gpu": True, "padding": "SAME"}
    args |= {"explicit_paddings": [], "data_format": "NHWC", "dilations": [1] * 4}
    args |= {"name": None, "ctx": context.context()}
    expected = gen_nn_ops.conv2d_eager_fallback(x, k, **args)
    with small_device(max_batch=8) as dev:
        got = gen_nn_ops.conv2d_eager_fallback(x, k, **args)
    assert np.array_equal(expected.numpy(), got.numpy())
    assert dev.attempts == [("Conv2D", 8)]
    with small_device(max_batch=4), pytest.raises(tf.errors.ResourceExhaustedError) as info:
        gen_nn_ops.conv2d_eager_fallback(x, k, **args)
    assert str(info.value).endswith("by allocator cpu [Op:Conv2D]")  # C adds no " name: "


def test_max_bytes_counts_inputs_and_output() -> None:
    x, k = _normal(2, 8, 8, 3), _normal(3, 3, 3, 4)
    needed = 4 * (2 * 8 * 8 * 3 + 3 * 3 * 3 * 4 + 2 * 8 * 8 * 4)  # float32 input, filter, output
    with small_device(max_bytes=needed) as dev:
        tf.nn.conv2d(x, k, 1, "SAME")
    oom = pytest.raises(tf.errors.ResourceExhaustedError, match=r"shape\[2,8,8,4\]")
    with small_device(max_bytes=needed - 1) as tight, oom:
        tf.nn.conv2d(x, k, 1, "SAME")
    assert (dev.ooms, tight.ooms) == (0, 1)


def test_device_limits_only_ops_placed_there() -> None:
    x, k = _normal(8, 16, 16, 3), _normal(3, 3, 3, 5)
    with small_device(max_batch=4, device="GPU:0") as dev:
        tf.nn.conv2d(x, k, 1, "SAME")  # no scope: placed by its input, on the CPU
        with tf.device("/CPU:0"):
            tf.nn.conv2d(x, k, 1, "SAME")
        with tf.device("/GPU:1"):
            tf.nn.conv2d(x, k, 1, "SAME")
        assert dev.attempts == []
        # CPU-only: soft placement runs this on /CPU:0, but the eager scope names GPU:0.
        with tf.device("/GPU:0"), pytest.raises(tf.errors.ResourceExhaustedError) as info:
            tf.nn.conv2d(x, k, 1, "SAME")
    assert "on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc" in str(
        info.value
    )
    assert "__wrapped__Conv2D_device_/job:localhost/replica:0/task:0/device:GPU:0" in str(
        info.value
    )
    assert dev.attempts == [("Conv2D", 8)]


def test_dnn_failure_raises_the_cudnn_error_without_running() -> None:
    with small_device(dnn_failure=True) as dev, pytest.raises(tf.errors.UnknownError) as info:
        tf.nn.conv2d(_normal(2, 8, 8, 3), _normal(3, 3, 3, 4), 1, "SAME")
    assert CUDNN_MESSAGE in str(info.value)
    assert "Failed to get convolution algorithm" in CUDNN_MESSAGE
    assert (dev.attempts, dev.dnn_failures, dev.ooms) == ([("Conv2D", 2)], 1, 0)


def test_other_ops_and_tf_function_pass_through() -> None:
    x, k = _normal(8, 16, 16, 3), _normal(3, 3, 3, 5)
    traced = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
    with small_device(max_batch=1, dnn_failure=True) as dev:
        tf.matmul(_normal(8, 4), _normal(4, 4))
        traced(x, k)  # documented: kernels inside tf.function run in C++, unseen
    assert dev.attempts == []


def test_gradients_within_capacity_are_unchanged() -> None:
    x, k = tf.Variable(_normal(4, 8, 8, 3)), tf.Variable(_normal(3, 3, 3, 4))

    def grads() -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME") ** 2)
        return [g.numpy() for g in tape.gradient(y, [x, k])]

    bare = grads()
    with small_device(max_batch=4) as dev:
        limited = grads()
    assert all(np.array_equal(a, b) for a, b in zip(bare, limited))
    ops = [op for op, _ in dev.attempts]
    assert ops == ["Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"]
    assert {batch for _, batch in dev.attempts} == {4}


def test_restored_after_an_exception_and_nesting_refused() -> None:
    with pytest.raises(ZeroDivisionError), small_device(max_batch=1):
        assert pywrap_tfe.TFE_Py_FastPathExecute is not ORIGINALS[0]
        assert pywrap_tfe.TFE_Py_Execute is not ORIGINALS[1]
        1 / 0  # noqa: B018
    assert (pywrap_tfe.TFE_Py_FastPathExecute, pywrap_tfe.TFE_Py_Execute) == ORIGINALS
    with small_device(max_batch=1):
        inside = pywrap_tfe.TFE_Py_FastPathExecute
        with pytest.raises(RuntimeError, match="do not nest"), small_device(max_batch=2):
            pass
        assert pywrap_tfe.TFE_Py_FastPathExecute is inside  # the outer block is intact


@pytest.mark.parametrize(
    "kwargs", [{"max_batch": -1}, {"max_bytes": True}, {"device": "bogus"}, {"device": ""}]
)
def test_bad_arguments_are_refused_before_installing(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError), small_device(**kwargs):
        pass


@pytest.mark.subprocess
def test_importing_convfix_testing_does_not_import_tensorflow() -> None:
    done = run_python("import sys, convfix.testing; print('tensorflow' in sys.modules)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_max_join_bytes_limits_concatenations_only() -> None:
    parts = [tf.ones([4, 8]), tf.ones([4, 8])]  # 256 B in, 256 B out
    with small_device(max_join_bytes=511) as dev:
        with pytest.raises(tf.errors.ResourceExhaustedError, match=r"shape\[8,8\].*ConcatV2"):
            tf.concat(parts, 0)
        assert tf.add(parts[0], parts[1]).shape == (4, 8)  # other ops pass through
        assert dev.ooms == 1 and dev.attempts == []
    with small_device(max_join_bytes=512):
        assert np.array_equal(tf.concat(parts, 0), np.ones([8, 8]))
