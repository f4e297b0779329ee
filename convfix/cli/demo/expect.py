"""What each demo case should end as with convfix, under the configuration it runs with.

A case declares the policy (or the guard) whose mode decides it and what each mode does;
the configuration says which mode that is. So ``convfix demo --config strict.toml``
expects refusals, ``observe`` expects TensorFlow's own answers where TensorFlow answers
safely, and a dtype or padding setting changes the dtype or shape a repair gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from convfix.cli.demo.cases import DemoCase, Outcome
from convfix.config import Config

REPAIRED, REFUSED, TENSORFLOW = "repaired", "refused", "tensorflow"


@dataclass(frozen=True)
class Expected:
    """One case's expected outcome with convfix."""

    outcome: str
    """REPAIRED (a result as the case's fix declares), REFUSED (ConvFixError), or
    TENSORFLOW (the very outcome TensorFlow gives without convfix)."""
    why: str
    """The mode that decided it, in words: "dtype runs in strict mode"."""
    kind: str = "ok"
    detail: str | None = None
    """For REPAIRED: the result's dtype (or exception type); None: whatever the config gives."""
    shape: tuple[int, ...] | None = None
    """For REPAIRED: the result's shape; None: any."""

    def __str__(self) -> str:
        if self.outcome == REPAIRED:
            what = " ".join(str(x) for x in (self.shape, self.detail) if x is not None)
            return f"repaired{': ' + what if what else ''}"
        return "refused (ConvFixError)" if self.outcome == REFUSED else "TensorFlow's own outcome"


def mode_for(config: Config, owner: str) -> str:
    """The mode ``owner`` runs in: as ``convfix.pipeline.decide.mode_of`` says, repeated
    here because importing the pipeline imports TensorFlow, which the demo's parent never
    does (the guard follows the top-level mode, a policy its own)."""
    return config.mode if owner == "guard" else config.policy_mode(owner)


def expected(case: DemoCase, config: Config) -> Expected:
    """What ``case`` should end as with convfix under ``config``."""
    if case.owner is None:
        return Expected(TENSORFLOW, "no policy has anything to do")
    mode = mode_for(config, case.owner)
    why = f"{case.owner} runs in {mode} mode"
    decided = {"fix": case.in_fix, "warn": case.in_warn, "strict": REFUSED}.get(mode, TENSORFLOW)
    if decided != REPAIRED:
        return Expected(decided, why)
    kind, fixed = case.expect_with
    detail: str | None = fixed
    shape = case.correct_shape
    if case.adapt is not None:  # a setting of the policy changes the repair's result
        detail, shape = case.adapt(config, detail, shape)
    return Expected(REPAIRED, why, kind, detail, shape)


def mismatch(case: DemoCase, want: Expected, without: Outcome, with_: Outcome) -> str | None:
    """Why the outcome with convfix is not ``want``, or None."""
    got = f"{with_.kind} {with_.detail}"
    if want.outcome == TENSORFLOW:
        if _gist(with_) != _gist(without):
            return f"expected TensorFlow's own outcome ({want.why}), got {got}"
        return None
    if want.outcome == REFUSED:
        if (with_.kind, with_.detail) != ("error", "ConvFixError"):
            return f"expected a refusal ({want.why}), got {got}"
        return None
    if with_.kind != want.kind or (want.detail is not None and with_.detail != want.detail):
        return f"expected {want.kind} {want.detail or ''} ({want.why}), got {got}".replace(
            "  ", " "
        )
    if want.shape is not None and with_.kind == "ok" and with_.shape != want.shape:
        return f"expected shape {want.shape}, got {with_.shape}"
    if wrong_values(with_, case):
        return f"expected values {case.correct_values}, got {with_.values}"
    return None


def wrong_values(outcome: Outcome, case: DemoCase) -> bool:
    """A result of the right size whose values are not the ones the call should give."""
    want = case.correct_values
    if outcome.kind != "ok" or want is None or len(outcome.values) != len(want):
        return False
    return any(abs(a - b) > 1e-3 * max(1.0, abs(b)) for a, b in zip(outcome.values, want))


def _gist(outcome: Outcome) -> tuple[object, ...]:
    # The exception's message may name convfix's frames or a tensor's id: type and result
    # are what "the same outcome" means.
    return (outcome.kind, outcome.detail, outcome.shape, outcome.digest)
