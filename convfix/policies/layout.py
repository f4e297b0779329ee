"""layout (off unless a file or preset turns it on): a filter in PyTorch's OIHW order, or an
input whose channels are not where data_format says.

Only a call TensorFlow rejects is considered (its channels do not match), and it is
repaired only when exactly one other reading is valid:
- the filter as [out, in, k1..kN] (PyTorch) -> transposed to [k1..kN, in, out];
- the input as channels-first although data_format says channels-last -> transposed to
  channels-last, run, and the result transposed back to channels-first;
- an input one rank short whose only valid reading is a batch of one-channel examples
  missing their channel axis (``missing_channel_dim``, found by the guard:
  guard/rules.py ``rank_short_readings``) -> ``input[..., None]``. [28, 28, 3] with a
  one-channel filter would read as 28 images of 28x3: a guess about the data's layout,
  which is why this policy is opt-in.
A valid call is never touched: input channels a multiple of the filter's in-channels is a
grouped convolution, valid TensorFlow, whatever it looks like.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from convfix.call import Call, Problem, Repair
from convfix.config import LayoutPolicyConfig
from convfix.errors import ConvFixError
from convfix.geometry import static_shape

name = "layout"


def _fits(channels: int, filter_in: int) -> bool:
    return filter_in > 0 and channels % filter_in == 0


class LayoutPolicy:
    """Transpose a PyTorch-ordered filter or a channels-first input, when unambiguous."""

    name = name

    def __init__(self, settings: LayoutPolicyConfig) -> None:
        self.settings = settings

    def detect(self, call: Call) -> Problem | None:
        if call.spec.kind != "conv" or not call.channels_last():
            return None
        x, f = static_shape(call.input), static_shape(call.filter)
        if not x or not f or None in x or None in f or len(x) != len(f):
            return None
        channels, f_in = x[-1], f[-2]
        assert channels is not None and f_in is not None
        if _fits(channels, f_in):
            return None  # valid TensorFlow, grouped or not: never touched
        readings = self._readings(x, f)
        return Problem(
            "channel_mismatch",
            name,
            "answered",
            f"{call.spec.name}: input {x} has {channels} channels but filter {f} expects a "
            f"multiple of {f_in}",
            {"input_shape": x, "filter_shape": f, "readings": readings},
        )

    @staticmethod
    def _readings(x: list[int | None], f: list[int | None]) -> list[str]:
        found = []
        if _fits(int(x[-1] or 0), int(f[1] or 0)):  # filter as [out, in, k...]
            found.append("filter_oihw")
        if _fits(int(x[1] or 0), int(f[-2] or 0)):  # input as [batch, channels, spatial...]
            found.append("input_channels_first")
        return found

    def describe(self, call: Call, problem: Problem) -> str:
        if problem.reason == "missing_channel_dim":
            return "add the missing channel axis (input[..., None])"
        readings = list(problem.before.get("readings", []))
        if readings == ["filter_oihw"]:
            return "transpose the filter from PyTorch's [out, in, k...] to [k..., in, out]"
        if readings == ["input_channels_first"]:
            return "transpose the input to channels-last, run, and transpose the result back"
        return "no repair: the call does not have exactly one valid other layout"

    def apply(self, call: Call, problem: Problem) -> Repair:
        if problem.reason == "missing_channel_dim":
            expanded = tf.expand_dims(call.input, -1)
            return Repair(
                call.replace(input=expanded),
                "add_channel_dim",
                {"input_shape": static_shape(expanded)},
                rewrites={call.input_name: lambda x: tf.expand_dims(x, -1)},
            )
        readings = list(problem.before.get("readings", []))
        rank = len(problem.before["input_shape"])
        if readings == ["filter_oihw"]:
            perm = [*range(2, rank), 1, 0]
            moved = tf.transpose(call.filter, perm)
            return Repair(
                call.replace(filter=moved),
                "transpose_filter",
                {"filter_shape": static_shape(moved)},
            )
        if readings == ["input_channels_first"]:
            to_last = [0, *range(2, rank), 1]
            to_first = [0, rank - 1, *range(1, rank - 1)]
            moved = tf.transpose(call.input, to_last)

            def finish(result: Any) -> Any:
                return tf.transpose(result, to_first)

            after: dict[str, Any] = {"input_shape": static_shape(moved), "output": "channels_first"}
            return Repair(call.replace(input=moved), "transpose_input", after, finish)
        raise ConvFixError(
            f"convfix refused {problem.message}: "
            + (
                f"several layouts would be valid ({', '.join(readings)}); transpose it yourself"
                if readings
                else "no other layout of input or filter is valid either"
            )
        )
