"""The pipeline's last stage: TensorFlow raised at run time, and a recovery policy acts.

    out of memory   -> split_batch (chunks)  -> device_fallback, if the chunks never fit
    cuDNN/DNN init  -> device_fallback

Eager calls only: inside tf.function an op's error surfaces when the graph runs, where no
Python code of convfix's can catch it (``max_batch_bytes`` prevents OOM there instead).
Modes: fix recovers; warn logs a warning and re-raises TensorFlow's error; strict and
off re-raise it untouched (strict logs the warning too), so the caller's own
``except tf.errors.ResourceExhaustedError`` handlers keep working. A recovery that fails
re-raises TensorFlow's first error; a convfix bug while recovering does the same and logs
``convfix.internal_error``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from convfix import events, runtime
from convfix.call import Call
from convfix.config import Config
from convfix.memory import Memory, learned_key
from convfix.pipeline.decide import Verdict, decide, mode_of
from convfix.policies.device_fallback import DeviceFallbackPolicy, device_of
from convfix.policies.recovery_base import Attempt, GaveUp, Recovered, Send
from convfix.policies.split_batch import SplitBatchPolicy
from convfix.tf_errors import classify


class _Policies:
    def __init__(self, config: Config) -> None:
        split = config.policies.split_batch
        self.split = SplitBatchPolicy(split)
        self.fallback = DeviceFallbackPolicy(
            config.policies.device_fallback, split.grow_back_after, split.max_table_size
        )


@functools.lru_cache(maxsize=32)
def _policies(config: Config) -> _Policies:
    return _Policies(config)


def claims(error: BaseException) -> bool:
    """Whether a recovery policy may act on ``error``."""
    return classify(error) is not None


def send(
    call: Call,
    send_call: Send,
    dispatch: Callable[[], Any],
    layer: str | None,
    learned: Callable[[], None],
    memory: Memory,
    tried: int | None = None,
) -> Any:
    """Dispatch an eager call the way its signature learned to run, else as made; recover
    from an error a recovery policy claims. ``learned`` is told when a recovery was
    remembered, so that later calls like this one come here instead of failing first.
    ``tried``: the dispatch already runs the call in chunks of this size."""
    if len(memory.learned):
        try:
            known = _run_learned(call, send_call, layer, memory)
        except tf.errors.OpError:
            raise
        except Exception as bug:  # convfix's own: run the call as made instead
            _internal_error(bug)
            known = None
        if known is not None:
            return known[0]
    try:
        return dispatch()
    except Exception as error:
        if classify(error) is None:
            raise
        return recover(call, send_call, error, layer, learned, memory, tried)


def recover(
    call: Call,
    send_call: Send,
    error: Exception,
    layer: str | None,
    learned: Callable[[], None],
    memory: Memory,
    tried: int | None = None,
) -> Any:
    """``error`` came from TensorFlow running ``call``: recover, or re-raise it."""
    kind = classify(error)
    if kind is None:
        raise error
    config = runtime.config()
    try:
        attempt = _attempt(call, send_call, memory, error, tried)
        policies = _policies(config)
    except Exception as bug:
        _internal_error(bug)
        raise error from None
    if kind == "out_of_memory":
        mode = mode_of(config, "split_batch")
        verdict = decide(mode)
        if verdict is Verdict.REPAIR:
            if not policies.split.applies(attempt):
                _warn(attempt, "split_batch", kind, mode, policies.split.NOT_APPLIED, layer)
                raise error
            outcome = _try(policies.split, attempt, kind, error, mode, layer)
            if outcome is not None:
                learned()
                return outcome[0]
            # The chunks never fitted: another device is the last resort.
        else:  # warn or strict: say what would have happened; off: nothing. TF's error.
            if verdict is not Verdict.LEAVE:
                _warn(attempt, "split_batch", kind, mode, policies.split.explain(kind), layer)
            raise error
    result = _fall_back(attempt, kind, error, config, layer)
    learned()
    return result


def _fall_back(
    attempt: Attempt, kind: str, error: Exception, config: Config, layer: str | None
) -> Any:
    """The last resort: another device, or TensorFlow's error."""
    fallback = _policies(config).fallback
    mode = mode_of(config, "device_fallback")
    verdict = decide(mode)
    if verdict is not Verdict.LEAVE and fallback.applies(attempt):
        if verdict is Verdict.REPAIR:
            outcome = _try(fallback, attempt, kind, error, mode, layer)
            if outcome is not None:
                return outcome[0]
        else:  # warn or strict: say what would have happened
            _warn(attempt, "device_fallback", kind, mode, fallback.explain(kind), layer)
    raise error


def _try(
    policy: SplitBatchPolicy | DeviceFallbackPolicy,
    attempt: Attempt,
    kind: str,
    error: Exception,
    mode: str,
    layer: str | None,
) -> tuple[Any] | None:
    """(result,) from the policy, or None when it gave up (its failure is logged)."""
    try:
        recovered = policy.recover(attempt, kind, error)
    except GaveUp as gave_up:
        _log(attempt, policy.name, kind, mode, layer, "fix_failed", gave_up.attempts)
        return None
    except tf.errors.OpError:
        raise
    except Exception as bug:
        _internal_error(bug)
        raise error from None
    _log_recovered(attempt, policy.name, kind, mode, layer, recovered)
    return (recovered.result,)


def _run_learned(
    call: Call, send_call: Send, layer: str | None, memory: Memory
) -> tuple[Any] | None:
    attempt = _attempt(call, send_call, memory)
    entry = memory.learned.get(attempt.key) if attempt.key is not None else None
    if entry is None:
        return None
    config = runtime.config()
    policies = _policies(config)
    if entry.device is not None and decide(mode_of(config, "device_fallback")) is Verdict.REPAIR:
        recovered = policies.fallback.run_learned(attempt, entry)
        reason, name = entry.reason or "dnn_init_failed", "device_fallback"
    elif entry.chunk is not None and decide(mode_of(config, "split_batch")) is Verdict.REPAIR:
        try:
            found = policies.split.run_learned(attempt, entry)
        except GaveUp as gave_up:  # memory got tighter than even the smallest chunk
            _log(attempt, "split_batch", "out_of_memory", "fix", layer, "fix_failed",
                 gave_up.attempts)  # fmt: skip
            return (_fall_back(attempt, "out_of_memory", gave_up.error, config, layer),)
        if found is None:
            return None
        recovered, reason, name = found, "out_of_memory", "split_batch"
    else:
        return None
    if not recovered.quiet:
        _log_recovered(attempt, name, reason, "fix", layer, recovered)
    return (recovered.result,)


def _attempt(
    call: Call,
    send_call: Send,
    memory: Memory,
    error: Exception | None = None,
    tried: int | None = None,
) -> Attempt:
    device = device_of(error)
    return Attempt(call, send_call, device, learned_key(call, device), memory.learned, tried)


def _log_recovered(
    attempt: Attempt, policy: str, reason: str, mode: str, layer: str | None, done: Recovered
) -> None:
    events.report(
        events.INTERVENTION, policy=policy, op=attempt.call.spec.name, reason=reason,
        mode=mode, action=done.action, before=done.before, after=done.after, graph=False,
        layer=layer, level="warning" if policy == "device_fallback" else "info", **done.fields,
    )  # fmt: skip


def _log(
    attempt: Attempt,
    policy: str,
    reason: str,
    mode: str,
    layer: str | None,
    outcome: str,
    attempts: int,
) -> None:
    events.report(
        events.INTERVENTION, policy=policy, op=attempt.call.spec.name, reason=reason,
        mode=mode, action="none", before={"device": attempt.device}, after={}, graph=False,
        layer=layer, level="warning", outcome=outcome, attempts=attempts,
    )  # fmt: skip


def _warn(
    attempt: Attempt, policy: str, reason: str, mode: str, would: str, layer: str | None
) -> None:
    events.report(
        events.WARNING, policy=policy, op=attempt.call.spec.name, reason=reason, mode=mode,
        action="none", before={"device": attempt.device}, after={}, graph=False,
        layer=layer, level="warning", would=would,
    )  # fmt: skip


def _internal_error(bug: Exception) -> None:
    events.emit(
        events.INTERNAL_ERROR,
        level="error",
        stage="recovery",
        error_type=type(bug).__name__,
        error=str(bug)[:200],
    )
