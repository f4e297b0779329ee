"""The contract of the recovery policies, which act after TensorFlow raised, not before.

An argument policy (base.Policy) repairs a call before dispatch. A recovery policy is
handed a call TensorFlow refused at run time (out of memory, cuDNN failing to start) and
either returns the result, obtained some other way, with a record of how, or gives up.
Events are written by convfix.pipeline.recovery from the record: policies know nothing of events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from convfix.call import Call
from convfix.memory import Key, LearnedTable

Send = Callable[[Call], Any]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One eager call on its way to TensorFlow, as recovery sees it."""

    call: Call  # as sent: argument repairs already applied
    send: Send  # runs one call on TensorFlow, without recovery
    device: str  # where it runs ("GPU:0"), "" when unknown
    key: Key | None  # its signature in the learned table (None: not learnable)
    learned: LearnedTable  # where recovery remembers what worked for ``key``
    tried: int | None = None  # a chunk size already tried and failed (a budget's), if any


@dataclass(frozen=True, slots=True)
class Recovered:
    """A result obtained by a recovery policy, and what to log about it."""

    result: Any
    action: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    fields: Mapping[str, Any] = field(default_factory=dict)  # attempts, chunk, elapsed_ms...

    @property
    def quiet(self) -> bool:
        """Nothing was changed after all (the call ran as made): no event."""
        return self.action == "none"


class GaveUp(Exception):
    """A recovery policy could not get a result; ``error`` is TensorFlow's last error."""

    def __init__(self, error: Exception, attempts: int) -> None:
        super().__init__(str(error))
        self.error, self.attempts = error, attempts
