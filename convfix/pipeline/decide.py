"""What convfix does about one problem: the one place fix, warn, strict and off are told apart.

Before dispatch (pipeline.path) a problem's owner is a policy or the guard; after
TensorFlow raised (pipeline.recovery) it is a recovery policy. Either way the owner's mode
decides, and only where the decision is REPAIR does a policy act.
"""

from __future__ import annotations

import enum

from convfix.config import Config


class Verdict(enum.Enum):
    REPAIR = "repair"  # fix mode, and a policy can act
    WARN = "warn"  # warn mode: log what would be done, change nothing
    REFUSE = "refuse"  # strict mode: stop (ConvFixError before dispatch; TF's error after)
    LEAVE = "leave"  # off, or nobody can act: the call goes as TensorFlow takes it


def mode_of(config: Config, owner: str) -> str:
    """The mode in force for a problem's owner: the guard follows the top-level mode (its
    answers depend on no policy), a policy its own."""
    return config.mode if owner == "guard" else config.policy_mode(owner)


def decide(mode: str, can_act: bool = True) -> Verdict:
    """The verdict for a problem whose owner is in ``mode``; ``can_act``: a policy exists
    that could repair it (or recover from it)."""
    if mode == "fix":
        return Verdict.REPAIR if can_act else Verdict.LEAVE
    if mode == "warn":
        return Verdict.WARN
    if mode == "strict":
        return Verdict.REFUSE
    return Verdict.LEAVE
