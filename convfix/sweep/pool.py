"""The sweep's child processes, seen from the parent: start one, give it a job, read how
the job ended (each case's result, a crash, a hang).

Two kinds (``child.py`` says what runs inside):

- ``ForkServer``: one interpreter imports TensorFlow once and forks a process per job. A
  job costs a fork and TensorFlow's first eager op in it: about 0.1 s here, against about
  3 s to import TensorFlow again. TensorFlow does not promise that forking after its import
  is safe, so a sweep's first job on each server is a probe (``run.py``), and a hang seen
  in a fork is confirmed in a fresh interpreter before it counts.
- ``Fresh``: one new interpreter per job.

A hang is a case that reports nothing for ``case_timeout`` seconds: its process is killed
(SIGKILL) and the report names the case. At ``stop_at`` (the sweep's deadline) a job is
cut short the same way, keeping the results it had.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from convfix.sweep.child import MARKER

START_TIMEOUT = 120.0  # seconds for a child to import TensorFlow and say ready


class ChildFailed(RuntimeError):
    """A child could not start (TensorFlow failed to import) or reported a fatal error."""


@dataclass
class Report:
    """How one job ended."""

    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    started: list[int] = field(default_factory=list)
    done: bool = False  # the job said done and its process exited 0
    status: int | None = None  # exit status; negative: the signal that killed it
    hung: int | None = None  # the case running when the job was killed for a hang
    cut: bool = False  # killed at the sweep's deadline
    device: str | None = None
    convfix_mode: str | None = None  # the mode convfix ran in (a convfix job)
    fatal: str | None = None  # a Python error in the job itself (a bad config, a bug)
    bugs: dict[int, str] = field(default_factory=dict)  # cases the sweep failed to judge
    stderr: str = ""  # the meaningful end of the child's stderr, after a crash
    seconds: float = 0.0  # running the job (a fresh interpreter's start-up not included)
    wall: float = 0.0  # all it took, start-up included

    @property
    def crashed(self) -> bool:
        """The process died on its own: an abort, a signal, an exit without ``done``."""
        return not self.done and self.hung is None and not self.cut and self.fatal is None


class _Lines:
    """Protocol lines from a pipe, with a deadline on each wait."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""
        self.closed = False

    def next(self, deadline: float) -> dict[str, Any] | None:
        """The next protocol line, or None at the deadline or at the end of the pipe."""
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                line = raw.decode(errors="replace")
                if line.startswith(MARKER):
                    parsed: dict[str, Any] = json.loads(line[len(MARKER) :])
                    return parsed
            if self.closed:
                return None
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            ready, _, _ = select.select([self._fd], [], [], wait)
            if not ready:
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self.closed = True
            self._buffer += chunk


class _Process:
    """A child interpreter, its stderr kept in a file (a crash's message is read back)."""

    def __init__(self, how: str, env: dict[str, str], stop_at: float) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed in close())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "convfix.sweep.child", how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        assert self.process.stdout is not None
        self.lines = _Lines(self.process.stdout)
        ready = self.lines.next(min(stop_at, time.monotonic() + START_TIMEOUT))
        if ready is None or "ready" not in ready:
            self.close()
            raise ChildFailed(
                "a sweep child did not start (importing TensorFlow): "
                + (self.stderr_tail(0) or self.stderr_tail(0, last=True))
            )
        self.facts: dict[str, Any] = ready["ready"]

    def send(self, job: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(job) + "\n").encode())
        self.process.stdin.flush()

    def stderr_size(self) -> int:
        return os.fstat(self._stderr.fileno()).st_size

    def stderr_tail(self, offset: int, last: bool = False) -> str:
        """What stderr says since ``offset``: why a child died, or (``last``) its last line."""
        self._stderr.seek(offset)
        text = self._stderr.read().decode(errors="replace")
        if last:
            return (text.strip().splitlines() or [""])[-1][:300]
        return meaningful(text)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


def read_job(
    lines: _Lines, report: Report, case_timeout: float, stop_at: float, kill: Callable[[], None]
) -> None:
    """Read a job's lines into ``report`` until it is done, its process exits (a fork
    server's ``exit`` line) or it stops answering; ``kill`` ends the job's process (a hang,
    the deadline)."""
    last = time.monotonic()
    while True:
        message = lines.next(min(last + case_timeout, stop_at))
        if message is None:
            if lines.closed:
                return
            report.cut = time.monotonic() >= stop_at
            if not report.cut:  # the case running, or -1: none (the job's own set-up)
                report.hung = report.started[-1] if report.started else -1
            kill()
            return
        last = time.monotonic()
        if "start" in message:
            report.started.append(int(message["start"]))
        elif "result" in message:
            report.results[int(message["index"])] = message["result"]
        elif "device" in message:
            report.device = str(message["device"])
            report.convfix_mode = message.get("convfix_mode")
        elif "bug" in message:
            report.bugs[int(message["index"])] = str(message["bug"])
        elif "fatal" in message:
            report.fatal = str(message["fatal"])
        elif "exit" in message:
            report.status = int(message["exit"])
            return
        elif "done" in message:
            report.done = True
            return


class ForkServer:
    """An interpreter that imported TensorFlow once and forks a process per job."""

    def __init__(self, env: dict[str, str], stop_at: float) -> None:
        self._child = _Process("serve", env, stop_at)
        self.facts = self._child.facts
        self.alive = True

    def run(self, job: dict[str, Any], case_timeout: float, stop_at: float) -> Report:
        """Run ``job`` in a fork; kill the fork on a hang or at ``stop_at``."""
        started = time.monotonic()
        offset = self._child.stderr_size()
        report = Report()
        try:
            self._child.send(job)
        except OSError:  # the server is gone: the job never started
            self.close()
            return report
        lines = self._child.lines
        first = lines.next(min(stop_at, time.monotonic() + case_timeout))
        if first is None or "forked" not in first:
            self.close()
            report.cut = time.monotonic() >= stop_at
            return report
        pid = int(first["forked"])
        read_job(lines, report, case_timeout, stop_at, lambda: _kill(pid))
        while report.status is None:  # the server's word on how the fork ended
            ended = lines.next(time.monotonic() + 30.0)
            if ended is None:  # the server itself is gone or stuck: start another
                _kill(pid)
                self.close()
                break
            if "exit" in ended:
                report.status = int(ended["exit"])
        report.done = report.done and report.status == 0
        if not report.done and report.hung is None and not report.cut:
            report.stderr = self._child.stderr_tail(offset)
        report.seconds = report.wall = time.monotonic() - started
        return report

    def close(self) -> None:
        """Stop the server (and with it nothing else: each job's fork has exited)."""
        self.alive = False
        self._child.close()


class Fresh:
    """A new interpreter per job: slower (TensorFlow imported each time), never forked."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self.facts: dict[str, Any] = {}

    def run(self, job: dict[str, Any], case_timeout: float, stop_at: float) -> Report:
        """Start an interpreter, run ``job`` in it, wait for it to exit."""
        started = time.monotonic()
        report = Report()
        try:
            child = _Process("once", self._env, stop_at)
        except ChildFailed:
            if time.monotonic() < stop_at:
                raise
            report.cut = True
            return report
        self.facts = child.facts
        ready = time.monotonic()
        try:
            child.send(job)
            read_job(child.lines, report, case_timeout, stop_at, child.process.kill)
            try:
                report.status = child.process.wait(timeout=max(1.0, stop_at - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                report.status = child.process.wait()
            report.done = report.done and report.status == 0
            if not report.done and report.hung is None and not report.cut:
                report.stderr = child.stderr_tail(0)
        finally:
            child.close()
        report.seconds, report.wall = time.monotonic() - ready, time.monotonic() - started
        return report


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has exited already
        os.kill(pid, signal.SIGKILL)


# The lines that say why a process died: TensorFlow's CHECK failures, glibc's heap checks.
_WHY = re.compile(
    r"Check failed|F\d{4} |double free|corrupted|malloc|free\(\)|Segmentation|Aborted|Error"
)


def meaningful(stderr: str) -> str:
    """The line of a dead child's stderr that says why it died ("": none says; a SIGSEGV
    usually dies without a word)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if _WHY.search(line) and "convfix." not in line:  # not one of convfix's events
            return line[:300]
    return ""
