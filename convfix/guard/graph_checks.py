"""The one run-time check convfix adds inside tf.function, only where static shapes
cannot prove a call safe and only on builds where oneDNN makes it unsafe.

- Unknown batch size, everything else known (every Keras model): TF's oneDNN kernel
  answers an empty batch with the input's shape where the output's belongs. One EnsureShape
  op on the result (the static output shape TensorFlow inferred, batch left open) turns that
  garbage into an InvalidArgumentError; a right result passes at the cost of a shape
  comparison. (A Reshape would repair instead of refuse, but Grappler deletes a Reshape
  whose static shapes match, measured on TF 2.21.)
- Unknown spatial sizes (fully convolutional models): an Assert that the batch is not
  empty and, for VALID or explicit padding, that each spatial size fits the dilated kernel.
  A failing check raises InvalidArgumentError naming convfix, instead of garbage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from convfix.call import Call, spatial_rank
from convfix.geometry import effective_kernel, padding_name, per_spatial, static_shape
from convfix.guard import rules
from convfix.guard.build import Build


def needed(call: Call, build: Build) -> bool:
    """Does this traced call need a run-time check? The guard's rules say (rules.py)."""
    return rules.needs_run_time_check(call, build)


def dispatch_checked(call: Call, dispatch: Callable[[], Any]) -> Any:
    """Dispatch with the check around it (see the module docstring)."""
    x = static_shape(call.input)
    f = static_shape(call.filter)
    spatial = spatial_rank(call, f, x)
    if x is None or f is None or spatial is None or len(x) != spatial + 2:
        return dispatch()
    if None not in x[1:]:
        result = dispatch()
        out = static_shape(result)
        if out is not None and None not in out[1:]:
            return tf.ensure_shape(result, [None, *out[1:]])
        return result
    conditions = [tf.size(call.input) > 0]
    messages = ["convfix: empty input to", call.spec.name]
    padding = call.padding
    channels_last = call.channels_last()
    dilations = per_spatial(call.dilations, spatial, channels_last)
    valid = not isinstance(padding, str) or padding_name(padding) == "VALID"
    if valid and isinstance(padding, str) and dilations is not None and None not in f:
        kernel = effective_kernel(f[:spatial], dilations)
        shape = tf.shape(call.input)
        sizes = shape[1 : 1 + spatial] if channels_last else shape[2 : 2 + spatial]
        conditions.append(tf.reduce_all(sizes >= tf.constant(kernel, sizes.dtype)))
        messages = [f"convfix: input spatial size below the kernel {kernel} in", call.spec.name]
    check = tf.debugging.Assert(tf.reduce_all(tf.stack(conditions)), messages)
    with tf.control_dependencies([check]):
        return tf.identity(dispatch())
