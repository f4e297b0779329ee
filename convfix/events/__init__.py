"""Structured events: every intervention convfix makes, as a record people read later.

An intervention, warning or refusal is written in full the first time its key
``(callsite, layer, policy, reason)`` is seen by a replica as that event; repeats are only
counted, and the counts go out as a ``convfix.summary`` event every ``summary_interval``
seconds (when they changed) and once more at exit. The exit summary is written by every
process that wrote an event to a configured sink (``convfix.patched`` at the least), with
``total: 0`` when nothing was counted, so that a run that ended cleanly can be told from one
that died; a process that never imported TensorFlow stays quiet. Other events (patched,
unsupported, internal errors) are written every time.

Under tf.distribute every event names its ``worker`` (the ``TF_CONFIG`` task, e.g.
``"worker:1"``; null outside a multi-worker job), and interventions, warnings and
refusals name the ``replica`` that traced or ran the call (``strategy.run``; null outside
one, or when the id is a run-time tensor). See :mod:`convfix.events.distribute`.

Writing an event never raises into the caller: a convolution must not fail because a log
file did. Failed writes are counted, see :func:`dropped`.

Example line (``format = "json"``)::

    {"timestamp": "2026-11-25T06:56:17.123456Z", "level": "info",
     "event": "convfix.intervention", "schema_version": 1, "policy": "dtype", ...}
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Protocol

from convfix.events import distribute
from convfix.events import sinks as _sink
from convfix.events.callsite import user_callsite

__all__ = [
    "INTERNAL_ERROR",
    "INTERVENTION",
    "PATCHED",
    "SCHEMA_VERSION",
    "SUMMARY",
    "UNSUPPORTED",
    "WARNING",
    "EventsSettings",
    "configure",
    "counts",
    "dropped",
    "emit",
    "record",
    "reset",
    "write_summary",
]

SCHEMA_VERSION = 1
INTERVENTION = "convfix.intervention"  # a fix was applied
WARNING = "convfix.warning"  # warn mode: problem found, nothing changed
PATCHED = "convfix.patched"  # once when TensorFlow is patched
UNSUPPORTED = "convfix.unsupported"  # nothing to patch / unsupported version
INTERNAL_ERROR = "convfix.internal_error"
REFUSED = "convfix.refused"  # a call stopped with ConvFixError (unsafe, or strict mode)
SUMMARY = "convfix.summary"

Key = tuple[str | None, str | None, str, str]
"""What makes two interventions "the same": (callsite, layer, policy, reason)."""

_FoldKey = tuple[Key, int | None, str]
# Folded per replica too: each replica of a MirroredStrategy traces the step itself, and
# without the replica the second replica's repair would only be counted, leaving no line
# to show that it ran (or which one failed). Replicas per process are few (devices), so
# this adds at most that many lines per key; counts() still adds up per Key.
# And per event: in warn mode a call TensorFlow would crash on is warned about, then
# refused; folded together, the refusal would be counted as a second warning.


class EventsSettings(Protocol):
    """The ``[events]`` table of the configuration (``convfix.config.EventsConfig``)."""

    @property
    def path(self) -> str: ...  # "stderr" | "stdout" | a file, with {pid}, {task}, {task_type}
    @property
    def format(self) -> Literal["json", "console"]: ...
    @property
    def sink(self) -> Literal["convfix", "logging", "structlog"]: ...
    @property
    def summary_interval(self) -> float: ...  # seconds; 0 = no periodic summary


@dataclass(frozen=True)
class _DefaultSettings:
    path: str = "stderr"
    format: Literal["json", "console"] = "json"
    sink: Literal["convfix", "logging", "structlog"] = "convfix"
    summary_interval: float = 60.0


class _State:
    """Everything a process (or a forked child) counts and writes to."""

    def __init__(self, settings: EventsSettings | None = None) -> None:
        self.lock = threading.Lock()  # counts only: never held while writing or calling out
        self.counts: dict[_FoldKey, int] = {}
        self.first: dict[_FoldKey, str] = {}  # key -> op as first seen
        self.elapsed: dict[_FoldKey, float] = {}  # key -> total elapsed_ms, where events had one
        self.changes = 0
        self.changes_summarized = 0
        self.dropped = 0
        self.settings = settings
        self.active = False  # wrote an event to a configured sink: a final summary is owed
        self.configured: _sink.Sink | None = None
        self.overrides: list[_sink.Sink] = []  # capture_events(), innermost last
        self.stop_timer = threading.Event()
        self.timer: threading.Thread | None = None


_state = _State()


def configure(cfg: EventsSettings) -> None:
    """(Re)build the sink from ``[events]`` settings.

    Never calls ``structlog.configure()`` and never touches the application's logging
    configuration. Until it is called, events go to stderr as JSON lines. Raises OSError
    if the file cannot be opened; the previous sink then stays in place.
    """
    new = _sink.build(cfg.path, cfg.format, cfg.sink)
    with _state.lock:
        old, _state.configured, _state.settings = _state.configured, new, cfg
        old_stop, _state.stop_timer, _state.timer = _state.stop_timer, threading.Event(), None
        counted = bool(_state.counts)
    old_stop.set()
    if old is not None:
        old.close()
    if counted:
        _ensure_timer()


def record(
    event: str,
    *,
    policy: str,
    op: str,
    action: str,
    mode: str,
    reason: str,
    before: Mapping[str, object],
    after: Mapping[str, object],
    graph: bool,
    layer: str | None = None,
    callsite: str | None = None,
    level: str = "info",
    **fields: object,
) -> None:
    """Record one intervention or warning; written in full only the first time its key is seen
    by its replica.

    ``callsite`` defaults to the user's ``path:line`` (:func:`.callsite.user_callsite`).
    ``replica`` is the calling thread's tf.distribute replica (:func:`.distribute.replica`).
    Values must be small: shapes as lists, dtypes and paddings as strings, never tensors.
    """
    try:
        if callsite is None:
            callsite = user_callsite()
        replica = distribute.replica()
        key: _FoldKey = ((callsite, layer, policy, reason), replica, event)
        with _state.lock:
            seen = _state.counts.get(key, 0)
            _state.counts[key] = seen + 1
            _state.changes += 1
            elapsed = fields.get("elapsed_ms")
            if isinstance(elapsed, (int, float)):  # time spent survives folding, like counts
                _state.elapsed[key] = _state.elapsed.get(key, 0.0) + float(elapsed)
            if not seen:
                _state.first[key] = op
        if seen:
            return
        _ensure_timer()
        _write(
            level,
            event,
            {
                "policy": policy,
                "op": op,
                "action": action,
                "mode": mode,
                "reason": reason,
                "callsite": callsite,
                "layer": layer,
                "graph": graph,
                "replica": replica,
                "before": before,
                "after": after,
                **fields,
            },
        )
    except Exception:  # events never break a convolution
        _count_dropped()


def report(
    event: str,
    *,
    policy: str,
    op: str,
    reason: str,
    mode: str,
    action: str,
    before: Mapping[str, object],
    after: Mapping[str, object],
    graph: bool,
    layer: str | None,
    level: str = "info",
    **fields: Any,
) -> None:
    """Report what convfix did about one call (INTERVENTION, WARNING, REFUSED): the one
    writer the pipeline and recovery use. Never raises: after dispatch the result is in
    hand, and a failing event must not lose it (it becomes an internal_error event)."""
    try:
        record(
            event,
            policy=policy,
            op=op,
            action=action,
            mode=mode,
            reason=reason,
            before=dict(before),
            after=dict(after),
            graph=graph,
            layer=layer,
            level=level,
            **fields,
        )
    except Exception as bug:
        emit(INTERNAL_ERROR, level="error", stage="events", error_type=type(bug).__name__)


def emit(event: str, *, level: str = "info", **fields: object) -> None:
    """Write one event every time (patched, unsupported, internal_error): never folded."""
    _write(level, event, fields)


def counts() -> dict[Key, int]:
    """How often each key was recorded in this process (since the last :func:`reset`),
    all replicas together (the summary event has them one by one)."""
    totals: dict[Key, int] = {}
    with _state.lock:
        for (key, _replica, _event), n in _state.counts.items():
            totals[key] = totals.get(key, 0) + n
    return totals


def dropped() -> int:
    """How many events could not be written (closed file, full disk, failing handler)."""
    with _state.lock:
        return _state.dropped


def write_summary() -> None:
    """Write a ``convfix.summary`` event with the count of every key, first occurrence included.

    One entry per key, replica and event; an entry has a ``replica`` field only when it is known,
    so summaries outside tf.distribute read as before."""
    _write_summary(final=False)


def reset() -> None:
    """Forget counts, first-seen keys and dropped writes (tests; forked children start afresh),
    and that a final summary is owed at exit, until the next event or count."""
    with _state.lock:
        _state.active = False
        _state.counts.clear()
        _state.first.clear()
        _state.elapsed.clear()
        _state.changes = _state.changes_summarized = _state.dropped = 0


def _write_summary(*, final: bool) -> None:
    with _state.lock:
        entries: list[dict[str, object]] = [
            {
                "callsite": key[0],
                "layer": key[1],
                "policy": key[2],
                "reason": key[3],
                "event": event,
                "op": _state.first[key, replica, event],
                "count": n,
                **({} if replica is None else {"replica": replica}),
                **_elapsed_field((key, replica, event)),
            }
            for (key, replica, event), n in _state.counts.items()
        ]
        total = sum(_state.counts.values())
        _state.changes_summarized = _state.changes
    _write("info", SUMMARY, {"counts": entries, "total": total, "pid": os.getpid(), "final": final})


def _elapsed_field(key: _FoldKey) -> dict[str, float]:
    total = _state.elapsed.get(key)
    return {} if total is None else {"elapsed_ms": round(total, 3)}


def _write(level: str, event: str, fields: Mapping[str, object]) -> None:
    try:
        if level not in _sink.LEVELS:
            level = "info"  # a wrong level must not cost the event
        event_dict: dict[str, object] = {
            "timestamp": _utc_now(),
            "level": level,
            "event": event,
            "schema_version": SCHEMA_VERSION,
            # On every event, summaries included: many workers often share one log stream.
            "worker": distribute.worker(),
        }
        for name, value in fields.items():
            if name not in event_dict:
                event_dict[name] = _sink.json_safe(value)
        _active_sink().write(level, event_dict)
        if _state.settings is not None:
            _state.active = True  # a plain assignment: no lock needed for a flag only set
    except Exception:  # a closed file, a full disk, a broken handler: not the caller's problem
        _count_dropped()


def _active_sink() -> _sink.Sink:
    with _state.lock:
        sink = _state.overrides[-1] if _state.overrides else _state.configured
    if sink is not None:
        return sink
    # Nothing configured yet: the defaults, unless configure() wins the race.
    default = _sink.build("stderr", "json", "convfix")
    with _state.lock:
        if _state.configured is None:
            _state.configured = default
        return _state.overrides[-1] if _state.overrides else _state.configured


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _count_dropped() -> None:
    with _state.lock:
        _state.dropped += 1


def _push_sink(sink: _sink.Sink) -> None:
    """Send every event to ``sink`` until :func:`_pop_sink` (``testing.capture_events``)."""
    with _state.lock:
        _state.overrides.append(sink)


def _pop_sink(sink: _sink.Sink) -> None:
    with _state.lock:
        _state.overrides.remove(sink)


# -- periodic, exit and fork-time summaries -------------------------------------------


def _ensure_timer() -> None:
    """Start the periodic summary thread, once something was counted."""
    with _state.lock:
        settings = _state.settings or _DefaultSettings()
        if settings.summary_interval <= 0 or _state.timer is not None:
            return
        _state.timer = threading.Thread(
            target=_summarize_every,
            args=(settings.summary_interval, _state.stop_timer),
            name="convfix-summary",
            daemon=True,
        )
        timer = _state.timer
    try:
        timer.start()
    except RuntimeError:  # no thread now (memory is short, as after an OOM): try next time
        with _state.lock:
            if _state.timer is timer:
                _state.timer = None


def _summarize_every(interval: float, stop: threading.Event) -> None:
    # A killed process loses at most one interval of counts.
    while not stop.wait(interval):
        with _state.lock:
            changed = _state.changes != _state.changes_summarized
        if changed:
            _write_summary(final=False)


def _at_exit() -> None:
    _state.stop_timer.set()
    with _state.lock:
        owed = _state.active or bool(_state.counts)
    if owed:  # total 0 too: without it a clean run and a killed one leave the same file
        _write_summary(final=True)


def _after_fork_in_child() -> None:
    """A forked child (a data-loader worker) counts afresh and reopens its own file, so
    that ``{pid}`` names the child. The parent's timer thread did not survive the fork."""
    global _state
    inherited = _state
    _state = _State(inherited.settings)
    _state.overrides = inherited.overrides
    _state.configured = inherited.configured
    if inherited.configured is not None:
        # A new writer also has a new lock, in case another thread held the old one at the
        # fork. If the file cannot be opened, the child keeps writing to the inherited one.
        with contextlib.suppress(Exception):
            configure(inherited.settings or _DefaultSettings())


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
