"""Where this process and this call sit in a tf.distribute job: the task and the replica.

Events name them so that the lines of many workers (and of the replicas inside one worker)
can be told apart. Nothing here imports TensorFlow: the task comes from the ``TF_CONFIG``
environment variable, which is TensorFlow's own contract for multi-worker jobs, and the
replica is looked up only if the program already imported TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["TF_CONFIG", "parse_task", "replica", "task", "task_index", "worker"]

TF_CONFIG = "TF_CONFIG"

# (raw TF_CONFIG, parsed task). Keyed by the raw text rather than read once at import:
# programs commonly assign os.environ["TF_CONFIG"] after `import convfix.auto` (the first
# line), and a forked child may change it; comparing one string per written event is free
# next to the JSON parse it saves. One tuple, so a racing thread reads a consistent pair.
_cache: tuple[str | None, tuple[str, int] | None] = (None, None)


def parse_task(raw: str | None) -> tuple[str, int] | None:
    """``(type, index)`` of ``TF_CONFIG``'s ``task``, or None if it is absent or malformed.

    Never raises: a broken TF_CONFIG is TensorFlow's error to report, not a reason for a
    convolution (or its event) to fail. The index must be a non-negative integer (or its
    decimal string, as ``TFConfigClusterResolver`` reads it with ``int()``); a bool is not.
    """
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError):  # bad JSON; RecursionError: absurdly deep nesting
        return None
    if not isinstance(config, dict):
        return None
    spec = config.get("task")
    if not isinstance(spec, dict):
        return None
    kind, index = spec.get("type"), spec.get("index")
    if not isinstance(kind, str) or not kind:
        return None
    if isinstance(index, str) and index.isascii() and index.isdigit():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        return None
    return kind, index


def task() -> tuple[str, int] | None:
    """This process's ``(task type, task index)`` from ``TF_CONFIG``, or None."""
    global _cache
    raw = os.environ.get(TF_CONFIG)
    cached_raw, parsed = _cache
    if raw != cached_raw:
        parsed = parse_task(raw)
        _cache = (raw, parsed)
    return parsed


def worker() -> str | None:
    """``"worker:1"``-style name of this process's task, or None when not distributed."""
    current = task()
    return None if current is None else f"{current[0]}:{current[1]}"


def task_index() -> int | None:
    """This process's task index from ``TF_CONFIG``, or None."""
    current = task()
    return None if current is None else current[1]


def replica() -> int | None:
    """The replica id of the calling thread inside ``strategy.run``, when it is a Python int.

    None outside a tf.distribute strategy (the default replica context says 0, which would
    be noise), in a cross-replica context, when TensorFlow is not imported, and where the id
    is only known at run time (a tensor, as under TPU replication). Never raises.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    try:
        distribute = tf.distribute
        if not distribute.has_strategy():
            return None
        context = distribute.get_replica_context()
        if context is None:
            return None
        # The public property wraps even a static id in a new Const op, which would add a
        # node to the graph being traced; the attribute holds the int (or tensor) as given.
        value = getattr(context, "_replica_id_in_sync_group", None)
        if value is None:
            value = context.replica_id_in_sync_group
        if not isinstance(value, int):
            value = tf.get_static_value(value)  # a tensor: known at trace time, or None
        return None if value is None else int(value)
    except Exception:  # a partly imported or future TensorFlow: no replica, no failure
        return None
