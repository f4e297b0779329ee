"""Activation in a fresh interpreter: import orders, idempotence, unpatch, kill switch."""

from __future__ import annotations

import json
import sys

import pytest
import tensorflow as tf

from convfix.integrations.tensorflow import ENTRY_MODULES
from tests.subproc import run_python

pytestmark = [pytest.mark.compat, pytest.mark.subprocess]

# Prints how many layers of convfix wrap tf.nn.conv2d and whether a repair happened.
PROBE = """
import tensorflow as tf
from convfix.integrations.entry import MARK
def depth(f):
    n = 0
    while hasattr(f, MARK):
        f, n = getattr(f, MARK), n + 1
    return n
x = tf.ones([1, 5, 5, 3], tf.float64)
k = tf.ones([3, 3, 3, 2])
try:
    y = tf.nn.conv2d(x, k, 1, "SAME").dtype.name
except Exception as e:
    y = type(e).__name__
print("RESULT", {"depth": depth(tf.nn.conv2d), "compat": depth(tf.compat.v1.nn.conv2d),
                 "y": y})
"""


def _result(stdout: str) -> dict[str, object]:
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    return dict(eval(line[len("RESULT ") :]))  # a dict literal printed by PROBE


def test_auto_before_tensorflow_patches_once(tmp_path: object) -> None:
    out = run_python("import convfix.auto\n" + PROBE, cwd=str(tmp_path))
    assert _result(out.stdout) == {"depth": 1, "compat": 1, "y": "float32"}, out.stderr


def test_auto_after_tensorflow_patches_once(tmp_path: object) -> None:
    out = run_python("import tensorflow\nimport convfix.auto\n" + PROBE, cwd=str(tmp_path))
    assert _result(out.stdout) == {"depth": 1, "compat": 1, "y": "float32"}, out.stderr


def test_double_import_and_patch_after_auto_wrap_once(tmp_path: object) -> None:
    code = "import convfix.auto\nimport convfix.auto\nimport convfix\nconvfix.patch()\n"
    out = run_python(code + "import tensorflow\nconvfix.patch()\n" + PROBE, cwd=str(tmp_path))
    assert _result(out.stdout) == {"depth": 1, "compat": 1, "y": "float32"}, out.stderr


def test_unpatch_restores_the_original_objects_exactly(tmp_path: object) -> None:
    code = """
    import tensorflow as tf
    from tensorflow.python.ops import gen_nn_ops
    before = (tf.nn.conv2d, tf.nn.convolution, tf.compat.v1.nn.conv2d, gen_nn_ops.conv2d)
    import convfix
    convfix.patch()
    patched = (tf.nn.conv2d, tf.nn.convolution, tf.compat.v1.nn.conv2d, gen_nn_ops.conv2d)
    convfix.unpatch()
    after = (tf.nn.conv2d, tf.nn.convolution, tf.compat.v1.nn.conv2d, gen_nn_ops.conv2d)
    print("RESULT", {"changed": [a is not b for a, b in zip(before, patched)],
                     "restored": all(a is b for a, b in zip(before, after))})
    """
    out = run_python(code, cwd=str(tmp_path))
    # public functions wrapped, the generated op beneath them never touched
    assert _result(out.stdout) == {"changed": [True, True, True, False], "restored": True}


def test_patch_unpatch_patch_wraps_once_and_repairs(tmp_path: object) -> None:
    code = "import convfix\nconvfix.patch()\nconvfix.unpatch()\nconvfix.patch()\n"
    out = run_python(code + PROBE, cwd=str(tmp_path))
    assert _result(out.stdout) == {"depth": 1, "compat": 1, "y": "float32"}, out.stderr


def test_after_unpatch_calls_behave_as_plain_tensorflow(tmp_path: object) -> None:
    code = "import convfix\nconvfix.patch()\nconvfix.unpatch()\n"
    out = run_python(code + PROBE, cwd=str(tmp_path))
    assert _result(out.stdout) == {"depth": 0, "compat": 0, "y": "InvalidArgumentError"}


def test_importing_auto_does_not_import_tensorflow(tmp_path: object) -> None:
    code = """
    import sys, convfix.auto
    heavy = [m for m in ("tensorflow", "keras", "numpy") if m in sys.modules]
    print("RESULT", {"heavy": heavy})
    """
    out = run_python(code, cwd=str(tmp_path))
    assert _result(out.stdout) == {"heavy": []}, out.stderr


def test_name_imported_before_patching_is_rebound_and_restored(tmp_path: object) -> None:
    (tmp_path / "userlib.py").write_text("from tensorflow.nn import conv2d\n")  # type: ignore[operator]
    code = """
    import userlib  # bound tf.nn.conv2d before convfix patched
    import tensorflow as tf
    import convfix
    original = userlib.conv2d
    convfix.patch()
    y = userlib.conv2d(tf.ones([1, 5, 5, 3], tf.float64), tf.ones([3, 3, 3, 2]), 1, "SAME")
    convfix.unpatch()
    print("RESULT", {"dtype": y.dtype.name, "restored": userlib.conv2d is original})
    """
    out = run_python(code, cwd=str(tmp_path), env={"PYTHONPATH": str(tmp_path)})
    assert _result(out.stdout) == {"dtype": "float32", "restored": True}, out.stderr
    assert '"reason": "dtype_mismatch"' in out.stderr


def test_convfix_mode_off_in_environment_is_pure_pass_through(tmp_path: object) -> None:
    (tmp_path / "convfix.toml").write_text("this is not toml")  # type: ignore[operator]
    out = run_python(
        "import convfix.auto\n" + PROBE, env={"CONVFIX_MODE": "off"}, cwd=str(tmp_path)
    )
    assert _result(out.stdout)["y"] == "InvalidArgumentError", out.stderr


def test_bad_config_fails_at_import_with_file_and_key(tmp_path: object) -> None:
    (tmp_path / "convfix.toml").write_text('mode = "loud"\n')  # type: ignore[operator]
    out = run_python("import convfix.auto", cwd=str(tmp_path))
    assert out.returncode != 0
    assert "ConfigError" in out.stderr
    assert "convfix.toml: mode: expected one of fix, warn, strict, off, got 'loud'" in out.stderr


def test_bad_config_in_patch_leaves_the_previous_config_in_force(tmp_path: object) -> None:
    (tmp_path / "bad.toml").write_text("[policies.dtype]\ncolour = 1\n")  # type: ignore[operator]
    code = """
    import convfix
    from convfix import runtime
    convfix.patch()
    try:
        convfix.patch("bad.toml")
    except convfix.ConfigError as e:
        print("RESULT", {"error": str(e), "mode": runtime.config().mode})
    """
    out = run_python(code, cwd=str(tmp_path))
    result = _result(out.stdout)
    assert result["mode"] == "fix"
    assert str(result["error"]).startswith("bad.toml: policies.dtype.colour: unknown key")


def test_patched_event_is_written_once_as_json(tmp_path: object) -> None:
    out = run_python(
        "import convfix.auto\nimport tensorflow\nimport convfix\nconvfix.patch()", cwd=str(tmp_path)
    )
    patched = [json.loads(line) for line in out.stderr.splitlines() if '"convfix.patched"' in line]
    assert len(patched) == 1
    assert patched[0]["tensorflow"] == tf.__version__
    # every public function of tf.nn, compat.v2.nn and compat.v1.nn, in each module they
    # live in (TF 2.21: 10 + 10 + 8; TF 2.12-2.15 give compat.v1/v2 modules of their own)
    modules = [m for m in ENTRY_MODULES if m in sys.modules]
    assert patched[0]["wrapped"] == sum(len(ENTRY_MODULES[m]) for m in modules)
    assert "tensorflow._api.v2.nn" in modules
    assert "conv2d" in patched[0]["ops"] and "separable_conv2d" in patched[0]["ops"]


def test_keras_with_another_backend_is_reported_loudly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Keras' other backends need packages this suite does not install (jax, torch, scipy),
    # so the hook is handed a stand-in module that reports the jax backend.
    from types import SimpleNamespace

    from convfix import _bootstrap
    from convfix.testing import capture_events

    keras_on_jax = SimpleNamespace(
        __version__="3.15.1", backend=SimpleNamespace(backend=lambda: "jax")
    )
    with capture_events() as captured:
        _bootstrap._on_keras(keras_on_jax)  # type: ignore[arg-type]
    assert "Keras 3.15.1, backend jax" in capsys.readouterr().err
    assert captured[0]["event"] == "convfix.unsupported"
    assert captured[0]["backend"] == "jax"


def test_legacy_keras_switch_is_covered_silently(tmp_path: object) -> None:
    # Keras 2 (tf_keras) layers call tf.nn as Keras 3's do: nothing unsupported to report.
    out = run_python(
        "import convfix.auto\nimport keras\nimport tensorflow as tf\n" + PROBE,
        env={"TF_USE_LEGACY_KERAS": "1"},
        cwd=str(tmp_path),
    )
    assert "convfix.unsupported" not in out.stderr
    assert _result(out.stdout) == {"depth": 1, "compat": 1, "y": "float32"}, out.stderr


def test_a_failure_while_patching_never_breaks_import_tensorflow(tmp_path: object) -> None:
    code = """
    import convfix.auto
    from convfix.integrations import tensorflow as integration
    def broken():
        raise RuntimeError("injected")
    integration.patch_tensorflow = broken
    import tensorflow as tf
    print("RESULT", {"conv": list(tf.nn.conv2d(tf.ones([1, 3, 3, 1]), tf.ones([1, 1, 1, 1]),
                                               1, "SAME").shape)})
    """
    out = run_python(code, cwd=str(tmp_path))
    assert _result(out.stdout) == {"conv": [1, 3, 3, 1]}, out.stderr
    assert "convfix: patching TensorFlow failed (RuntimeError: injected)" in out.stderr
    assert '"event": "convfix.internal_error"' in out.stderr
