"""What a sweep found: each case's outcome bare and with convfix, counted and as JSON.

Outcomes bare (TensorFlow alone): ``right``; ``error`` (TensorFlow refused the call:
fine); ``abort`` (the process died); ``wrong_shape``; ``wrong_values``; ``timeout`` (no
answer: killed). Each case that was not right ran again with convfix: it is *guarded* when
convfix refused it (ConvFixError), TensorFlow raised its own error, or the answer is the
reference of the call as made or as convfix documents its repair; *unguarded* when it
aborted, hung, or answered with a wrong shape or wrong values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from convfix.sweep.grid import OPS, Case

OUTCOMES = ("right", "error", "abort", "wrong_shape", "wrong_values", "timeout")
HAZARDS = ("abort", "wrong_shape", "wrong_values", "timeout")


@dataclass(frozen=True)
class CaseResult:
    """One case: how TensorFlow answered it alone, and (when not right) with convfix."""

    case: Case
    outcome: str
    detail: str = ""
    convfix: str | None = None  # refused, error, right, repaired, or a hazard; None: not run
    guarded: bool | None = None  # None: not run (right bare)
    convfix_detail: str = ""
    actions: tuple[str, ...] = ()  # convfix's "policy:action"s on the call

    @property
    def failed(self) -> bool:
        """A hazard bare, or unguarded with convfix."""
        return self.outcome in HAZARDS or self.guarded is False

    def repro(self, build: str) -> str:
        """The call as one line of Python, with what TensorFlow alone did in a comment."""
        said = {
            "abort": "the process aborts",
            "timeout": "no answer (hangs)",
            "wrong_shape": "wrong shape",
            "wrong_values": "wrong values",
        }.get(self.outcome, self.outcome)
        why = f": {self.detail}" if self.detail and self.outcome != "abort" else ""
        if self.outcome == "abort" and self.detail:
            why = f" ({self.detail})"
        definition = (
            " (float64 reference of the op's definition)" if "wrong" in self.outcome else ""
        )
        return self.case.repro(f"{build}: {said}{why}{definition}")

    def to_json(self, build: str) -> dict[str, Any]:
        """The failure entry of the sweep's JSON."""
        return {
            "index": self.case.index,
            "op": self.case.op,
            "call": self.case.call(),
            "dtype": self.case.dtype,
            "outcome": self.outcome,
            "detail": self.detail,
            "guarded": self.guarded,
            "with_convfix": self.convfix,
            "convfix_detail": self.convfix_detail,
            "actions": list(self.actions),
            "repro": self.repro(build),
        }


@dataclass
class SweepResult:
    """A whole sweep: where it ran, every finished case, counts, failures."""

    tensorflow: str
    build: dict[str, Any]
    device: str
    seed: int
    budget: float
    seconds: float
    runner: str  # fork or fresh
    results: list[CaseResult]
    device_requested: str | None = None
    unfinished: int = 0  # cases begun whose judgement the budget cut off
    notes: list[str] = field(default_factory=list)
    convfix_mode: str | None = None  # the mode convfix ran in (None: no case needed it)

    @property
    def cases(self) -> int:
        return len(self.results)

    @property
    def build_text(self) -> str:
        """``TF 2.21.0, oneDNN on, CPU:0``: the build a repro was measured on."""
        onednn = self.build.get("onednn")
        parts = [f"TF {self.tensorflow}", f"oneDNN {'on' if onednn else 'off'}"]
        if self.build.get("cuda_build"):
            parts.append(f"CUDA {self.build.get('cuda')}, cuDNN {self.build.get('cudnn')}")
        return ", ".join([*parts, self.device])

    def by_outcome(self) -> dict[str, int]:
        """Cases per bare outcome (every outcome named, zeros included)."""
        counts = Counter(r.outcome for r in self.results)
        return {outcome: counts.get(outcome, 0) for outcome in OUTCOMES}

    def by_op(self) -> dict[str, dict[str, int]]:
        """Cases per op and bare outcome, plus ``unguarded`` per op."""
        table = {op: dict.fromkeys([*OUTCOMES, "unguarded"], 0) for op in OPS}
        for r in self.results:
            row = table.setdefault(r.case.op, dict.fromkeys([*OUTCOMES, "unguarded"], 0))
            row[r.outcome] += 1
            row["unguarded"] += r.guarded is False
        return {op: row for op, row in table.items() if sum(row.values())}

    def unguarded(self) -> list[CaseResult]:
        """The cases convfix left unguarded."""
        return [r for r in self.results if r.guarded is False]

    def failures(self) -> list[CaseResult]:
        """Every case with a hazard bare or unguarded with convfix."""
        return [r for r in self.results if r.failed]

    def to_json(self) -> dict[str, Any]:
        """The sweep as a JSON-ready dict (``json.dumps(result.to_json())``)."""
        build = self.build_text
        return {
            "tensorflow": self.tensorflow,
            "build": self.build,
            "device": self.device,
            "device_requested": self.device_requested,
            "seed": self.seed,
            "budget_seconds": self.budget,
            "seconds": round(self.seconds, 1),
            "runner": self.runner,
            "convfix_mode": self.convfix_mode,
            "cases": self.cases,
            "unfinished": self.unfinished,
            "by_outcome": self.by_outcome(),
            "by_op": self.by_op(),
            "unguarded": len(self.unguarded()),
            "failures": [r.to_json(build) for r in self.failures()],
            "notes": list(self.notes),
        }
