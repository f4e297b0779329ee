"""The policies, in the order the pipeline runs them.

Adding a policy: one module with a class following ``base.Policy``, one config section
(config/schema.py), one line in ``build`` below.
"""

from __future__ import annotations

from convfix.call import Problem, Repair
from convfix.config import Config
from convfix.policies.base import Policy

# The fixed run order (guard-owned problems such as empty input come last: they are
# answered, not repaired). Argument normalisation (padding case, lists) belongs to the
# padding and dtype policies but runs first, as "normalize".
ORDER = ("normalize", "batch_dim", "data_format", "layout", "padding", "dtype", "guard")


def build(config: Config) -> dict[str, Policy]:
    """The policy objects for one configuration, by name."""
    from convfix.policies.batch_dim import BatchDimPolicy
    from convfix.policies.data_format import DataFormatPolicy
    from convfix.policies.dtype import DtypePolicy
    from convfix.policies.layout import LayoutPolicy
    from convfix.policies.padding import PaddingPolicy
    from convfix.policies.split_batch import SplitBatchPolicy

    settings = config.policies
    return {
        "batch_dim": BatchDimPolicy(settings.batch_dim),
        "data_format": DataFormatPolicy(settings.data_format),
        "layout": LayoutPolicy(settings.layout),
        "padding": PaddingPolicy(settings.padding),
        "dtype": DtypePolicy(settings.dtype),
        # Before dispatch only for a byte budget; its out-of-memory recovery and
        # device_fallback run after TensorFlow raised (convfix.pipeline.recovery).
        "split_batch": SplitBatchPolicy(settings.split_batch),
    }


NORMALIZE = frozenset({"padding_case", "input_not_tensor"})


def rank(problem: Problem) -> int:
    if problem.reason in NORMALIZE:
        return 0
    return ORDER.index(problem.owner) if problem.owner in ORDER else len(ORDER)


__all__ = ["ORDER", "Policy", "Problem", "Repair", "build", "rank"]
