"""batch_dim: an input one rank short, as when a single image is passed without its batch.

Repair: add a batch dimension of 1, run, and take it off the result: exactly
``op(x[None])[0]``. TF 2.21 with oneDNN aborts the process on such a call, so a call this
policy does not repair is refused by the guard.

An input one rank short could also be missing its *channel* dimension instead: a
[32, 28, 28] input with a [3, 3, 1, 28] filter reads as one 28-by-32 image with 28 channels
(a grouped convolution) or as 32 single-channel images. The guard lists the readings
TensorFlow would accept (guard/rules.py ``rank_short_readings``); when both are valid,
convfix refuses and names them: guessing would silently compute the wrong thing. Where
only the channel reading is valid, the problem is the layout policy's
(``missing_channel_dim``). A last dimension of 1 is read as a channel (a single grayscale
image), never as a spatial size.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from convfix.call import Call, Problem, Repair
from convfix.config import BatchDimPolicyConfig
from convfix.errors import ConvFixError
from convfix.geometry import static_shape
from convfix.policies import output_batch

name = "batch_dim"


class BatchDimPolicy:
    """Add the missing batch dimension, run, and remove it from the result."""

    name = name

    def __init__(self, settings: BatchDimPolicyConfig) -> None:
        self.settings = settings

    def detect(self, call: Call) -> Problem | None:
        return None  # the guard finds missing_batch_dim; this policy repairs it

    def describe(self, call: Call, problem: Problem) -> str:
        if problem.reason == "output_batch_mismatch":
            return output_batch.DESCRIPTION
        return "add a batch dimension of 1, run, and take it off the result"

    def apply(self, call: Call, problem: Problem) -> Repair:
        if problem.reason == "output_batch_mismatch":  # a transpose's output batch
            return output_batch.repair(call, problem)
        if call.spec.kind == "transpose":
            raise ConvFixError(
                f"convfix refused {problem.message}. A transposed convolution's output_shape "
                "names the batch too: add the batch dimension to the input and output_shape"
            )
        readings = list(problem.before.get("readings", ["batch"]))
        if "channel" in readings:  # and "batch": the guard gives the channel alone to layout
            x = static_shape(call.input) or []
            f = static_shape(call.filter) or []
            raise ConvFixError(
                f"convfix refused {problem.message}. It could be missing its batch "
                f"dimension (one example of shape {x}, {_channels(call, x)} channels) or its "
                f"channel dimension ({x[0]} examples with 1 channel, as the filter "
                f"{f} also accepts): pass input[None] or input[..., None] yourself"
            )
        expanded = tf.expand_dims(call.input, 0)

        def finish(result: Any) -> Any:
            return tf.squeeze(result, axis=0)

        after = {"input_shape": static_shape(expanded)}
        rewrites = {call.input_name: lambda x: tf.expand_dims(x, 0)}
        return Repair(call.replace(input=expanded), "add_batch_dim", after, finish, rewrites)


def _channels(call: Call, x: list[int | None]) -> int | None:
    if not x:
        return None
    return x[-1] if call.channels_last() else x[0]
