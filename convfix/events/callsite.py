"""Where in the user's code a convolution was called from, as ``"path:line"``.

The walk starts at the caller and goes outward, skipping every frame that belongs to
convfix, TensorFlow, Keras, wrapt, structlog or the Python standard library. Whether a
code object is library or user code never changes, so the answer is cached per code
object: a hot loop that repairs 10,000 convolutions pays for a few dict lookups a frame.

AutoGraph runs the body of a ``tf.function`` as generated code loaded from a temporary
file (``/tmp/__autograph_generated_file*.py``). Reporting that file would be useless, so
a generated frame is mapped back to the user's source line the way TensorFlow maps its
own stack traces; a generated frame that cannot be mapped is skipped.
"""

from __future__ import annotations

import os
import sys
import threading
from types import CodeType, FrameType
from typing import Any

__all__ = ["LIBRARY_PACKAGES", "user_callsite"]

LIBRARY_PACKAGES = frozenset({"convfix", "tensorflow", "keras", "tf_keras", "wrapt", "structlog"})
"""Top-level packages whose frames are never the user's callsite (the stdlib is also skipped)."""

_USER, _LIBRARY, _GENERATED = 0, 1, 2
_GENERATED_PREFIX = "__autograph_generated_file"
_STDLIB_DIR = os.path.dirname(os.__file__) + os.sep
_THIRD_PARTY_DIRS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")
# Bounds the caches in a program that keeps generating code (AutoGraph retracing).
_MAX_CACHED = 10_000

# Keyed by file and code: equal code objects compiled from different files compare equal.
_kinds: dict[tuple[str, CodeType], int] = {}
_origins: dict[tuple[str, int], str] = {}


def user_callsite() -> str | None:
    """``"path:line"`` of the innermost frame that is user code, or None if there is none.

    Inside a ``tf.function`` the path and line are those of the original source, not of
    AutoGraph's generated file.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        kind = _kinds.get((code.co_filename, code))
        if kind is None:
            kind = _classify(frame)
        if kind == _USER:
            return f"{code.co_filename}:{frame.f_lineno}"
        if kind == _GENERATED:
            origin = _autograph_origin(frame)
            if origin is not None:
                return origin
        frame = frame.f_back
    return None


def _classify(frame: FrameType) -> int:
    code = frame.f_code
    module = frame.f_globals.get("__name__")
    package = module.partition(".")[0] if isinstance(module, str) else ""
    # Generated code runs with the globals of the function it was converted from, so the
    # module name says whose code it is even for AutoGraph's frames.
    if package in LIBRARY_PACKAGES or _is_stdlib(package, code.co_filename):
        kind = _LIBRARY
    elif os.path.basename(code.co_filename).startswith(_GENERATED_PREFIX):
        kind = _GENERATED
    else:
        kind = _USER
    if len(_kinds) >= _MAX_CACHED:
        _kinds.clear()
    _kinds[code.co_filename, code] = kind
    return kind


def _is_stdlib(package: str, filename: str) -> bool:
    # The name alone is not enough: a user's own `code.py` or `test.py` shadows a stdlib name.
    if package not in sys.stdlib_module_names:
        return False
    if filename.startswith("<"):  # "<frozen importlib._bootstrap>"
        return True
    return filename.startswith(_STDLIB_DIR) and not any(d in filename for d in _THIRD_PARTY_DIRS)


def _autograph_origin(frame: FrameType) -> str | None:
    location = (frame.f_code.co_filename, frame.f_lineno)
    origin = _origins.get(location)
    if origin is None:
        origin = _origin_from_tf_stack(location) or _origin_from_converted_function(frame, location)
        if origin is None:
            return None
        if len(_origins) >= _MAX_CACHED:
            _origins.clear()
        _origins[location] = origin
    return origin


def _origin_from_tf_stack(location: tuple[str, int]) -> str | None:
    """Map through the source maps TensorFlow keeps for its own stack traces.

    While a converted function runs, ``converted_call`` holds an AutoGraph
    ``StackTraceMapper`` on a per-thread stack in ``tensorflow.python.util.tf_stack``; its
    effective source map covers every function being converted on this thread, including
    the nested functions AutoGraph generates for ``if`` and loop bodies, and maps
    ``(generated file, line)`` to ``(original file, line, function name)``.
    """
    tf_stack = sys.modules.get("tensorflow.python.util.tf_stack")
    if tf_stack is None:
        return None
    try:
        stack = tf_stack._source_mapper_stacks.get(threading.get_ident())
        if not stack:
            return None
        origin = stack[-1].get_effective_source_map().get(location)
        return None if origin is None else f"{origin[0]}:{origin[1]}"
    except Exception:  # a TensorFlow version with other internals: try the other way
        return None


def _origin_from_converted_function(frame: FrameType, location: tuple[str, int]) -> str | None:
    """Map through ``ag_source_map``, which AutoGraph attaches to every converted function.

    ``converted_call`` holds the converted function in a local while it runs it, so a frame
    further out has it; its map covers the whole generated file, nested bodies included.
    Keys are ``LineLocation(filename, lineno)`` named tuples, equal to plain tuples.
    """
    outer: FrameType | None = frame
    while outer is not None:
        for value in list(outer.f_locals.values()):
            source_map = _source_map_of(value)
            if source_map is not None and location in source_map:
                loc = source_map[location].loc
                return f"{loc.filename}:{loc.lineno}"
        outer = outer.f_back
    return None


def _source_map_of(value: object) -> dict[tuple[str, int], Any] | None:
    try:
        source_map = getattr(value, "ag_source_map", None)
    except Exception:  # any user object's __getattr__ may raise; it is not a converted function
        return None
    return source_map if isinstance(source_map, dict) else None
