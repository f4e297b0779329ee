"""Which Keras layer is making the current call, for events. Off the hot path."""

from __future__ import annotations

import sys


def layer_name() -> str | None:
    """The innermost Keras 3 layer whose ``__call__`` is running in this thread, if any."""
    if "keras" not in sys.modules:
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
