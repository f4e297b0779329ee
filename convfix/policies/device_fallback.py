"""device_fallback: a convolution its device cannot run runs again on another device.

Two failures bring a call here: cuDNN failing to start ("Failed to get convolution
algorithm. This is probably because cuDNN failed to initialize", see convfix.tf_errors),
and an out-of-memory that split_batch could not get below. The call reruns under
``tf.device(device)`` (default "/CPU:0"); a call already on that device is not rerun.
That moves work off the accelerator, so the event is a warning with a hint naming the
known root causes. The device that worked is remembered per signature, so later calls go
there directly; after ``split_batch.grow_back_after`` of them the own device is tried
again (a failure doubles the wait), since memory may have been freed meanwhile.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any

import tensorflow as tf

from convfix.config import DeviceFallbackPolicyConfig
from convfix.memory import Learned
from convfix.policies.recovery_base import Attempt, GaveUp, Recovered
from convfix.tf_errors import Kind, classify, hint


class DeviceFallbackPolicy:
    name = "device_fallback"

    def __init__(
        self, settings: DeviceFallbackPolicyConfig, grow_back_after: int, table_size: int
    ) -> None:
        self.settings = settings
        self.device = canonical_device(settings.device)
        self.grow_back_after = grow_back_after
        self.table_size = table_size

    def explain(self, reason: str) -> str:
        return f"run the call again on {self.settings.device}"

    def applies(self, attempt: Attempt) -> bool:
        """False for a call already on the fallback device: running it there again would
        fail the same way."""
        return bool(attempt.device) and attempt.device != self.device

    def recover(self, attempt: Attempt, reason: str, error: Exception) -> Recovered:
        if not self.applies(attempt):
            raise GaveUp(error, 1)
        started = time.perf_counter()
        try:
            result = self._run_there(attempt)
        except Exception as failure:  # the other device failed too: TF's first error stands
            raise GaveUp(error, 2) from failure
        if attempt.key is not None:
            entry = attempt.learned.get(attempt.key) or Learned()
            entry.device, entry.reason, entry.successes = self.settings.device, reason, 0
            entry.grow_after = entry.grow_after or self.grow_back_after
            attempt.learned.put(attempt.key, entry, self.table_size)
        return self._record(attempt, reason, result, 2, started, learned=False)

    def run_learned(self, attempt: Attempt, entry: Learned) -> Recovered:
        """A signature that needed the fallback device before goes there directly, except
        every ``grow_after`` calls, when the own device gets another chance."""
        started, attempts = time.perf_counter(), 1
        if entry.grow_after and entry.successes >= entry.grow_after:
            try:
                result = attempt.send(attempt.call)
            except Exception as error:
                if classify(error) is None:
                    raise
                entry.grow_after *= 2
                entry.successes, attempts = 0, 2
            else:
                entry.device = None  # the own device works again
                if entry.chunk is None and attempt.key is not None:
                    attempt.learned.forget(attempt.key)
                return Recovered(result, "none", {}, {})
        result = self._run_there(attempt)
        entry.successes += 1
        return self._record(attempt, entry.reason or "", result, attempts, started, learned=True)

    def _run_there(self, attempt: Attempt) -> Any:
        with tf.device(self.settings.device):
            return attempt.send(attempt.call)

    def _record(
        self,
        attempt: Attempt,
        reason: str,
        result: Any,
        attempts: int,
        started: float,
        learned: bool,
    ) -> Recovered:
        kind: Kind = "out_of_memory" if reason == "out_of_memory" else "dnn_init_failed"
        return Recovered(
            result,
            "run_on_device",
            {"device": attempt.device},
            {"device": self.device},
            {
                "attempts": attempts,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
                "learned": learned,
                "hint": hint(kind),
            },
        )


def device_of(error: BaseException | None = None) -> str:
    """Where an eager convolution runs, as ``TYPE:index`` ("GPU:0"): the device TensorFlow's
    error names, else the ``tf.device`` scope in force, else TensorFlow's default placement
    (the first GPU if there is one, whatever device the input lives on)."""
    if error is not None:
        found = _ERROR_DEVICE.search(str(error))
        if found:
            return f"{found.group(1).upper()}:{found.group(2)}"
    from tensorflow.python.eager import context

    scope = context.context().device_name
    return canonical_device(scope) if scope else _default_device()


# TF's eager error framing names the device: "{{function_node __wrapped__Conv2D_device_
# /job:localhost/replica:0/task:0/device:GPU:0}} ...", "... on /job:.../device:GPU:0 by ..."
_ERROR_DEVICE = re.compile(r"/device:([A-Za-z_]+):(\d+)")


@functools.lru_cache(maxsize=1)
def _default_device() -> str:
    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def canonical_device(name: str) -> str:
    """``TYPE:index`` for any device string TensorFlow accepts ("/GPU:0", "/device:gpu:0",
    a full "/job:.../device:CPU:0"); the string itself when TensorFlow cannot parse it."""
    try:
        spec = tf.DeviceSpec.from_string(name)
    except (ValueError, TypeError):
        return name
    if spec.device_type is None:
        return ""
    return f"{spec.device_type.upper()}:{spec.device_index or 0}"
