"""Running a sweep within its budget: which job each child process runs next, and what a
job's end means for its cases.

Cases are drawn in batches and run bare in one child each; every case that was not right
runs again with convfix, in batches too. The known process-killing classes
(``Case.risky``) run alone, one child each, and so does every case that aborted or hung
alone when it runs with convfix. When a batch dies, the case it died on runs alone: if it
dies alone too, the batch's earlier results stand; if not, each earlier case runs alone
(heap corruption can kill a later case than the one that caused it), so only a case that
kills its own process is an ``abort``. The cases the batch never reached go back as a
batch. A hang is confirmed in a fresh interpreter before it is a ``timeout``. Work that
finishes cases goes before new cases, and drawing stops while there is time left to finish
what was drawn.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from convfix.sweep.grid import Case, sample
from convfix.sweep.pool import ChildFailed, ForkServer, Fresh, Report
from convfix.sweep.report import CaseResult, SweepResult

DEFAULT_BUDGET = 120.0  # seconds, TensorFlow's import included
CASE_TIMEOUT = 20.0  # seconds without an answer before a case counts as a hang
RUNNERS = ("auto", "fork", "fresh")
# The fork server's first job: a call every build answers, to see that forking works.
PROBE = Case(-1, "conv2d", (1, 4, 4, 1), (1, 1, 1, 1), (1, 1), (1, 1), "SAME", False, "float32", 0)

Progress = Callable[[int, float], None]


class SweepError(RuntimeError):
    """The sweep could not run: TensorFlow did not import, convfix's configuration is
    bad, or a job failed in the sweep's own code."""


def run(
    seed: int = 0,
    budget: float = DEFAULT_BUDGET,
    device: str | None = None,
    cases: int | Iterable[Case] | None = None,
    *,
    jobs: int | None = None,
    runner: str = "auto",
    progress: Progress | None = None,
    case_timeout: float = CASE_TIMEOUT,
) -> SweepResult:
    """Sweep the grid on this TensorFlow and ``device`` (None: TensorFlow's default) for at
    most ``budget`` seconds: cases ``0, 1, ...`` of ``seed`` until the budget is spent,
    ``cases`` of them (an int), or exactly the given cases. ``jobs`` child processes run at
    once (default: ``default_jobs()``); ``runner`` is ``fork`` (one TensorFlow import per
    child, a fork per job), ``fresh`` (an interpreter per job) or ``auto`` (fork if a probe
    fork works). ``progress(cases_finished, seconds)`` is called about 4 times a second."""
    if runner not in RUNNERS:
        raise ValueError(f"runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    started = time.monotonic()
    if cases is None:
        source: Iterator[Case] = sample(seed)
    elif isinstance(cases, int):
        source = sample(seed, cases)
    else:
        source = iter(cases)
    sweep = _Sweep(source, device, runner, started, budget, case_timeout)
    workers = [
        threading.Thread(target=sweep.slot, name=f"convfix-sweep-{n}", daemon=True)
        for n in range(jobs or default_jobs())
    ]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        time.sleep(0.25)
        if progress is not None:
            progress(sweep.finished(), time.monotonic() - started)
    if sweep.failure:
        raise SweepError(sweep.failure)
    return sweep.result(seed, budget, time.monotonic() - started)


def default_jobs() -> int:
    """Children at once: one per four CPUs. TensorFlow's thread pools use every core
    already, and children side by side contend (measured on 2 cores: two children ran 25%
    fewer cases in the same time than one)."""
    return max(1, (os.cpu_count() or 1) // 4)


@dataclass(frozen=True)
class _Job:
    cases: list[Case]
    mode: str  # bare or convfix
    alone: bool = False
    fresh: bool = False  # in a fresh interpreter whatever the runner (a hang's confirmation)
    attempt: int = 0
    # The case a batch died on, run alone, holds the results its batch gave before: they
    # stand if it dies alone too, else those cases run one by one.
    held: tuple[tuple[Case, dict[str, Any]], ...] = ()

    def command(self, device: str | None) -> dict[str, Any]:
        return {
            "cases": [c.to_json() for c in self.cases],
            "mode": self.mode,
            "device": device,
            "alone": self.alone,
        }


class _Sweep:
    """The shared state of one sweep; ``slot`` is one worker thread's loop."""

    def __init__(
        self,
        source: Iterator[Case],
        device: str | None,
        runner: str,
        started: float,
        budget: float,
        case_timeout: float,
    ) -> None:
        self.source, self.drawing = source, True
        self.device, self.runner = device, runner
        self.forked = False  # a probe fork answered
        self.started, self.budget = started, budget
        self.stop_at = started + budget - 0.5  # leave time to stop children and report
        self.case_timeout = case_timeout
        self.env = dict(os.environ)
        self.cond = threading.Condition()
        self.cases: dict[int, Case] = {}
        self.bare: dict[int, dict[str, Any]] = {}
        self.fixed: dict[int, dict[str, Any]] = {}
        self.to_fix: list[Case] = []
        self.alone: deque[_Job] = deque()
        self.retry: deque[_Job] = deque()
        self.busy = 0
        self.case_seconds = 0.01  # running estimates, per case in a batch and per alone job
        self.alone_seconds = 0.2
        self.facts: dict[str, Any] = {}
        self.device_seen: str | None = None
        self.convfix_mode: str | None = None
        self.crashed_batches: list[list[int]] = []
        self.notes: list[str] = []
        self.failure: str | None = None

    # -- one worker thread -----------------------------------------------------------

    def slot(self) -> None:
        """Run jobs until there are none left or the budget is spent."""
        server: ForkServer | None = None
        try:
            while (job := self._next_job()) is not None:
                try:
                    if server is None and self.runner != "fresh" and not job.fresh:
                        server = self._start_server()
                    self._absorb(job, self._run(job, server))
                except ChildFailed as failed:
                    with self.cond:
                        if time.monotonic() < self.stop_at:
                            self.failure = self.failure or str(failed)
                finally:
                    with self.cond:
                        self.busy -= 1
                        self.cond.notify_all()
                if server is not None and not server.alive:
                    server = None
        finally:
            if server is not None:
                server.close()

    def _run(self, job: _Job, server: ForkServer | None) -> Report:
        command = job.command(self.device)
        if server is not None and not job.fresh:
            return server.run(command, self.case_timeout, self.stop_at)
        fresh = Fresh(self.env)
        report = fresh.run(command, self.case_timeout, self.stop_at)
        with self.cond:
            self.facts = self.facts or fresh.facts
        return report

    def _start_server(self) -> ForkServer | None:
        """A fork server whose probe fork answered; None (and fresh interpreters from now
        on) if forking after TensorFlow's import does not work here."""
        server = ForkServer(self.env, self.stop_at)
        with self.cond:
            self.facts = self.facts or server.facts
        probe = server.run(_Job([PROBE], "bare").command(self.device), 60.0, self.stop_at)
        outcome = probe.results.get(PROBE.index, {}).get("outcome")
        if probe.done and outcome == "right":
            with self.cond:
                if not self.forked:
                    self.runner, self.forked = "fork", True
                    self.notes.append(
                        f"runner: fork server (TensorFlow imported in "
                        f"{server.facts.get('import_seconds', 0):.1f} s; a probe fork answered "
                        f"in {probe.seconds:.2f} s)"
                    )
            return server
        server.close()
        if probe.cut:
            return None
        why = probe.stderr or probe.fatal or f"exit status {probe.status}, outcome {outcome}"
        with self.cond:
            if self.runner == "fork":
                self.failure = f"forking after TensorFlow's import failed here: {why}"
            elif self.runner != "fresh":
                self.runner = "fresh"
                self.notes.append(
                    f"runner: fresh interpreters (a fork after TensorFlow's import failed: {why})"
                )
        return None

    # -- which job next ----------------------------------------------------------------

    def _next_job(self) -> _Job | None:
        with self.cond:
            while self.failure is None and time.monotonic() < self.stop_at:
                job = self._take()
                if job is not None:
                    self.busy += 1
                    return job
                if not self.busy:
                    return None
                self.cond.wait(0.5)
            return None

    def _take(self) -> _Job | None:
        size = self._batch_size()
        if self.alone:
            return self.alone.popleft()
        if self.to_fix:
            fix, self.to_fix = self.to_fix[:size], self.to_fix[size:]
            return _Job(fix, "convfix")
        if self.retry:
            return self.retry.popleft()
        batch: list[Case] = []
        while self.drawing and len(batch) < size and self._time_to_draw(size):
            case = next(self.source, None)
            if case is None:
                self.drawing = False
                break
            self.cases[case.index] = case
            if case.risky:  # it may kill its process: alone, and nothing else dies with it
                self.alone.append(_Job([case], "bare", alone=True))
            else:
                batch.append(case)
        if batch:
            return _Job(batch, "bare")
        return self.alone.popleft() if self.alone else None

    def _batch_size(self) -> int:
        # About a second of cases per job: a fork per job costs ~0.1 s, and a crash
        # sends every case of its batch to run alone.
        size = max(16, min(256, int(1.0 / max(self.case_seconds, 1e-4))))
        left = self.stop_at - time.monotonic()
        return max(4, min(size, int(left / 4 / max(self.case_seconds, 1e-4))))

    def _time_to_draw(self, size: int) -> bool:
        """Draw only while the work already drawn, and this batch's, fits the time left
        (about half of a batch's cases run again with convfix)."""
        backlog = (
            len(self.to_fix) + sum(len(j.cases) for j in self.retry) + 2 * size
        ) * self.case_seconds + len(self.alone) * self.alone_seconds
        reserve = max(2.0, 0.05 * self.budget)
        return time.monotonic() + backlog + reserve < self.stop_at

    # -- what a job's end means ------------------------------------------------------

    def _absorb(self, job: _Job, report: Report) -> None:
        with self.cond:
            if report.device and self.device_seen is None:
                self.device_seen = report.device
            self.convfix_mode = self.convfix_mode or report.convfix_mode
            if report.fatal:
                self.failure = self.failure or _fatal(report.fatal)
                return
            for index, trace in report.bugs.items():  # left out: its judgement failed
                self.notes.append(f"case {index}: the sweep's own check failed: {trace}")
            if report.done or report.cut:
                for index, result in report.results.items():
                    self._record(job.mode, index, result)
                self._release(job, guilty=False)
                self._learn(job, report)
                return
            if report.hung is not None:
                self._hung(job, report)
                return
            self._crashed(job, report)

    def _learn(self, job: _Job, report: Report) -> None:
        if report.cut or not report.done:
            return
        if job.alone:
            self.alone_seconds = 0.8 * self.alone_seconds + 0.2 * report.wall
        elif len(job.cases) >= 8:
            per_case = report.seconds / len(job.cases)
            self.case_seconds = 0.7 * self.case_seconds + 0.3 * per_case

    def _record(self, mode: str, index: int, result: dict[str, Any]) -> None:
        if mode == "convfix":
            self.fixed[index] = result
            return
        self.bare[index] = result
        if result["outcome"] == "right":
            return
        case = self.cases[index]
        # One that killed or hung its process alone runs alone again: a batch may survive
        # heap corruption that would have shown alone, and judge the answer right.
        if result["outcome"] in ("abort", "timeout"):
            self.alone.append(_Job([case], "convfix", alone=True))
        else:
            self.to_fix.append(case)

    def _hung(self, job: _Job, report: Report) -> None:
        for index, result in report.results.items():
            if index != report.hung:
                self._record(job.mode, index, result)
        hung = next((c for c in job.cases if c.index == report.hung), None)
        if hung is None and job.alone:  # hung outside the case (set-up, aftershock): its own
            hung = job.cases[0]
        if hung is not None:
            if job.fresh or self.runner == "fresh":
                seconds = f"no answer in {self.case_timeout:.0f} s (killed)"
                self._record(job.mode, hung.index, {"outcome": "timeout", "detail": seconds})
                self._release(job, guilty=False)
            else:  # a fork may hang where TensorFlow alone would not: ask a fresh interpreter
                held = job.held if job.alone else ()
                self.alone.appendleft(_Job([hung], job.mode, alone=True, fresh=True, held=held))
        rest = [c for c in job.cases if c.index not in report.started and c is not hung]
        self._again(rest, job)

    def _crashed(self, job: _Job, report: Report) -> None:
        if job.alone:
            case = job.cases[0]
            died = _died(report.status)
            detail = f"{died}: {report.stderr}" if report.stderr else died
            self._record(job.mode, case.index, {"outcome": "abort", "detail": detail[:300]})
            self._release(job, guilty=True)
            return
        ran = [c for c in job.cases if c.index in report.started]
        self._again([c for c in job.cases if c.index not in report.started], job)
        if not ran:
            return
        self.crashed_batches.append([c.index for c in ran])
        held = tuple((c, report.results[c.index]) for c in ran[:-1] if c.index in report.results)
        self.alone.append(_Job([ran[-1]], job.mode, alone=True, held=held))

    def _release(self, job: _Job, guilty: bool) -> None:
        """A batch died on ``job``'s case: if that case dies alone too, the results the
        batch gave before stand; if not, one of those cases may have corrupted the heap
        for it (a crash can come later than its cause), so each runs alone."""
        for case, result in job.held:
            if guilty:
                self._record(job.mode, case.index, result)
            else:
                self.alone.append(_Job([case], job.mode, alone=True))

    def _again(self, cases: list[Case], job: _Job) -> None:
        if not cases:
            return
        if job.attempt >= 2:  # this batch keeps dying before its first case: one by one
            self.alone.extend(_Job([c], job.mode, alone=True) for c in cases)
        else:
            self.retry.append(_Job(cases, job.mode, attempt=job.attempt + 1))

    # -- the result ------------------------------------------------------------------

    def finished(self) -> int:
        """Cases judged completely (bare right, or also run with convfix)."""
        with self.cond:
            return sum(
                1 for i, r in self.bare.items() if r["outcome"] == "right" or i in self.fixed
            )

    def result(self, seed: int, budget: float, seconds: float) -> SweepResult:
        results = []
        for index in sorted(self.bare):
            bare, case = self.bare[index], self.cases[index]
            if bare["outcome"] == "right":
                results.append(CaseResult(case, "right"))
                continue
            fixed = self.fixed.get(index)
            if fixed is None:
                continue
            results.append(
                CaseResult(
                    case,
                    bare["outcome"],
                    bare.get("detail", ""),
                    fixed["outcome"],
                    bool(fixed.get("guarded", False)),
                    fixed.get("detail", ""),
                    tuple(fixed.get("actions", ())),
                )
            )
        notes = list(self.notes)
        for batch in self.crashed_batches:
            outcomes = [(_outcome(self.bare, i), _outcome(self.fixed, i)) for i in batch]
            if all(bare for bare, _ in outcomes) and not any("abort" in o for o in outcomes):
                notes.append(
                    f"a batch crashed, but none of its {len(batch)} cases did alone (cases "
                    f"{batch[0]} to {batch[-1]}): a crash that shows only in company?"
                )
        device = (self.device_seen or self.device or "unknown").split("device:")[-1]
        if self.device and self.device_seen and self.device.upper().lstrip("/") != device:
            notes.append(
                f"asked for {self.device}; TensorFlow placed the calls on {device} (soft "
                "placement: no such device here?)"
            )
        return SweepResult(
            tensorflow=str(self.facts.get("tensorflow", "unknown")),
            build=dict(self.facts.get("build", {})),
            device=device,
            seed=seed,
            budget=budget,
            seconds=seconds,
            runner=self.runner,
            results=results,
            device_requested=self.device,
            unfinished=len(self.cases) - len(results),
            notes=notes,
            convfix_mode=self.convfix_mode,
        )


def _outcome(results: dict[int, dict[str, Any]], index: int) -> str | None:
    found = results.get(index)
    return None if found is None else str(found.get("outcome"))


def _died(status: int | None) -> str:
    if status is not None and status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"exited with status {status}" if status is not None else "died"


def _fatal(text: str) -> str:
    last = [line for line in text.strip().splitlines() if line.strip()]
    message = last[-1] if last else text
    if "ConfigError" in message:
        return f"convfix's configuration: {message.split(':', 1)[-1].strip()}"
    return f"a sweep job failed in the sweep's own code: {message}"
