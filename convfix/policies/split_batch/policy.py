"""split_batch: a convolution out of memory runs again in chunks of its batch.

On TensorFlow's ResourceExhaustedError (eager only: inside tf.function no Python code runs
when the op does), the batch is split into chunks of one size, each ``factor`` times the
last, until the chunks fit, ``min_chunk`` is reached or ``max_retries`` rounds were spent.
What fits is remembered per signature (convfix.memory), so the next call with the same
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
from typing import Any, NamedTuple

from convfix.call import Call, Problem, Repair
from convfix.config import SplitBatchPolicyConfig
from convfix.memory import Learned
from convfix.policies.recovery_base import Attempt, GaveUp, Recovered, Send
from convfix.policies.split_batch import chunks
from convfix.tf_errors import classify


class SplitBatchPolicy:
    name = "split_batch"

    def __init__(self, settings: SplitBatchPolicyConfig) -> None:
        self.settings = settings

    NOT_APPLIED = (
        "not split: the CPU ran out of memory (set policies.split_batch.on_cpu = true to split "
        "it anyway; see the README)"
    )

    def applies(self, attempt: Attempt) -> bool:
        """False for the CPU's own out-of-memory unless ``on_cpu``: a CPU kernel's memory is
        its output, which the chunks need too, and a retry near an address-space limit can
        crash TensorFlow outside its allocator, where its error was clean."""
        return self.settings.on_cpu or not attempt.device.startswith("CPU")

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
            probe=False,
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
                return chunks.run_split_in_graph(call, chunk, send)
            try:
                return chunks.run_split(call, chunk, send)
            except chunks.JoinOutOfMemory as failure:
                if chunks.tape_active():
                    raise failure.error from None  # recovery takes it from here
                return chunks.run_split(call, chunk, send, in_place=True)

        after = {"chunk": chunk, "chunks": None if batch is None else math.ceil(batch / chunk)}
        return Repair(call, "split_batch", after, run=run)

    # -- after TensorFlow raised: out of memory ----------------------------------------

    def recover(self, attempt: Attempt, reason: str, error: Exception) -> Recovered:
        """Split the failed call until it fits; GaveUp when it cannot."""
        batch = chunks.batch_size(attempt.call) or 0
        failed = min(batch, attempt.tried or batch)  # a budget's chunks failed: smaller ones
        return self._shrink(attempt, batch, _Try(failed, False), error, time.perf_counter(), 1)

    def run_learned(self, attempt: Attempt, entry: Learned) -> Recovered | None:
        """Run a call whose signature has a learned chunk; None: it fits whole, run it so."""
        batch = chunks.batch_size(attempt.call)
        if entry.chunk is None or batch is None or batch <= entry.chunk:
            return None
        started, attempts = time.perf_counter(), 1
        ceiling = self._budget_chunk(attempt, batch)
        if entry.grow_after and entry.successes >= entry.grow_after and entry.chunk < ceiling:
            grown = min(ceiling, math.ceil(entry.chunk / self.settings.factor))
            larger = self._step(batch, grown)
            try:
                result = self._run(attempt, _Try(larger, entry.in_place), batch)
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
                done = _Try(larger, entry.in_place)
                return self._record(attempt, batch, done, 1, started, result, grew=True)
        chunk = chunks.even_chunk(batch, entry.chunk) if op_determinism() else entry.chunk
        learned = _Try(chunk, entry.in_place)
        try:
            result = self._run(attempt, learned, batch)
        except chunks.JoinOutOfMemory as failure:  # memory got tighter: join in place
            return self._shrink(attempt, batch, learned, failure.error, started, attempts, True)
        except Exception as error:
            if classify(error) != "out_of_memory":
                raise
            # Memory got tighter since: shrink from the learned chunk on.
            return self._shrink(attempt, batch, learned, error, started, attempts)
        if attempts == 1:  # a call that paid for a failed grow-back starts the wait afresh
            entry.successes += 1
        return self._record(attempt, batch, learned, attempts, started, result)

    def _shrink(
        self,
        attempt: Attempt,
        batch: int,
        failed: _Try,
        error: Exception,
        started: float,
        attempts: int,
        join_failed: bool = False,
    ) -> Recovered:
        """Smaller chunks until one size fits. A concatenation that did not fit is tried
        again with the same chunks joined in place (it needs the output only once)."""
        settings = self.settings
        current = failed
        for _ in range(settings.max_retries):
            if join_failed:
                if current.in_place or chunks.tape_active():
                    break  # in place already, or a tape needs the differentiable concat
                current = _Try(current.chunk, True)
            else:
                smaller = self._step(batch, math.floor(current.chunk * settings.factor))
                if smaller >= current.chunk or smaller < settings.min_chunk:
                    break
                current = _Try(smaller, current.in_place)
            join_failed = False
            if settings.gc:
                # Tensors the failed attempt left in reference cycles (its traceback's
                # frames) are freed only when collected. They are young: collecting the two
                # young generations takes < 1 ms, a full collection ~300 ms with TF loaded.
                gc.collect(1)
            attempts += 1
            try:
                result = self._run(attempt, current, batch)
            except chunks.JoinOutOfMemory:
                join_failed = True
                continue
            except Exception as failure:
                if classify(failure) != "out_of_memory":
                    raise GaveUp(error, attempts) from failure
                continue
            self._learn(attempt, current)
            return self._record(attempt, batch, current, attempts, started, result, fresh=True)
        raise GaveUp(error, attempts)

    def _budget_chunk(self, attempt: Attempt, batch: int) -> int:
        """The largest chunk ``max_batch_bytes`` allows (the batch when no budget is set):
        growing back must not climb over the budget."""
        budget = self.settings.max_batch_bytes
        sizes = _bytes_per_example(attempt) if budget is not None else None
        if budget is None or sizes is None:
            return batch
        return max(self.settings.min_chunk, budget // max(sizes[0], 1))

    def _step(self, batch: int, wanted: int) -> int:
        size = min(batch, max(self.settings.min_chunk, wanted))
        return chunks.even_chunk(batch, size) if op_determinism() else size

    def _run(self, attempt: Attempt, split: _Try, batch: int) -> Any:
        if split.chunk >= batch:
            return attempt.send(attempt.call)
        return chunks.run_split(attempt.call, split.chunk, attempt.send, split.in_place)

    def _learn(self, attempt: Attempt, split: _Try) -> None:
        if attempt.key is None:
            return
        entry = attempt.learned.get(attempt.key) or Learned()
        entry.chunk, entry.in_place, entry.successes = split.chunk, split.in_place, 0
        entry.grow_after = entry.grow_after or self.settings.grow_back_after
        attempt.learned.put(attempt.key, entry, self.settings.max_table_size)

    def _record(
        self,
        attempt: Attempt,
        batch: int,
        split: _Try,
        attempts: int,
        started: float,
        result: Any,
        grew: bool = False,
        fresh: bool = False,
    ) -> Recovered:
        return Recovered(
            result,
            "split_batch",
            {"batch": batch},
            {"chunk": split.chunk, "chunks": math.ceil(batch / split.chunk)},
            {
                "attempts": attempts,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
                "learned": not fresh,
                "grew_back": grew,
                "join": "in_place" if split.in_place else "concat",
                "peak_bytes_estimate": peak_estimate(attempt, batch, split),
            },
        )


class _Try(NamedTuple):
    """One way to run the batch: chunks of ``chunk``, joined in place or concatenated."""

    chunk: int
    in_place: bool


def peak_estimate(attempt: Attempt, batch: int, split: _Try) -> int | None:
    """Bytes a split call holds at its peak besides its input: a concatenation holds every
    chunk's output and the joined output (twice the output), an in-place join the output
    and one chunk's; plus one chunk's input slice and workspace."""
    sizes = _bytes_per_example(attempt)
    if sizes is None:
        return None
    per_example, output = sizes
    chunk = min(split.chunk, batch)
    joined = output * (batch + chunk) if split.in_place else 2 * output * batch
    return joined + (per_example - output) * chunk


_sizes: dict[Any, tuple[int, int] | None] = {}  # by signature: shape arithmetic, once


def _bytes_per_example(attempt: Attempt) -> tuple[int, int] | None:
    """(all bytes, output bytes) per example, remembered per signature: a learned call
    pays for its event's estimate once, not on every call."""
    if attempt.key is not None and attempt.key in _sizes:
        return _sizes[attempt.key]
    estimate = chunks.estimate_bytes(attempt.call)
    output = chunks.output_bytes_per_example(attempt.call)
    sizes = None if estimate is None or output is None else (estimate[1], output)
    if attempt.key is not None:
        if len(_sizes) >= 1024:
            _sizes.clear()
        _sizes[attempt.key] = sizes
    return sizes


def op_determinism() -> bool:
    """Whether tf.config.experimental.enable_op_determinism() is in force."""
    try:
        from tensorflow.python.framework import config as tf_config

        return bool(tf_config.is_op_determinism_enabled())
    except Exception:  # an older or newer TensorFlow without it: assume it may be on
        return True


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
