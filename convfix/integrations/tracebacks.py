"""Tracebacks that show the user's line, convfix's entry, and TensorFlow: nothing between.

An error leaving convfix (TensorFlow's own, re-raised in warn mode or after a repair that
failed; or a ConvFixError) carries every frame it passed through: the pipeline, recovery,
the policies. People read those tracebacks to find their own mistake, and TensorFlow
filters its own internals out of them for the same reason. So the two frames that leave
convfix (the wrapper, and the one frame that re-raises) are all that stay of convfix's;
the error object itself, its message, ``__cause__`` and ``__context__`` are untouched.
Where TensorFlow's filtering is off (``tf.debugging.disable_traceback_filtering()``),
people are debugging TensorFlow or convfix: the traceback stays whole.

Only the error path runs this: a healthy call never enters it.
"""

from __future__ import annotations

import sys
from types import TracebackType

_OWN = "convfix."


def trimmed(error: BaseException) -> BaseException:
    """``error`` with convfix's frames cut from its traceback (the frame raising it again
    adds itself back); ``error`` as it was where TensorFlow's filtering is off."""
    if not _filtering_enabled():
        return error
    kept = []
    tb = error.__traceback__
    while tb is not None:
        if not tb.tb_frame.f_globals.get("__name__", "").startswith(_OWN):
            kept.append(tb)
        tb = tb.tb_next
    rebuilt: TracebackType | None = None
    for entry in reversed(kept):
        rebuilt = TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return error.with_traceback(rebuilt)


def _filtering_enabled() -> bool:
    """TensorFlow's own switch, read where TensorFlow is loaded (it is, if it raised)."""
    utils = sys.modules.get("tensorflow.python.util.traceback_utils")
    check = getattr(utils, "is_traceback_filtering_enabled", None)
    try:
        return bool(check()) if check is not None else True
    except Exception:  # cannot tell: TensorFlow's default, on
        return True
