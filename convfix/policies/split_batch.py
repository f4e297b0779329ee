"""split_batch: a convolution out of memory runs again in chunks of its batch.

On TensorFlow's ResourceExhaustedError (eager only: inside tf.function no Python code runs
when the op does), the batch is split into chunks of one size, each ``factor`` times the
last, until the chunks fit, ``min_chunk`` is reached or ``max_retries`` rounds were spent.
What fits is remembered per signature (convfix.learned), so the next call with the same
examples goes straight to that chunk with no failed attempt first; after
``grow_back_after`` such calls a chunk one step larger is tried again (a failure costs one
out-of-memory and doubles the wait). Under op determinism chunks divide the batch evenly.

With ``max_batch_bytes`` set, the policy also acts before dispatch, in graph and eager mode
alike: a call whose estimated bytes exceed the budget runs in chunks that fit it.
"""

from __future__ import annotations

import gc
import math
import time
from typing import Any

from convfix import chunks
from convfix.call import Call
from convfix.config import SplitBatchPolicyConfig
from convfix.learned import TABLE, Learned
from convfix.policies.base import Problem, Repair
from convfix.policies.recovery_base import Attempt, GaveUp, Recovered, Send
from convfix.tf_errors import classify


class SplitBatchPolicy:
    name = "split_batch"

    def __init__(self, settings: SplitBatchPolicyConfig) -> None:
        self.settings = settings

    # -- before dispatch: the memory budget -------------------------------------------

    def detect(self, call: Call) -> Problem | None:
        budget = self.settings.max_batch_bytes
        if budget is None:
            return None
        estimate = chunks.estimate_bytes(call)
        if estimate is None:
            return None
        total, per_example = estimate
        batch = chunks.batch_size(call)
        if batch is not None and (total <= budget or batch <= 1):
            return None
        return Problem(
            "over_memory_budget",
            self.name,
            "answered",
            f"{call.spec.name}: the call needs about {_mib(per_example)} per example"
            + (f", {_mib(total)} for its batch of {batch}," if batch is not None else "")
            + f" over policies.split_batch.max_batch_bytes = {budget}",
            {
                "batch": batch,
                "estimated_bytes": None if batch is None else total,
                "bytes_per_example": per_example,
                "max_batch_bytes": budget,
            },
        )

    def describe(self, call: Call, problem: Problem) -> str:
        if problem.reason == "over_memory_budget":
            return "run the batch in chunks that fit policies.split_batch.max_batch_bytes"
        return self.explain(problem.reason)

    def explain(self, reason: str) -> str:
        return (
            f"run the batch again in chunks (each {self.settings.factor} of the last, "
            f"down to {self.settings.min_chunk} examples)"
        )

    def apply(self, call: Call, problem: Problem) -> Repair:
        per_example = int(problem.before["bytes_per_example"])
        budget = self.settings.max_batch_bytes or 0
        chunk = max(self.settings.min_chunk, budget // max(per_example, 1))
        batch = chunks.batch_size(call)
        if batch is not None and op_determinism():
            chunk = chunks.even_chunk(batch, chunk)

        def run(send: Send) -> Any:
            if call.graph:
                return _budgeted_in_graph(call, chunk, send)
            return chunks.run_split(call, chunk, send)

        after = {"chunk": chunk, "chunks": None if batch is None else math.ceil(batch / chunk)}
        return Repair(call, "split_batch", after, run=run)

    # -- after TensorFlow raised: out of memory ----------------------------------------

    def recover(self, attempt: Attempt, reason: str, error: Exception) -> Recovered:
        """Split the failed call until it fits; GaveUp when it cannot."""
        batch = chunks.batch_size(attempt.call)
        return self._shrink(attempt, batch or 0, batch or 0, error, time.perf_counter(), 1)

    def run_learned(self, attempt: Attempt, entry: Learned) -> Recovered | None:
        """Run a call whose signature has a learned chunk; None: it fits whole, run it so."""
        batch = chunks.batch_size(attempt.call)
        if entry.chunk is None or batch is None or batch <= entry.chunk:
            return None
        started, attempts = time.perf_counter(), 1
        if entry.grow_after and entry.successes >= entry.grow_after:
            larger = self._step(batch, math.ceil(entry.chunk / self.settings.factor))
            try:
                result = self._run(attempt, larger, batch)
            except Exception as error:
                if classify(error) != "out_of_memory" and not isinstance(
                    error, chunks.JoinOutOfMemory
                ):
                    raise
                entry.grow_after *= 2  # a failed grow-back waits twice as long next time
                entry.successes = 0
                attempts = 2
            else:
                entry.chunk, entry.successes = larger, 0
                return self._record(attempt, batch, larger, 1, started, learned=True, grew=True,
                                    result=result)  # fmt: skip
        try:
            result = self._run(attempt, entry.chunk, batch)
        except chunks.JoinOutOfMemory as failure:
            raise GaveUp(failure.error, attempts) from failure
        except Exception as error:
            if classify(error) != "out_of_memory":
                raise
            # Memory got tighter since: shrink from the learned chunk on.
            return self._shrink(attempt, batch, entry.chunk, error, started, attempts + 1)
        if attempts == 1:  # a call that paid for a failed grow-back starts the wait afresh
            entry.successes += 1
        return self._record(attempt, batch, entry.chunk, attempts, started, learned=True,
                            result=result)  # fmt: skip

    def _shrink(
        self,
        attempt: Attempt,
        batch: int,
        failed: int,
        error: Exception,
        started: float,
        attempts: int,
    ) -> Recovered:
        settings = self.settings
        chunk = failed
        for _ in range(settings.max_retries):
            smaller = self._step(batch, math.floor(chunk * settings.factor))
            if smaller >= chunk or smaller < settings.min_chunk:
                break
            chunk = smaller
            if settings.gc:
                gc.collect()  # tensors of the failed attempt are freed only when collected
            attempts += 1
            try:
                result = self._run(attempt, chunk, batch)
            except chunks.JoinOutOfMemory as failure:  # smaller chunks would not help
                raise GaveUp(error, attempts) from failure
            except Exception as failure:
                if classify(failure) != "out_of_memory":
                    raise GaveUp(error, attempts) from failure
                continue
            self._learn(attempt, chunk)
            return self._record(attempt, batch, chunk, attempts, started, learned=False,
                                result=result)  # fmt: skip
        raise GaveUp(error, attempts)

    def _step(self, batch: int, wanted: int) -> int:
        size = min(batch, max(self.settings.min_chunk, wanted))
        return chunks.even_chunk(batch, size) if op_determinism() else size

    def _run(self, attempt: Attempt, chunk: int, batch: int) -> Any:
        if chunk >= batch:
            return attempt.send(attempt.call)
        return chunks.run_split(attempt.call, chunk, attempt.send)

    def _learn(self, attempt: Attempt, chunk: int) -> None:
        if attempt.key is None:
            return
        entry = TABLE.get(attempt.key) or Learned()
        entry.chunk, entry.successes = chunk, 0
        entry.grow_after = entry.grow_after or self.settings.grow_back_after
        TABLE.put(attempt.key, entry, self.settings.max_table_size)

    def _record(
        self,
        attempt: Attempt,
        batch: int,
        chunk: int,
        attempts: int,
        started: float,
        learned: bool,
        grew: bool = False,
        result: Any = None,
    ) -> Recovered:
        return Recovered(
            result,
            "split_batch",
            {"batch": batch},
            {"chunk": chunk, "chunks": math.ceil(batch / chunk)},
            {
                "attempts": attempts,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
                "learned": learned,
                "grew_back": grew,
                "peak_bytes_estimate": peak_estimate(attempt.call, batch, chunk),
            },
        )


def peak_estimate(call: Call, batch: int, chunk: int) -> int | None:
    """Bytes alive at the split call's peak: the chunk outputs and their concatenation
    (each the size of the whole output), plus one chunk's input and workspace."""
    estimate = chunks.estimate_bytes(call)
    if estimate is None:
        return None
    _, per_example = estimate
    output = chunks.output_bytes_per_example(call)
    if output is None:
        return None
    return 2 * output * batch + (per_example - output) * min(chunk, batch)


def op_determinism() -> bool:
    """Whether tf.config.experimental.enable_op_determinism() is in force."""
    try:
        from tensorflow.python.framework import config as tf_config

        return bool(tf_config.is_op_determinism_enabled())
    except Exception:  # an older or newer TensorFlow without it: assume it may be on
        return True


def _budgeted_in_graph(call: Call, chunk: int, send: Send) -> Any:
    batch = chunks.batch_size(call)
    if batch is not None:
        return chunks.run_split_in_graph(call, chunk, send)
    import tensorflow as tf  # only a traced call with an unknown batch gets here

    x = tf.convert_to_tensor(call.input)
    whole = call.replace(input=x)
    # The batch is known only at run time: the loop runs only when it is too large, or
    # empty (no chunk runs: the empty result of the right shape, where oneDNN's kernel
    # would answer an empty batch wrongly).
    size = tf.shape(x)[0]
    return tf.cond(
        tf.logical_or(size > chunk, tf.equal(size, 0)),
        lambda: chunks.run_split_in_graph(whole, chunk, send),
        lambda: send(whole),
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
