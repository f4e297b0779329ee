"""Where convfix's events go, and the one rule every value obeys on its way there.

Three sinks, chosen by ``[events] sink``: convfix's own structlog logger over its own line
writer (JSON lines or console), the standard library's ``logging.getLogger("convfix")``,
or the application's structlog configuration. A fourth, :class:`CaptureSink`, backs
``convfix.testing.capture_events()``. None of them configures logging for the application.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, Protocol, TextIO

import structlog

from convfix.events import distribute

LOGGER_NAME = "convfix"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_LEADING_KEYS = ("timestamp", "level", "event")
# Events carry shapes and dtype names; anything nested deeper than this is a bug elsewhere.
_MAX_DEPTH = 4


class Sink(Protocol):
    """Receives finished event dicts: timestamped, levelled, made JSON-safe."""

    def write(self, level: str, event_dict: dict[str, object]) -> None: ...

    def close(self) -> None: ...


def build(path: str, format: str, sink: str) -> Sink:
    """The sink that ``[events]`` settings describe. Raises OSError if a file cannot be opened."""
    if sink == "convfix":
        return WriterSink(path, format)
    if sink == "logging":
        return LoggingSink()
    if sink == "structlog":
        return StructlogSink()
    raise ValueError(f"events.sink: expected 'convfix', 'logging' or 'structlog', got {sink!r}")


def json_safe(value: object, depth: int = 0) -> object:
    """``value`` if it is a JSON scalar, or a list/dict of them; else its type name.

    The last line of defence: a bug that hands a tensor to an event must never put tensor
    values (or a tensor's repr, which holds them) into a log.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # NaN is not JSON
    if depth < _MAX_DEPTH:
        if isinstance(value, (list, tuple)):
            return [json_safe(item, depth + 1) for item in value]
        if isinstance(value, Mapping):
            return {_json_key(k): json_safe(v, depth + 1) for k, v in value.items()}
    return f"<{type(value).__name__}>"


def _json_key(key: object) -> str:
    if isinstance(key, (str, int, float, bool)) or key is None:
        return str(key)
    return f"<{type(key).__name__}>"


def resolve_path(path: str) -> str:
    """``path`` formatted like ``str.format``: ``{pid}`` is the process id, ``{task}`` the
    tf.distribute task index, ``{task_type}`` its type (a chief and worker 0 share index 0),
    ``{{`` and ``}}`` are braces (the config validates this)."""
    if "{" not in path and "}" not in path:
        return path
    # One reading of TF_CONFIG for the file name and the events' "worker" field, so a line
    # always sits in the file its worker names; worker 0 without one (a single process).
    kind, index = distribute.task() or ("worker", 0)
    return path.format(pid=os.getpid(), task=index, task_type=kind)


class _LineWriter:
    """structlog's WriteLogger, minus its process-wide lock table (a fork could leave a
    lock in it held): every line is written whole and flushed at once."""

    __slots__ = ("_lock", "_owned", "_stream")

    def __init__(self, stream: TextIO, *, owned: bool) -> None:
        self._stream = stream
        self._owned = owned
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            self._stream.write(message + "\n")
            self._stream.flush()

    debug = info = warning = error = critical = msg

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        if self._owned:
            # Closing flushes; on a full disk that fails again, and the file is closed anyway.
            with contextlib.suppress(OSError, ValueError):
                self._stream.close()


def _open(path: str) -> _LineWriter:
    if path == "stderr":
        return _LineWriter(sys.stderr, owned=False)
    if path == "stdout":
        return _LineWriter(sys.stdout, owned=False)
    target = Path(resolve_path(path)).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    return _LineWriter(target.open("a", encoding="utf-8"), owned=True)


def _leading_keys_first(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> dict[str, Any]:
    # structlog appends "event" last; a reader scans time, level and event first.
    leading = {k: event_dict.pop(k) for k in _LEADING_KEYS if k in event_dict}
    return leading | dict(event_dict)


class WriterSink:
    """convfix's private structlog logger: one JSON line (or console line) per event."""

    def __init__(self, path: str, format: str) -> None:
        if format not in ("json", "console"):
            raise ValueError(f"events.format: expected 'json' or 'console', got {format!r}")
        self._writer = _open(path)
        renderer: Any = (
            structlog.processors.JSONRenderer()
            if format == "json"
            else structlog.dev.ConsoleRenderer(colors=self._writer.isatty())
        )
        # A BoundLogger built directly reads nothing from structlog's global configuration.
        self._logger = structlog.BoundLogger(
            self._writer, processors=[_leading_keys_first, renderer], context={}
        )

    def write(self, level: str, event_dict: dict[str, object]) -> None:
        getattr(self._logger, level)(**event_dict)

    def close(self) -> None:
        self._writer.close()


class LoggingSink:
    """``logging.getLogger("convfix")``: the JSON line as the message, the dict as
    ``record.convfix`` for handlers that want the fields."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(LOGGER_NAME)

    def write(self, level: str, event_dict: dict[str, object]) -> None:
        self._logger.log(LEVELS[level], json.dumps(event_dict), extra={LOGGER_NAME: event_dict})

    def close(self) -> None:
        pass


class StructlogSink:
    """``structlog.get_logger("convfix")``: whatever the application configured."""

    def __init__(self) -> None:
        # A lazy proxy: follows the application's configuration even if it changes later.
        self._logger = structlog.get_logger(LOGGER_NAME)

    def write(self, level: str, event_dict: dict[str, object]) -> None:
        fields = dict(event_dict)
        event = fields.pop("event")
        getattr(self._logger, level)(event, **fields)

    def close(self) -> None:
        pass


class CaptureSink:
    """Appends every event dict to a list, for ``convfix.testing.capture_events()``."""

    def __init__(self, into: list[dict[str, object]]) -> None:
        self._into = into
        self._lock = threading.Lock()

    def write(self, level: str, event_dict: dict[str, object]) -> None:
        with self._lock:
            self._into.append(event_dict)

    def close(self) -> None:
        pass
