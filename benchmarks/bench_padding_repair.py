"""What does convfix's padding repair cost against the same repair done by hand?

A kernel wider than a VALID input, which TensorFlow answers wrongly (oneDNN: a wrongly
shaped tensor; without it: an empty one), through the patched ``tf.nn.conv2d`` with the
default ``strategy = "pad"`` (convfix zero-pads the too-narrow width to one output position,
keeps VALID, and emits an intervention event) vs TensorFlow's own conv2d called on
``tf.pad(x, ...)`` by hand, no convfix code beneath: as written (``padding_repair``, the
paddings a nested list) and with the paddings made a tensor once (``padding_repair_tensor``,
what convfix's replay does, so the ratio is convfix's own cost). The shape is the issue's example
(x[2, 40, 3, 1], k[3, 5, 1, 8] -> (2, 38, 1, 8)): a small call, so convfix's own cost per
call weighs as much as it ever does. Events go to the temp file ``_setup`` names, as in the
dtype benchmark.

Run alone: ``python benchmarks/bench_padding_repair.py [--quick] [--pairs N] [--json]``.
"""

from __future__ import annotations

import sys
from typing import Any

from _report import Options, Result, main, ratio_result
from _setup import BACKSTOP_CONV2D, original, prepare, unpatched
from _timing import Plan, Side, compare

X_SHAPE, K_SHAPE = (2, 40, 3, 1), (3, 5, 1, 8)
PADS = [[0, 0], [0, 0], [1, 1], [0, 0]]  # width 3 -> 5: one window of the 5-wide kernel
EXPECTED = (2, 38, 1, 8)
QUESTION = "padding repair (pad) VALID, 2x40x3x1 * 3x5x1x8"
NOTE = "base: TF's conv2d_v2(tf.pad(x, [[0, 0], ...]), k, 1, 'VALID') by hand, no convfix beneath"
QUESTION_TENSOR = "padding repair (pad) vs by hand, paddings a tensor"
NOTE_TENSOR = "base: as above with tf.pad's paddings converted to a tensor once, outside the loop"
GOAL = 1.10


def padding_repair(options: Options) -> Result:
    """convfix's zero-pad repair vs the hand-written tf.pad, paddings as written."""
    return _compare(options, as_tensor=False)


def padding_repair_tensor(options: Options) -> Result:
    """convfix's zero-pad repair vs the hand-written tf.pad, paddings made a tensor once."""
    return _compare(options, as_tensor=True)


def _compare(options: Options, as_tensor: bool) -> Result:
    tf = prepare()
    wrapper = tf.nn.conv2d
    tf_conv2d = original(wrapper)
    seed = tf.random.normal(X_SHAPE)
    k = tf.random.normal(K_SHAPE)

    def make_inputs(n: int) -> list[Any]:
        return [seed + 0.0 for _ in range(n)]

    pads = tf.constant(PADS) if as_tensor else PADS

    def by_hand(x: Any) -> Any:
        return tf_conv2d(tf.pad(x, pads), k, 1, "VALID")

    plan = Plan(pairs=options.pairs_or(30, 8), calls=30)
    subject = Side("convfix", lambda x: wrapper(x, k, 1, "VALID"))
    base = Side("by hand", by_hand, context=lambda: unpatched(BACKSTOP_CONV2D))
    _check_repaired(wrapper(seed, k, 1, "VALID"), by_hand(seed))
    c = compare(subject, base, make_inputs, plan)
    if as_tensor:
        return ratio_result(QUESTION_TENSOR, GOAL, c, NOTE_TENSOR)
    return ratio_result(QUESTION, GOAL, c, NOTE)


def _check_repaired(result: Any, expected: Any) -> None:
    # Timing a call that took some other route (SAME, or TensorFlow's wrong answer) would
    # answer nothing.
    if tuple(result.shape) != EXPECTED or not bool((result == expected).numpy().all()):
        raise RuntimeError(f"expected the pad repair's {EXPECTED}, got {tuple(result.shape)}")


if __name__ == "__main__":
    sys.exit(main([padding_repair, padding_repair_tensor], __doc__ or ""))
