"""convfix's one memory of past calls, per signature, and its one ``clear()``.

A training loop makes the same calls step after step; what convfix worked out for one is
remembered so the next pays for nothing twice:

- ``plans`` (per op): which problems the pipeline handled for an eager call's signature
  (the op, the config, every argument's type, dtype and shape, or value for plain Python
  values; variables by identity too), in order, and the repairs when they are plain
  argument rewrites. A later call with that signature replays them: no refusal from
  TensorFlow first, no detection. A signature that needed nothing is remembered too, so a
  healthy call that shares a filter with a repaired one stays cheap. Only eager calls:
  inside tf.function the pipeline runs once per trace.
- ``learned``: what recovery learned for a call's memory signature (the op, the
  per-example input shape and dtype, the filter, every other argument, and the device; not
  the batch size, so a chunk learned on a batch of 64 applies to 128 of the same
  examples): the chunk that fits, the device that works. Bounded by
  ``[policies.split_batch] max_table_size``, least recently used first out.
- ``flagged`` filters (by id) whose calls were repaired, and ``routed`` per-example input
  shapes that recovery learned something for: the express lane and the fast check send
  such calls to pipeline.handle, where the plans and the learned table are read, instead
  of to TensorFlow first.

No TensorFlow import: values are described by their attributes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from convfix.call import Call, Problem, Repair
from convfix.config import Config
from convfix.geometry import shape_values, static_shape

Key = tuple[Any, ...]

_SCALARS = frozenset({int, float, str, bool, type(None)})
TENSOR_TYPES: set[type] = set()
"""Eager and symbolic tensor classes, registered when TensorFlow is patched."""


@dataclass(frozen=True, slots=True)
class Step:
    """One repair of a plan, replayable as argument rewrites."""

    problem: Problem
    mode: str
    repair: Repair


@dataclass(frozen=True, slots=True)
class Plan:
    """What the pipeline did for one signature: the problems it handled, in order, and,
    when every repair was a plain argument rewrite, the repairs themselves."""

    config: Config  # the plan holds for this config object only (overrides make new ones)
    problems: tuple[Problem, ...]
    layer: str | None
    steps: tuple[Step, ...] | None = None


class ReplayTable:
    """A bounded map from call signature to Plan."""

    limit = 1024

    def __init__(self) -> None:
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...] | None, config: Config) -> Plan | None:
        if key is None:
            return None
        plan = self._plans.get(key)
        return plan if plan is not None and plan.config is config else None

    def put(self, key: tuple[Any, ...] | None, plan: Plan) -> None:
        if key is None:
            return
        with self._lock:
            if len(self._plans) >= self.limit:
                self._plans.clear()  # a changing workload: start over rather than grow
            self._plans[key] = plan

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()


def call_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """A hashable description of everything the checks look at; None when some argument
    cannot be described that way (then nothing is remembered)."""
    try:
        parts: list[Any] = [_describe(a) for a in args]
        parts.extend((name, _describe(value)) for name, value in sorted(kwargs.items()))
        key = tuple(parts)
        hash(key)
        return key
    except _Undescribable:
        return None
    except TypeError:
        return None


class _Undescribable(Exception):
    pass


def _describe(value: Any) -> Any:
    kind = type(value)
    if kind in TENSOR_TYPES:  # the common case first: no attribute probing
        return (kind, value.dtype, value.shape._dims)
    if kind in _SCALARS:
        return (kind, value)  # the type too: True == 1 must not share a key
    if kind is list or kind is tuple:
        if len(value) > 16:
            raise _Undescribable  # a nested list input: too costly to describe every call
        return (kind, tuple(_describe(v) for v in value))
    if kind.__module__.startswith("numpy"):
        raise _Undescribable  # TensorFlow converts arrays by value rules of its own
    shape = getattr(value, "shape", None)
    dims = getattr(shape, "_dims", None)  # TensorShape's tuple: no per-dimension iteration
    if dims is None:
        dims = None if shape is None else tuple(shape)
    dtype = getattr(value, "dtype", None)
    if dims is None or dtype is None:
        raise _Undescribable
    if hasattr(value, "assign"):
        # A variable is one layer's weight: its identity keeps each layer's plan (and so
        # the layer named in its events) apart from another layer's of the same shapes.
        return (kind, dtype, dims, id(value))
    return (kind, dtype, dims)


def describe(value: Any) -> Any:
    """One argument as a hashable value (type, dtype, shape; or the value itself for plain
    Python values). Raises ValueError when it cannot be described that way."""
    try:
        return _describe(value)
    except _Undescribable:
        raise ValueError(f"cannot describe a {type(value).__name__} by value") from None


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


def learned_key(call: Call, device: str) -> Key | None:
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


class Memory:
    """Everything convfix remembers about past calls; ``clear()`` forgets all of it.

    The sets keep their identity for the process's life (the fast checks hold them), so
    clearing empties them in place."""

    limit = 512  # flagged filters and routed shapes; past it a set starts over

    def __init__(self) -> None:
        self.learned = LearnedTable()
        self.flagged: set[int] = set()
        self.routed: set[tuple[int | None, ...]] = set()
        self._plans: dict[str, ReplayTable] = {}
        self._lock = threading.Lock()

    def plans(self, op: str) -> ReplayTable:
        """The remembered plans of one op (made on first use)."""
        with self._lock:
            table = self._plans.get(op)
            if table is None:
                table = self._plans[op] = ReplayTable()
            return table

    def flag(self, value: Any) -> None:
        """Calls with this filter were repaired: route them to the replay."""
        if len(self.flagged) >= self.limit:
            self.flagged.clear()
        self.flagged.add(id(value))

    def route(self, input_dims: tuple[int | None, ...]) -> None:
        """Recovery learned something for inputs of these per-example dims."""
        if len(self.routed) >= self.limit:
            self.routed.clear()
        self.routed.add(input_dims)

    def clear(self) -> None:
        """Forget every plan, everything learned, every flagged filter and routed shape."""
        self.learned.clear()
        self.flagged.clear()
        self.routed.clear()
        with self._lock:
            for table in self._plans.values():
                table.clear()


MEMORY = Memory()
"""The process's memory (eager calls only: a traced call is never retried or replayed)."""
