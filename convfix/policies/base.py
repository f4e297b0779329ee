"""The contract every policy follows, and the Problem the guard hands them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from convfix.call import Call

# What TensorFlow itself would do with the unrepaired call:
#   "abort"   - the process dies (SIGABRT in a oneDNN kernel)
#   "garbage" - a result of the wrong shape, silently
#   "answered" - TensorFlow answers by itself: its own error, or a correct result
Hazard = Literal["abort", "garbage", "answered"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a call, found before dispatch."""

    reason: str  # stable snake_case code, e.g. "dtype_mismatch"
    owner: str  # the policy that can repair it, or "guard"
    hazard: Hazard
    message: str  # names the argument, its shape or dtype, and what would be valid
    before: Mapping[str, Any] = field(default_factory=dict)
    # Strict mode may run the call to chain TensorFlow's own error: not one over a memory
    # budget, which is what the budget is there to prevent.
    probe: bool = True

    @property
    def unsafe(self) -> bool:
        """TensorFlow would crash or answer wrongly: never dispatch it unrepaired."""
        return self.hazard != "answered"


PostProcess = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Repair:
    """What a policy did: the new call, how to finish the result, and what to log."""

    call: Call
    action: str
    after: Mapping[str, Any]
    finish: PostProcess | None = None  # applied to the result (e.g. cast back, squeeze)
    # The same repair as argument rewrites (parameter name -> new value from the old one),
    # when it is exactly that: a remembered plan then replays it without binding the call.
    rewrites: Mapping[str, Callable[[Any], Any]] | None = None
    # Runs the repaired call in place of one TensorFlow call (split_batch's chunks): given
    # the function that sends one call to TensorFlow, returns the result.
    run: Callable[[Callable[[Call], Any]], Any] | None = None


class Policy(Protocol):
    """One failure class: find it, say how it would be fixed, fix it."""

    name: str

    def detect(self, call: Call) -> Problem | None: ...

    def describe(self, call: Call, problem: Problem) -> str:
        """The fix that would apply, in words (for strict and warn messages)."""
        ...

    def apply(self, call: Call, problem: Problem) -> Repair: ...
