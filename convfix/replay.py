"""Repairs remembered by call signature, so a hot loop pays for the checks once.

A training loop repairs the same call every step. The first time, the pipeline binds the
call, asks every policy, and repairs; it then remembers, for the call's signature (the op,
the config, and every argument's type, dtype and shape, or value for plain Python values;
variables by identity too), which problems it handled, in order. Later calls with that
signature replay those repairs directly: no refusal from TensorFlow first, no detection.
A signature that needed nothing is remembered too, so a healthy call that shares a filter
with a repaired one stays cheap.

Only eager calls are remembered: inside tf.function the pipeline runs once per trace.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from convfix.config import Config
from convfix.policies.base import Problem, Repair

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


def signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
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
