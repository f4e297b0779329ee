"""The policies, in the order the pipeline runs them.

Adding a policy: one module with a class following ``base.Policy``, one config section
(config.py), one line in ``build`` below.
"""

from __future__ import annotations

from convfix.config import Config
from convfix.policies.base import Policy, Problem, Repair

# The fixed run order (guard-owned problems such as empty input come last: they are
# answered, not repaired). Names not yet built have no module yet; the guard still refuses
# what they would repair when it is unsafe.
ORDER = ("normalize", "batch_dim", "layout", "padding", "dtype", "guard")


def build(config: Config) -> dict[str, Policy]:
    """The policy objects for one configuration, by name."""
    from convfix.policies.dtype import DtypePolicy

    return {"dtype": DtypePolicy(config.policies.dtype)}


def rank(problem: Problem) -> int:
    return ORDER.index(problem.owner) if problem.owner in ORDER else len(ORDER)


__all__ = ["ORDER", "Policy", "Problem", "Repair", "build", "rank"]
