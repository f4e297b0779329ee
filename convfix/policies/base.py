"""The contract every argument policy follows (Problem and Repair live in convfix.call)."""

from __future__ import annotations

from typing import Protocol

from convfix.call import Call, Problem, Repair


class Policy(Protocol):
    """One failure class: find it, say how it would be fixed, fix it."""

    name: str

    def detect(self, call: Call) -> Problem | None: ...

    def describe(self, call: Call, problem: Problem) -> str:
        """The fix that would apply, in words (for strict and warn messages)."""
        ...

    def apply(self, call: Call, problem: Problem) -> Repair: ...
