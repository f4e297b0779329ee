"""Read convfix event files for ``convfix report``: JSON lines, plain or gzip, or stdin.

A line that is not a JSON object with an ``event`` name (a process killed mid-write, a
stray print into the same file, a corrupt block) is counted and named by ``file:line``,
never fatal. A file that cannot be opened is named with the reason. Gzip is recognised by
its magic bytes, not its name, so ``-`` (stdin) may be gzip too.
"""

from __future__ import annotations

import gzip
import io
import re
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec

_GZIP_MAGIC = b"\x1f\x8b"
# A line of structlog's ConsoleRenderer as convfix's writer uses it: time, [level], a
# convfix event name (colour codes, present only when written to a terminal, stripped).
_CONSOLE = re.compile(rb"^\S+ +\[ *(debug|info|warning|error|critical) *\] +convfix\.[a-z_]+(\s|$)")
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")
STDIN = "-"


@dataclass(frozen=True)
class Event:
    """One event and where it was read: ``source`` is the file name as given."""

    source: str
    line: int
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data["event"])

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass
class Reading:
    """Everything read from the files named on the command line."""

    events: list[Event] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    """Files opened and read (possibly empty)."""
    unreadable: list[str] = field(default_factory=list)
    """``file:line`` of each line that was not an event."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) for each file that could not be opened or read at all."""
    truncated: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) for files that broke off part-way (a cut gzip stream)."""
    console: dict[str, int] = field(default_factory=dict)
    """File to how many of its lines are events in console format, not counted in
    ``unreadable``: one sentence about the format says more than every line's number."""


def read_files(names: Sequence[str], stdin: IO[bytes] | None = None) -> Reading:
    """Read every file in ``names`` (``-`` is ``stdin``, default ``sys.stdin.buffer``)."""
    reading = Reading()
    for name in names:
        try:
            raw = _open(name, stdin)
        except OSError as exc:
            reading.failed.append((name, exc.strerror or str(exc)))
            continue
        lines = 0
        try:
            with raw:
                for lines, line in enumerate(raw, start=1):
                    _take(reading, name, lines, line)
        except (OSError, EOFError, zlib.error) as exc:
            # A gzip stream cut short or a disk error: keep what was read before it.
            if lines == 0:
                reading.failed.append((name, _reason(exc)))
                continue
            reading.truncated.append((name, f"stopped after line {lines}: {_reason(exc)}"))
        reading.read.append(name)
    return reading


def _open(name: str, stdin: IO[bytes] | None) -> io.BufferedIOBase:
    if name == STDIN:
        stream = stdin if stdin is not None else sys.stdin.buffer
        # Not closed with the others: wrap it so closing the wrapper leaves stdin open.
        buffered: io.BufferedReader = io.BufferedReader(_Unclosed(stream))
    else:
        buffered = open(name, "rb")  # noqa: SIM115  (closed by the caller's ``with``)
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")
    return buffered


class _Unclosed(io.RawIOBase):
    """A raw view of a stream that is never closed through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _take(reading: Reading, name: str, number: int, line: bytes) -> None:
    if not line.strip():
        return  # a blank line (an editor's trailing newline) is not a broken event
    try:
        data = msgspec.json.decode(line)
    except msgspec.DecodeError:
        data = None
    if not _is_event(data):
        if _CONSOLE.match(_ANSI.sub(b"", line)):
            reading.console[name] = reading.console.get(name, 0) + 1
        else:
            reading.unreadable.append(f"{name}:{number}")
        return
    reading.events.append(Event(name, number, data))


def _is_event(data: object) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return False
    if data["event"] != "convfix.summary":
        return True
    # Counts are what a report adds up: a summary it cannot add is not half used.
    counts = data.get("counts")
    return (
        isinstance(data.get("pid"), int)
        and isinstance(counts, list)
        and all(_is_count(entry) for entry in counts)
    )


def _is_count(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("count"), int)
        and not isinstance(entry.get("count"), bool)
        and isinstance(entry.get("policy"), str)
        and isinstance(entry.get("reason"), str)
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
