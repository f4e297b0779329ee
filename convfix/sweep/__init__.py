"""The hazard sweep: a bounded grid of small convolutions, run on this TensorFlow and
device bare (each in a child process, so an abort is observed, not suffered) and, where
TensorFlow alone was not right, again with convfix; every result judged against a float64
NumPy reference of the op's definition.

``run(seed, budget, device, cases=None) -> SweepResult`` is what ``convfix doctor
--sweep`` and a version-matrix runner call; ``SweepResult.to_json()`` is its report.

- ``grid``: the cases (pure Python), each a pasteable one-line repro.
- ``reference``: the float64 NumPy reference of every op (also the property tests').
- ``check``: one case run and judged inside a child (TensorFlow, NumPy).
- ``child``: the child process; ``pool``: the children seen from the parent.
- ``run``: the scheduler and its budget; ``report``: the result.

Importing this package imports neither TensorFlow nor NumPy (only ``check``,
``reference`` and the children do), and nothing on ``import convfix.auto``'s path
imports it.
"""

from __future__ import annotations

from convfix.sweep.grid import OPS, Case, sample
from convfix.sweep.report import HAZARDS, OUTCOMES, CaseResult, SweepResult
from convfix.sweep.run import DEFAULT_BUDGET, SweepError, run

__all__ = [
    "DEFAULT_BUDGET",
    "HAZARDS",
    "OPS",
    "OUTCOMES",
    "Case",
    "CaseResult",
    "SweepError",
    "SweepResult",
    "run",
    "sample",
]
