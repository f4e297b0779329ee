"""device_fallback, [gpu] memory_growth, and a real allocator out-of-memory.

No GPU here: a GPU is simulated by ``small_device(device="GPU:0")``: ops run under
``tf.device("/GPU:0")`` (soft placement puts them on the CPU, but the scope names GPU:0,
which is all convfix reads), and its kernels fail there as a small or broken GPU's would.
memory_growth is tested with a simulated GPU entry in TensorFlow's own list of physical
devices, in a subprocess that never initialises its devices (documented in the README).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import convfix
from convfix.testing import capture_events, small_device
from convfix.tf_errors import DNN_MESSAGE_PATTERNS, classify
from tests.integration.recovery_support import conv_operands
from tests.subproc import run_python

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.usefixtures("forget_learned")


def _inputs() -> tuple[Any, Any]:
    return conv_operands(6, 10, seed=7)


def _fallbacks(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in captured if e.get("policy") == "device_fallback"]


@pytest.mark.compat
def test_a_cudnn_failure_reruns_on_the_cpu_with_a_warning_and_a_hint() -> None:
    x, k = _inputs()
    expected = tf.nn.conv2d(x, k, 1, "SAME")
    with capture_events() as captured, small_device(device="GPU:0", dnn_failure=True) as gpu:
        with tf.device("/GPU:0"):
            out = tf.nn.conv2d(x, k, 1, "SAME")
    assert gpu.dnn_failures == 1
    assert np.array_equal(out, expected)
    assert "CPU:0" in out.device
    (event,) = _fallbacks(captured)
    assert event["level"] == "warning" and event["event"] == "convfix.intervention"
    assert event["reason"] == "dnn_init_failed" and event["action"] == "run_on_device"
    assert event["before"] == {"device": "GPU:0"} and event["after"] == {"device": "CPU:0"}
    assert "memory_growth" in event["hint"] and "CUDA/cuDNN version" in event["hint"]
    assert "another process" in event["hint"]


def test_later_calls_go_to_the_fallback_device_directly() -> None:
    x, k = _inputs()
    with small_device(device="GPU:0", dnn_failure=True) as gpu, tf.device("/GPU:0"):
        for _ in range(3):
            tf.nn.conv2d(x, k, 1, "SAME")
    assert gpu.dnn_failures == 1


def test_the_own_device_is_tried_again_after_grow_back_after_calls() -> None:
    x, k = _inputs()
    with convfix.override(policies={"split_batch": {"grow_back_after": 2}}):
        with small_device(device="GPU:0", dnn_failure=True) as gpu, tf.device("/GPU:0"):
            for _ in range(4):  # fails, then CPU, CPU, then the GPU again: fails
                tf.nn.conv2d(x, k, 1, "SAME")
    assert gpu.dnn_failures == 2


def test_a_call_already_on_the_fallback_device_is_not_rerun() -> None:
    x, k = _inputs()
    with capture_events() as captured, small_device(dnn_failure=True) as cpu:
        with pytest.raises(tf.errors.UnknownError, match="Failed to get convolution"):
            tf.nn.conv2d(x, k, 1, "SAME")
    assert cpu.dnn_failures == 1
    assert _fallbacks(captured) == []


def test_split_gives_up_at_min_chunk_then_falls_back() -> None:
    x, k = _inputs()
    settings = {"split_batch": {"min_chunk": 3}}
    with convfix.override(policies=settings), capture_events() as captured:
        with small_device(max_batch=2, device="GPU:0") as gpu, tf.device("/GPU:0"):
            out = tf.nn.conv2d(x, k, 1, "SAME")
    assert [size for _, size in gpu.attempts] == [6, 3]
    assert np.allclose(out, tf.nn.conv2d(x, k, 1, "SAME"))
    split, fallback = [e for e in captured if e.get("policy") in ("split_batch", "device_fallback")]
    assert split["outcome"] == "fix_failed"
    assert fallback["reason"] == "out_of_memory" and fallback["level"] == "warning"


@pytest.mark.parametrize("mode", ["warn", "strict"])
def test_warn_and_strict_keep_tensorflows_error(mode: str) -> None:
    x, k = _inputs()
    with convfix.override(policies={"device_fallback": mode}), capture_events() as captured:
        with small_device(device="GPU:0", dnn_failure=True), tf.device("/GPU:0"):
            with pytest.raises(tf.errors.UnknownError):
                tf.nn.conv2d(x, k, 1, "SAME")
    (event,) = _fallbacks(captured)
    assert event["event"] == "convfix.warning"


def test_the_fallback_device_is_configurable() -> None:
    x, k = _inputs()
    with convfix.override(policies={"device_fallback": {"device": "/GPU:0"}}):
        with small_device(device="CPU:0", dnn_failure=True), capture_events() as captured:
            with tf.device("/CPU:0"):
                tf.nn.conv2d(x, k, 1, "SAME")
    assert _fallbacks(captured)[0]["after"] == {"device": "GPU:0"}


@pytest.mark.parametrize(
    "error",
    [
        tf.errors.UnknownError(None, None, "Failed to get convolution algorithm. This is ..."),
        tf.errors.InternalError(None, None, "cuDNN failed to initialize"),
        tf.errors.NotFoundError(None, None, "No algorithm worked! DNN library is not found."),
        tf.errors.InternalError(None, None, "CUDNN_STATUS_INTERNAL_ERROR"),
    ],
)
def test_dnn_failures_are_classified_by_type_then_message(error: Exception) -> None:
    assert classify(error) == "dnn_init_failed"


def test_other_errors_are_not_claimed() -> None:
    assert classify(tf.errors.UnknownError(None, None, "something else")) is None
    assert classify(ValueError(DNN_MESSAGE_PATTERNS[0])) is None  # right text, wrong type
    assert classify(tf.errors.ResourceExhaustedError(None, None, "")) == "out_of_memory"


# -- [gpu] memory_growth (subprocess: a simulated GPU must never be initialised) ----------

_FAKE_GPU = """
import json, os, sys
import tensorflow as tf
from tensorflow.python.eager import context
ctx = context.context()
ctx._initialize_physical_devices()
if INIT:
    tf.constant(1.0)  # TensorFlow initialises its devices now
gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
ctx._physical_devices.append(gpu)  # the simulation: one GPU in TensorFlow's own list
ctx._memory_growth_map[gpu] = None
import convfix.auto
print(json.dumps(tf.config.experimental.get_memory_growth(gpu)))
sys.stdout.flush()
os._exit(0)  # never let TensorFlow initialise the simulated GPU
"""


def _growth_run(
    tmp_path: Any, init: bool, activate: str = "import convfix.auto"
) -> tuple[Any, list[dict[str, Any]]]:
    (tmp_path / "convfix.toml").write_text("[gpu]\nmemory_growth = true\n")
    code = _FAKE_GPU.replace("INIT", str(init)).replace("import convfix.auto", activate)
    out = run_python(code, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    growth = [e for e in lines if e.get("event") == "convfix.gpu_memory_growth"]
    return json.loads(out.stdout.strip().splitlines()[-1]), growth


def test_memory_growth_is_turned_on_before_tensorflow_initialises_the_gpus(tmp_path: Any) -> None:
    enabled, (event,) = _growth_run(tmp_path, init=False)
    assert enabled is True
    assert event["applied"] == ["/physical_device:GPU:0"] and event["level"] == "info"


def test_memory_growth_is_applied_when_patched_again_with_a_config(tmp_path: Any) -> None:
    # convfix.auto found no config (cwd elsewhere), then the program patches with one.
    here = str(tmp_path)
    activate = (
        f"os.chdir('/'); import convfix.auto; os.chdir({here!r}); convfix.patch('convfix.toml')"
    )
    enabled, (event,) = _growth_run(tmp_path, init=False, activate="import convfix\n" + activate)
    assert enabled is True and event["applied"] == ["/physical_device:GPU:0"]


def test_memory_growth_too_late_says_so_and_what_to_do(tmp_path: Any) -> None:
    enabled, (event,) = _growth_run(tmp_path, init=True)
    assert enabled is None  # TensorFlow refused: the GPU kept its default
    assert event["level"] == "warning" and event["too_late"] == ["/physical_device:GPU:0"]
    assert "TF_FORCE_GPU_ALLOW_GROWTH=true" in event["message"]


# -- a real allocator out-of-memory (subprocess: RLIMIT_AS, oneDNN off, tf-facts.md) ------

_REAL_OOM = """
import json, resource
import tensorflow as tf
import convfix
from convfix import events
from convfix.testing import capture_events
convfix.patch()
# A 1x1 filter: the CPU kernel is a matrix product, whose memory is all TF's allocator's.
# (A 3x3 kernel also reserves an im2col buffer outside it: if that fails first, TF
# segfaults, which a cap near a chunk's size makes likely.)
x = tf.random.normal([16, 128, 128, 16])
k = tf.random.normal([1, 1, 16, 64])
tf.nn.conv2d(x[:1], k, 1, "SAME")  # warm up kernels and thread pools before the cap

def address_space():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize"):
            return int(line.split()[1]) * 1024

output = 16 * 128 * 128 * 64 * 4
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
with convfix.override(policies=POLICIES), capture_events() as captured:
    # Below the output's size (above it, TF was seen to segfault): the output cannot be
    # allocated. A soft limit only, lifted again after the call.
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + output * 3 // 4, hard))
    try:
        tf.nn.conv2d(x, k, 1, "SAME")
        outcome = "answered"
    except tf.errors.ResourceExhaustedError as error:
        outcome = str(error)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
still = tf.nn.conv2d(x[:2], k, 1, "SAME").shape.as_list()
print(json.dumps({"outcome": outcome, "events": captured, "dropped": events.dropped(),
                  "still": still}, default=str))
"""


def _real_oom(policies: dict[str, Any]) -> dict[str, Any]:
    code = _REAL_OOM.replace("POLICIES", repr(policies))
    out = run_python(code, env={"TF_ENABLE_ONEDNN_OPTS": "0", "MALLOC_ARENA_MAX": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["still"] == [2, 128, 128, 64]  # the process goes on working
    assert result["dropped"] == 0  # every event written, even with memory short
    return result


def test_a_real_cpu_oom_is_recognised_and_tensorflows_error_reraised() -> None:
    # The CPU's own out-of-memory is not split by default (on_cpu = false): its memory is
    # the output, which chunks need too, and a retry this near the limit was seen to
    # segfault inside TF's kernels. convfix logs it and re-raises TF's error untouched.
    result = _real_oom({})
    assert "OOM when allocating tensor with shape[16,128,128,64]" in result["outcome"]
    (event,) = [e for e in result["events"] if e.get("policy") == "split_batch"]
    assert event["event"] == "convfix.warning" and event["reason"] == "out_of_memory"
    assert event["before"] == {"device": "CPU:0"} and "on_cpu" in event["would"]


def test_a_real_oom_in_strict_mode_is_tensorflows_error_untouched() -> None:
    result = _real_oom({"split_batch": "strict"})
    assert "OOM when allocating tensor with shape[16,128,128,64]" in result["outcome"]
    (event,) = [e for e in result["events"] if e.get("policy") == "split_batch"]
    assert event["event"] == "convfix.warning" and event["mode"] == "strict"


# -- through Keras (predict, run_eagerly=True) ---------------------------------------------


def _keras_model() -> Any:
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((10, 10, 3)), keras.layers.Conv2D(4, 3, padding="same")])
    model.compile(run_eagerly=True)
    return model


def test_keras_predict_falls_back_from_a_failing_cudnn() -> None:
    model = _keras_model()
    data = np.random.default_rng(5).normal(size=(8, 10, 10, 3)).astype(np.float32)
    expected = model.predict(data, batch_size=8, verbose=0)
    with (
        capture_events() as captured,
        small_device(device="GPU:0", dnn_failure=True) as gpu,
        tf.device("/GPU:0"),
    ):
        out = model.predict(data, batch_size=8, verbose=0)
        model.predict(data, batch_size=8, verbose=0)
    assert np.array_equal(out, expected)
    assert gpu.dnn_failures == 1  # the second predict went to the CPU directly
    (event, *_) = _fallbacks(captured)
    assert event["layer"] and event["reason"] == "dnn_init_failed"


def test_keras_predict_at_min_chunk_falls_back() -> None:
    model = _keras_model()
    data = np.random.default_rng(6).normal(size=(8, 10, 10, 3)).astype(np.float32)
    expected = model.predict(data, batch_size=8, verbose=0)
    with (
        convfix.override(policies={"split_batch": {"min_chunk": 4}}),
        capture_events() as captured,
        small_device(max_batch=2, device="GPU:0") as gpu,
        tf.device("/GPU:0"),
    ):
        out = model.predict(data, batch_size=8, verbose=0)
    assert [size for _, size in gpu.attempts] == [8, 4]
    assert np.allclose(out, expected, atol=1e-6)
    assert [e["policy"] for e in captured if e.get("policy")] == ["split_batch", "device_fallback"]
