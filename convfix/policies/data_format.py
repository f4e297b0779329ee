"""data_format (on by default): a channels-first call on a CPU whose TensorFlow has no
channels-first kernel for it (oneDNN off: the default on CPUs without AVX512_VNNI,
AVX512_BF16, AVX_VNNI or AMX, or ``TF_ENABLE_ONEDNN_OPTS=0``), the "trained on a GPU with
channels_first, served on a CPU" failure (tensorflow#7967, keras-team/keras#20414).

Repair: transpose the input to channels-last, run the same op channels-last, transpose
the result back. It is exact: the same products of the same input positions and kernel
taps, in the same order (measured bit-identical with oneDNN's channels-first kernels for
all ten ops). It is no guess either: the caller named the layout. Every argument given in
the call's layout moves with it: full-rank strides and dilations, explicit padding, a
transpose's output_shape. Gradients flow through the transposes.

Which calls (guard/rules.py, ``channels_first_on_cpu``) is decided when the call is made
or traced, from the build and the call's placement (guard/placement.py); the guard finds
it, this policy repairs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from convfix.call import Call, Problem, Repair
from convfix.config import DataFormatPolicyConfig
from convfix.geometry import static_shape
from convfix.ops import default_data_format

name = "data_format"


class DataFormatPolicy:
    """Run a channels-first call channels-last, between two transposes."""

    name = name

    def __init__(self, settings: DataFormatPolicyConfig) -> None:
        self.settings = settings

    def detect(self, call: Call) -> Problem | None:
        return None  # the guard finds channels_first_on_cpu (it depends on the build)

    def describe(self, call: Call, problem: Problem) -> str:
        return "transpose the input to channels-last, run, and transpose the result back"

    def apply(self, call: Call, problem: Problem) -> Repair:
        rank = len(problem.before["input_shape"])
        spatial = rank - 2 if call.spec.spatial is None else call.spec.spatial
        # Leading batch dims (conv2d takes extra ones) stay; channels move last.
        channels = rank - spatial - 1
        to_last = [*range(channels), *range(channels + 1, rank), channels]
        to_first = [*range(channels), rank - 1, *range(channels, rank - 1)]
        layout = default_data_format(spatial)
        # Arguments in the call's full-rank layout move with the input; per-spatial ones
        # (and ints) already read the same either way.
        full = [0, *range(2, spatial + 2), 1]
        moved_args: dict[str, Callable[[Any], Any]] = {
            call.input_name: lambda x: tf.transpose(x, to_last),
            call.spec.data_format_param: lambda _: layout,
        }
        for param in _in_layout(call):
            moved_args[param] = lambda value: _moved(value, full)
        rewrites = {key: rewrite for key, rewrite in moved_args.items() if key in call.arguments}
        arguments = {key: rewrite(call.arguments[key]) for key, rewrite in rewrites.items()}

        def finish(result: Any) -> Any:
            return tf.transpose(result, to_first)

        repaired = call.replace(**arguments)
        after = {"data_format": layout, "input_shape": static_shape(arguments[call.input_name])}
        return Repair(repaired, "transpose_to_channels_last", after, finish, rewrites)


def _in_layout(call: Call) -> list[str]:
    """The parameters that may be given in the call's full-rank layout."""
    found = [call.spec.padding_param, "output_shape"]
    if call.spec.strides_param is not None:
        found.append(call.spec.strides_param)
    return [*found, *call.spec.dilations_params]


def _moved(value: Any, order: Sequence[int]) -> Any:
    """``value`` reordered by ``order`` when it has one entry per dimension of the call
    (full-rank strides, dilations, explicit padding, output_shape), else as it is."""
    if value is None or isinstance(value, (str, bytes, int, float)):
        return value
    if tf.is_tensor(value):
        shape = static_shape(value)
        if shape is None or len(shape) != 1 or shape[0] not in (None, len(order)):
            return value
        return tf.gather(value, list(order))
    try:
        entries = list(value)
    except TypeError:
        return value
    if len(entries) != len(order):
        return value
    return [entries[i] for i in order]
