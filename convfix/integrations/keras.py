"""Which Keras layer is making the current call, for events. Off the hot path.

Keras 3 keeps a stack of name scopes whose callers are layers; Keras 2 (tf.keras on
TF 2.12-2.15, tf_keras with TF_USE_LEGACY_KERAS=1 later) a per-thread call context. Both
are read through sys.modules: convfix never imports Keras.
"""

from __future__ import annotations

import sys

# Where Keras 2 keeps its call context: keras 2.13-2.15, keras 2.12, tf_keras.
_KERAS2_CONTEXTS = (
    "keras.src.engine.base_layer_utils",
    "keras.engine.base_layer_utils",
    "tf_keras.src.engine.base_layer_utils",
)


def layer_name() -> str | None:
    """The innermost Keras layer whose ``__call__`` is running in this thread, if any."""
    return _keras3_layer() or _keras2_layer()


def _keras3_layer() -> str | None:
    if "keras.src.backend.common.global_state" not in sys.modules:
        return None
    try:
        from keras.src.backend.common import global_state
        from keras.src.layers.layer import Layer
    except ImportError:  # another Keras layout: events simply carry no layer
        return None
    stack = global_state.get_global_attribute("name_scope_stack") or []
    for scope in reversed(stack):
        caller = getattr(scope, "caller", None)
        if isinstance(caller, Layer):
            return str(caller.name)
    return None


def _keras2_layer() -> str | None:
    for name in _KERAS2_CONTEXTS:
        utils = sys.modules.get(name)
        if utils is None:
            continue
        try:
            layer = utils.call_context().layer
        except Exception:  # a layout this does not know: no layer in the event
            continue
        if layer is not None:
            return str(layer.name)
    return None
