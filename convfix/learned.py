"""What recovery learned about a call signature: the chunk that fits, the device that works.

A signature is what decides a convolution's memory and kernel: the op, the per-example
input shape and dtype, the filter's shape and dtype, strides, padding, dilations, data
format (every other argument), and the device it runs on. The batch size is left out on
purpose: a chunk size learned on a batch of 64 applies to a batch of 128 of the same
examples. The table is bounded (``[policies.split_batch] max_table_size``), least recently
used first out, so a workload of ever-changing shapes cannot grow it without limit.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from convfix.call import Call
from convfix.chunks import shape_values
from convfix.geometry import static_shape
from convfix.replay import describe

Key = tuple[Any, ...]


@dataclass(slots=True)
class Learned:
    """For one signature: run in chunks of ``chunk`` examples (None: whole), on ``device``
    (None: where the call asked), and when to try a larger chunk or the own device again."""

    chunk: int | None = None
    in_place: bool = False  # join the chunks in place: a concatenation did not fit
    device: str | None = None
    reason: str | None = None  # why the device was needed (out_of_memory, dnn_init_failed)
    successes: int = 0  # calls run as learned since the last change
    grow_after: int = 0  # successes before trying larger again; 0 never


class LearnedTable:
    """A bounded, thread-safe map from signature to what was learned."""

    def __init__(self) -> None:
        self._entries: OrderedDict[Key, Learned] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> Learned | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Key, entry: Learned, limit: int) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > limit:
                self._entries.popitem(last=False)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


TABLE = LearnedTable()
"""The process-wide table (eager calls only: a traced call is never retried)."""


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


def signature(call: Call, device: str) -> Key | None:
    """The call's signature (see the module docstring); None when some argument cannot be
    described by value (then nothing is learned for it)."""
    parts: list[Any] = [call.spec.name, device]
    for name, value in sorted(call.arguments.items()):
        if name == "name":
            continue
        if name == call.input_name:
            shape = static_shape(value)
            if not shape:
                return None
            parts.append((name, str(getattr(value, "dtype", "")), tuple(shape[1:])))
        elif name == call.filter_name or name == call.spec.pointwise_param:
            shape = static_shape(value)
            parts.append((name, str(getattr(value, "dtype", "")), tuple(shape or ())))
        elif name == "output_shape":  # transposes: the batch is the first element
            dims = shape_values(value)
            parts.append((name, None if dims is None else tuple(dims[1:])))
        else:
            try:
                parts.append((name, describe(value)))
            except Exception:
                return None
    return tuple(parts)
