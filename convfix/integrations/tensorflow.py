"""Where convfix hooks into TensorFlow: the table, patch() and unpatch().

Two layers, one handling per call:
- entries: the public functions users and Keras call (tf.nn.*, tf.compat.v1.nn.*), where
  the user's own arguments still exist (padding strings, lists, a missing batch dim);
- backstops: the generated ops every path reaches (gen_nn_ops.conv2d, conv3d,
  depthwise_conv2d_native), for callers that hold an unpatched function (``from
  tensorflow.nn import conv2d`` before convfix patched) or reach the ops another way.
An entry marks the thread while it runs, so the backstop beneath it passes straight through.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from convfix.call import Binder
from convfix.integrations.entry import (
    MARK,
    Capabilities,
    FastCheck,
    make_entry,
    make_fast_check,
)
from convfix.ops import V1_SPECS, V2_SPECS, OpSpec

SUPPORTED_TF = ((2, 16), (2, 21))  # inclusive range of (major, minor) tested or known to work
TESTED_TF = "2.21.0"

ENTRY_MODULES: dict[str, dict[str, OpSpec]] = {
    "tensorflow._api.v2.nn": V2_SPECS,
    "tensorflow._api.v2.compat.v2.nn": V2_SPECS,
    "tensorflow._api.v2.compat.v1.nn": V1_SPECS,
}

GEN_MODULE = "tensorflow.python.ops.gen_nn_ops"
_GEN = dict(
    filter_params=("filter",),
    dilations_params=("dilations",),
)
BACKSTOPS: dict[str, OpSpec] = {
    "conv2d": OpSpec("raw_ops.Conv2D", "conv", 2, **_GEN),  # type: ignore[arg-type]
    "conv3d": OpSpec("raw_ops.Conv3D", "conv", 3, **_GEN),  # type: ignore[arg-type]
    "depthwise_conv2d_native": OpSpec(
        "raw_ops.DepthwiseConv2dNative",
        "depthwise",
        2,
        **_GEN,  # type: ignore[arg-type]
    ),
}


@dataclass(frozen=True, slots=True)
class Patched:
    """One replaced attribute, so unpatch can put the original back exactly."""

    module: ModuleType
    attribute: str
    original: Callable[..., Any]
    wrapper: Callable[..., Any]


_patched: list[Patched] = []
caps: Capabilities | None = None


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
    """Wrap every entry and backstop found. Idempotent: a second call wraps nothing."""
    global caps
    if _patched:
        return []
    caps = _probe()
    from convfix.pipeline import Target, handle

    wanted = [(m, a, s) for m, specs in ENTRY_MODULES.items() for a, s in specs.items()]
    wanted += [(GEN_MODULE, a, s) for a, s in BACKSTOPS.items()]
    # Build every wrapper first, then install them all: a failure leaves nothing half-done.
    done: list[Patched] = []
    for module_name, attribute, spec in wanted:
        module = sys.modules.get(module_name)
        original = getattr(module, attribute, None) if module else None
        if module is None or original is None or getattr(original, MARK, None) is not None:
            continue
        target = Target(original, Binder(spec, original), caps.onednn)

        def slow(args: tuple[Any, ...], kwargs: dict[str, Any], target: Target = target) -> Any:
            return handle(target, args, kwargs)

        wrapper = make_entry(original, _fast_check_or_none(spec, original, caps), slow)
        done.append(Patched(module, attribute, original, wrapper))
    for item in done:
        setattr(item.module, item.attribute, item.wrapper)
    _patched.extend(done)
    return done


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
    spec: OpSpec, original: Callable[..., Any], caps: Capabilities
) -> FastCheck | None:
    """No fast check (every call takes the full path) if the signature is not the one the
    table describes: slower, never wrong."""
    try:
        return make_fast_check(spec, original, caps)
    except (KeyError, ValueError, TypeError):
        return None


def _probe() -> Capabilities:
    import tensorflow as tf
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import resource_variable_ops

    eager = type(tf.constant(0.0))
    symbolic: type = getattr(ops, "SymbolicTensor", eager)
    filter_types = frozenset(
        {
            eager,
            symbolic,
            resource_variable_ops.ResourceVariable,
            resource_variable_ops.UninitializedVariable,
        }
    )
    floats = frozenset(id(d) for d in (tf.float16, tf.bfloat16, tf.float32, tf.float64))
    # The fast check reads TensorShape._dims (a tuple): if this TensorFlow stores shapes
    # differently, every call takes the full path instead (slower, still right).
    if getattr(tf.TensorShape([1, None]), "_dims", None) != (1, None):
        filter_types = frozenset()
    return Capabilities(eager, symbolic, filter_types, floats, onednn_enabled())


def onednn_enabled() -> bool:
    """Whether TensorFlow's oneDNN kernels (and their crashes) are in use here."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # cannot tell: assume the dangerous build
        return True
