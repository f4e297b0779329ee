"""Where convfix hooks into TensorFlow: the table, patch() and unpatch().

convfix wraps the public functions users and Keras call (tf.nn.*, tf.compat.v1.nn.*),
where the user's own arguments still exist (padding strings, lists, a missing batch dim),
and nothing beneath them: every call is handled exactly once, and a healthy call pays for
one wrapper. Keras 3 reaches these functions through ``tf.nn`` at call time.

A module that bound one of them before convfix patched (``from tensorflow.nn import
conv2d`` with TensorFlow imported before convfix) holds the original: patching also
rebinds such module-level names, outside TensorFlow's and Keras' own packages, and
unpatching puts them back. (A reference held elsewhere, in a closure or a class, stays
unwrapped: ``import convfix.auto`` first avoids that.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from convfix import memory
from convfix.call import Binder
from convfix.guard.build import Build, build_of
from convfix.integrations import express, keras
from convfix.integrations.entry import (
    MARK,
    Capabilities,
    FastCheck,
    FilterShapes,
    make_entry,
    make_fast_check,
    make_general,
)
from convfix.integrations.tracebacks import trimmed
from convfix.ops import V1_SPECS, V2_SPECS, OpSpec

SUPPORTED_TF = ((2, 12), (2, 21))  # inclusive range of (major, minor), each one tested

# Where tf.nn, tf.compat.v2.nn and tf.compat.v1.nn live: every module present is patched.
# TF 2.12-2.15 also give tf.compat.v1 and tf.compat.v2 modules of their own (Keras 2 calls
# through tensorflow.compat.v2); later versions alias them to the _api modules.
ENTRY_MODULES: dict[str, dict[str, OpSpec]] = {
    "tensorflow._api.v2.nn": V2_SPECS,
    "tensorflow._api.v2.compat.v2.nn": V2_SPECS,
    "tensorflow._api.v2.compat.v1.nn": V1_SPECS,
    "tensorflow.compat.v2.nn": V2_SPECS,
    "tensorflow.compat.v1.nn": V1_SPECS,
}
# Packages whose module globals are definitions, not user references: never rebound.
_OWN_PACKAGES = ("tensorflow", "keras", "tf_keras", "convfix", "tensorboard")


@dataclass(frozen=True, slots=True)
class Patched:
    """One replaced attribute, so unpatch can put the original back exactly."""

    module: ModuleType
    attribute: str
    original: Callable[..., Any]
    wrapper: Callable[..., Any]


_patched: list[Patched] = []
caps: Capabilities | None = None
_filters: FilterShapes | None = None  # one shape cache for every wrapper


def tf_version() -> tuple[int, int] | None:
    import tensorflow as tf

    try:
        major, minor = (int(p) for p in tf.__version__.split(".")[:2])
    except ValueError:
        return None
    return major, minor


def is_patched() -> bool:
    return bool(_patched)


def patch_tensorflow() -> list[Patched]:
    """Wrap every entry found, and rebind user references to them. Idempotent: a second
    call wraps only what appeared since (an entry module TensorFlow imported later)."""
    global caps, _filters
    if not _patched or caps is None or _filters is None:
        caps = _probe()
        _filters = FilterShapes(caps)
        memory.TENSOR_TYPES.update({caps.eager, caps.symbolic})
    filters = _filters
    remembered = memory.MEMORY
    from convfix.pipeline import Target, handle, recover

    wanted = [(m, a, s) for m, specs in ENTRY_MODULES.items() for a, s in specs.items()]
    # Build every wrapper first, then install them all: a failure leaves nothing half-done.
    done: list[Patched] = []
    for module_name, attribute, spec in wanted:
        module = sys.modules.get(module_name)
        original = getattr(module, attribute, None) if module else None
        if module is None or original is None or getattr(original, MARK, None) is not None:
            continue
        replays = remembered.plans(spec.name)
        target = Target(
            original, Binder(spec, original), caps.build, remembered, keras.layer_name, replays
        )

        def slow(args: tuple[Any, ...], kwargs: dict[str, Any], target: Target = target) -> Any:
            return handle(target, args, kwargs)

        def recovery(
            args: tuple[Any, ...], kwargs: dict[str, Any], error: Exception, target: Target = target
        ) -> Any:
            try:
                return recover(target, args, kwargs, error)
            except Exception as final:  # the express lane's re-raising frame (tracebacks.py)
                raise trimmed(final)  # noqa: B904

        fast = _fast_check_or_none(spec, original, caps, filters, remembered)
        general = make_general(original, fast, slow, recovery)
        lane = express.build(original, spec, caps, remembered, general, recovery)
        wrapper = make_entry(original, general, lane)
        done.append(Patched(module, attribute, original, wrapper))
    done += _user_references({id(p.original): p.wrapper for p in done})
    for item in done:
        setattr(item.module, item.attribute, item.wrapper)
    _patched.extend(done)
    return done


def _user_references(wrappers: dict[int, Callable[..., Any]]) -> list[Patched]:
    """Module-level names outside TensorFlow bound to an original before patching."""
    found = []
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] in _OWN_PACKAGES:
            continue
        try:
            names = list(vars(module).items())
        except TypeError:
            continue
        for attribute, value in names:
            wrapper = wrappers.get(id(value))
            if wrapper is not None and not attribute.startswith("__"):
                found.append(Patched(module, attribute, value, wrapper))
    return found


def unpatch_tensorflow() -> int:
    """Put every original back; returns how many. An attribute someone else re-wrapped
    since is left alone (removing their wrapper would break them)."""
    restored = 0
    for item in reversed(_patched):
        if getattr(item.module, item.attribute, None) is item.wrapper:
            setattr(item.module, item.attribute, item.original)
            restored += 1
    _patched.clear()
    return restored


def _fast_check_or_none(
    spec: OpSpec,
    original: Callable[..., Any],
    caps: Capabilities,
    filters: FilterShapes,
    remembered: memory.Memory,
) -> FastCheck | None:
    """No fast check (every call takes the full path) if the signature is not the one the
    table describes: slower, never wrong."""
    try:
        return make_fast_check(spec, original, caps, filters, remembered)
    except (KeyError, ValueError, TypeError):
        return None


def _probe() -> Capabilities:
    import tensorflow as tf
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import resource_variable_ops

    # ops.EagerTensor, not type(tf.constant(...)): creating a tensor initialises TF's
    # devices, after which logical devices, memory growth and collective ops (tf.distribute)
    # can no longer be configured by the program.
    eager: type = ops.EagerTensor
    symbolic: type = getattr(ops, "SymbolicTensor", eager)
    filter_types = {
        eager,
        symbolic,
        resource_variable_ops.ResourceVariable,
        resource_variable_ops.UninitializedVariable,
    }
    keras_variable = keras_variable_type()  # Keras is imported during `import tensorflow`
    # The fast check reads TensorShape._dims (a tuple): if this TensorFlow stores shapes
    # differently, every call takes the full path instead (slower, still right).
    direct = frozenset(filter_types)
    if getattr(tf.TensorShape([1, None]), "_dims", None) != (1, None):
        filter_types.clear()
        direct = frozenset()
    if keras_variable is not None:  # after `direct`: Keras variables go through the cache
        filter_types.add(keras_variable)
    return Capabilities(eager, symbolic, filter_types, current_build(tf), direct)


def current_build(tf: Any) -> Build:
    """This process's build, as the guard's rules see it (guard/build.py)."""
    try:
        gpu = bool(tf.config.list_physical_devices("GPU"))
    except Exception:  # cannot tell: the CPU's bugs apply either way
        gpu = False
    return build_of(tf.__version__, onednn_enabled(), gpu)


def keras_variable_type() -> type | None:
    """Keras 3's variable class, if Keras is imported (filters of Keras layers)."""
    backend = sys.modules.get("keras.src.backend")
    variable = getattr(backend, "Variable", None)
    return variable if isinstance(variable, type) else None


def onednn_enabled() -> bool:
    """Whether TensorFlow's oneDNN kernels (and their crashes) are in use here."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # cannot tell: assume the dangerous build
        return True
