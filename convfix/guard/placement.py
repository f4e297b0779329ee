"""Where a call will run, as far as it is known when the call is made (or traced).

A device is only chosen when an op is placed, after convfix has seen the call; what is
known before is the device scope around the call (``tf.device``, inside tf.function too)
and whether XLA compiles it (``jit_compile=True``). The rules read the answer from
``Call.placement`` (guard/rules.py), so they stay pure; only the rule that needs it makes
anyone read it, and only for a channels-first call on a build without channels-first CPU
kernels: every other call pays nothing.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from convfix.call import Call
from convfix.guard.build import Build


def needed(call: Call, build: Build) -> bool:
    """Does any rule read this call's placement? (rules.channels_first_on_cpu only.)"""
    fmt = call.data_format
    return fmt is not None and fmt.startswith("NC") and build.has("no_channels_first_cpu_kernels")


def where() -> str | None:
    """Where a call made here runs: "xla" where XLA compiles it, else the device scope's
    kind ("cpu", "gpu"), else None (no scope: TensorFlow chooses)."""
    if _in_xla():
        return "xla"
    return _scope_kind()


def _in_xla() -> bool:
    try:  # private, present on TF 2.12-2.21; without it, no call counts as compiled
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))
    except Exception:
        return False


def _scope_kind() -> str | None:
    try:  # the scope's full name, eager or traced: "/job:localhost/.../device:CPU:0"
        from tensorflow.python.eager import context

        name: Any = context.context().device_name
        kind = tf.DeviceSpec.from_string(name or "").device_type
    except Exception:
        return None
    return kind.lower() if isinstance(kind, str) and kind else None
