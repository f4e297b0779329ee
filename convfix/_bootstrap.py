"""Activation: load the config now, patch TensorFlow whenever it is (or was) imported.

Configuration errors raise here, synchronously, in ``import convfix.auto`` or
``convfix.patch()``. Everything that runs inside the post-import hooks is guarded: an
exception there would break the user's ``import tensorflow``, so it is reported instead.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

import wrapt

from convfix import events, runtime
from convfix.config import Config, load_config
from convfix.errors import ConfigError

_hooks_registered = False
_entry_hooks_registered = False
_armed = False  # hooks patch only while convfix is meant to be active (not after unpatch)


def activate(config_path: str | os.PathLike[str] | None = None) -> Config:
    """Load and apply the configuration, then patch TensorFlow now or at its import."""
    global _hooks_registered, _armed
    config = load_config(config_path)  # ConfigError propagates: fail at start-up
    try:  # the sink first: if it cannot open, nothing has changed yet
        events.configure(config.events)
    except OSError as error:
        raise ConfigError(
            f"events.path: cannot open {config.events.path!r} for writing ({error.strerror})"
        ) from error
    runtime.set_config(config)
    _armed = True
    if not _hooks_registered:
        _hooks_registered = True
        # wrapt runs a hook at once if the module is already imported, else after import.
        wrapt.register_post_import_hook(_on_tensorflow, "tensorflow")
        wrapt.register_post_import_hook(_on_keras, "keras")
    else:
        if "tensorflow" in sys.modules:
            _on_tensorflow(sys.modules["tensorflow"])
        if "keras" in sys.modules:
            _on_keras(sys.modules["keras"])
    return config


def deactivate() -> int:
    """Restore TensorFlow's original functions; returns how many were restored."""
    global _armed
    _armed = False
    runtime.stop()
    if "convfix.integrations.tensorflow" not in sys.modules:
        return 0
    from convfix.integrations import tensorflow as tf_integration

    return tf_integration.unpatch_tensorflow()


def _on_tensorflow(module: ModuleType) -> None:
    if not _armed:
        return
    try:
        _patch_tensorflow(module)
    except Exception as error:  # never break the user's import
        _loud(
            events.INTERNAL_ERROR,
            f"patching TensorFlow failed ({type(error).__name__}: {error}); "
            "convolutions run without convfix",
            stage="patch",
            error_type=type(error).__name__,
        )


def _patch_tensorflow(module: ModuleType) -> None:
    from convfix.integrations import tensorflow as tf_integration

    version = getattr(module, "__version__", "unknown")
    supported = tf_integration.SUPPORTED_TF
    found = tf_integration.tf_version()
    if found is None or not supported[0] <= found <= supported[1]:
        _loud(
            events.UNSUPPORTED,
            f"TensorFlow {version} is outside the supported range "
            f"{'.'.join(map(str, supported[0]))}-{'.'.join(map(str, supported[1]))}.x; "
            "convfix patches what it finds, untested",
            component="tensorflow",
            version=version,
        )
    if runtime.config().gpu.memory_growth:  # also when re-patched with a new config
        from convfix.integrations import gpu

        gpu.apply_memory_growth(module)
    first = not tf_integration.is_patched()
    done = tf_integration.patch_tensorflow()
    _watch_entry_modules()
    if not first:
        return  # already announced; anything new was an entry module imported since
    if not done:
        _loud(
            events.UNSUPPORTED,
            f"found no convolution functions to patch in TensorFlow {version}; convfix is inactive",
            component="tensorflow",
            version=version,
        )
        return
    caps = tf_integration.caps
    events.emit(
        events.PATCHED,
        tensorflow=version,
        wrapped=len(done),
        ops=sorted({p.attribute for p in done}),
        onednn=bool(caps and caps.onednn),
        mode=runtime.config().mode,
    )


def _watch_entry_modules() -> None:
    """TF 2.12-2.15 may import a module holding tf.compat.v1.nn or tf.compat.v2.nn after
    ``tensorflow`` itself (Keras 2 does): patch it when it comes."""
    global _entry_hooks_registered
    if _entry_hooks_registered:
        return
    _entry_hooks_registered = True
    from convfix.integrations import tensorflow as tf_integration

    for name in tf_integration.ENTRY_MODULES:
        if name not in sys.modules:
            wrapt.register_post_import_hook(_on_entry_module, name)


def _on_entry_module(module: ModuleType) -> None:
    if not _armed or "convfix.integrations.tensorflow" not in sys.modules:
        return
    try:
        from convfix.integrations import tensorflow as tf_integration

        if tf_integration.is_patched():
            tf_integration.patch_tensorflow()
    except Exception as error:  # never break the user's import
        _loud(
            events.INTERNAL_ERROR,
            f"patching {module.__name__} failed ({type(error).__name__}: {error})",
            stage="patch",
            error_type=type(error).__name__,
        )


def _on_keras(module: ModuleType) -> None:
    if not _armed:
        return
    try:
        _check_keras(module)
    except Exception as error:
        _loud(
            events.INTERNAL_ERROR,
            f"inspecting Keras failed ({type(error).__name__}: {error})",
            stage="keras",
            error_type=type(error).__name__,
        )


def _check_keras(module: ModuleType) -> None:
    version = getattr(module, "__version__", "unknown")
    backend = module.backend.backend() if hasattr(module, "backend") else "unknown"
    # Keras 2 (tf.keras up to TF 2.15, tf_keras after) and Keras 3 on TensorFlow call
    # tf.nn's functions, which convfix wraps; Keras 3 on another backend calls none.
    if version.startswith("3.") and backend != "tensorflow":
        _loud(
            events.UNSUPPORTED,
            f"Keras {version}, backend {backend}: convfix covers Keras on the TensorFlow "
            "backend; Keras layers are not covered (tf.nn calls still are)",
            component="keras",
            version=version,
            backend=backend,
        )
        return
    from convfix.integrations import tensorflow as tf_integration

    variable_type = tf_integration.keras_variable_type()
    if tf_integration.caps is not None and variable_type is not None:
        tf_integration.caps.filter_types.add(variable_type)
    if tf_integration.is_patched():  # Keras 2 may have imported tensorflow.compat.v2 since
        tf_integration.patch_tensorflow()


def _loud(event: str, message: str, **fields: object) -> None:
    """Say it in the event log and on stderr: a silent no-op is the worst failure here."""
    sys.stderr.write(f"convfix: {message}\n")
    events.emit(event, level="warning", message=message, **fields)
