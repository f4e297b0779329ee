"""batch_dim: an input one rank short, as when a single image is passed without its batch.

Repair: add a batch dimension of 1, run, and take it off the result: exactly
``op(x[None])[0]``. TF 2.21 with oneDNN aborts the process on such a call, so a call this
policy does not repair is refused by the guard.

An input one rank short could also be missing its *channel* dimension instead: a
[32, 28, 28] input with a [3, 3, 1, 28] filter reads as one 28-by-32 image with 28 channels
(a grouped convolution) or as 32 single-channel images. When both readings are valid,
convfix refuses and names them: guessing would silently compute the wrong thing. A last
dimension of 1 is read as a channel (a single grayscale image), never as a spatial size.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from convfix.call import Call, Problem, Repair
from convfix.config import BatchDimPolicyConfig
from convfix.errors import ConvFixError
from convfix.geometry import static_shape

name = "batch_dim"


class BatchDimPolicy:
    """Add the missing batch dimension, run, and remove it from the result."""

    name = name

    def __init__(self, settings: BatchDimPolicyConfig) -> None:
        self.settings = settings

    def detect(self, call: Call) -> Problem | None:
        return None  # the guard finds missing_batch_dim; this policy repairs it

    def describe(self, call: Call, problem: Problem) -> str:
        return "add a batch dimension of 1, run, and take it off the result"

    def apply(self, call: Call, problem: Problem) -> Repair:
        if call.spec.kind == "transpose":
            raise ConvFixError(
                f"convfix refused {problem.message}. A transposed convolution's output_shape "
                "names the batch too: add the batch dimension to the input and output_shape"
            )
        x = static_shape(call.input) or []
        f = static_shape(call.filter) or []
        as_batch, as_channel = self._readings(call, x, f)
        if as_channel and as_batch:
            raise ConvFixError(
                f"convfix refused {problem.message}. It could be missing its batch "
                f"dimension (one example of shape {x}, {_channels(call, x)} channels) or its "
                f"channel dimension ({x[0]} examples with 1 channel, as the filter "
                f"{f} also accepts): pass input[None] or input[..., None] yourself"
            )
        if as_channel:
            raise ConvFixError(
                f"convfix refused {problem.message}. With filter {f} it reads as a batch "
                "whose channel dimension is missing, not its batch: pass input[..., None]"
            )
        expanded = tf.expand_dims(call.input, 0)

        def finish(result: Any) -> Any:
            return tf.squeeze(result, axis=0)

        after = {"input_shape": static_shape(expanded)}
        rewrites = {call.input_name: lambda x: tf.expand_dims(x, 0)}
        return Repair(call.replace(input=expanded), "add_batch_dim", after, finish, rewrites)

    @staticmethod
    def _readings(call: Call, x: list[int | None], f: list[int | None]) -> tuple[bool, bool]:
        """(valid as one example lacking its batch, valid as a batch lacking channels)."""
        if len(f) < 3:
            return True, False
        f_in = f[-2]
        channels = _channels(call, x)
        if channels is None or f_in is None:
            return True, False
        if call.spec.kind == "conv":
            as_batch = f_in > 0 and channels % f_in == 0
        else:
            as_batch = channels == f_in
        # As a batch without channels, the input's last dimension becomes a spatial one; a
        # last dimension of 1 (a grayscale image) is a channel, not a one-pixel-wide image.
        last = x[-1] if x else None
        as_channel = f_in == 1 and call.channels_last() and (last is None or last > 1)
        return as_batch, as_channel


def _channels(call: Call, x: list[int | None]) -> int | None:
    if not x:
        return None
    return x[-1] if call.channels_last() else x[0]
