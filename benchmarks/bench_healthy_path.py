"""What does convfix cost on a healthy eager tf.nn.conv2d call?

The patched function (the wrapper installed at ``tf.nn.conv2d``) against TensorFlow's own
``conv2d_v2`` with ``gen_nn_ops.conv2d`` restored too (convfix does not wrap it), so the baseline
crosses no convfix code at all. Every call gets a fresh input tensor, as in a real pipeline.
Each pair is one block of calls alternating between the two (_timing.compare_alternating).

Run alone: ``python benchmarks/bench_healthy_path.py [--quick] [--pairs N] [--json]``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from _report import Options, Result, main, ratio_result
from _setup import (
    BACKSTOP_CONV2D,
    fast_path_note,
    original,
    prepare,
    takes_fast_path,
    unpatched,
)
from _timing import Plan, Side, compare, compare_alternating

TYPICAL = ((8, 32, 32, 16), (3, 3, 16, 16))
TINY = ((1, 8, 8, 3), (3, 3, 3, 4))
BASELINE = "base: TF's own conv2d_v2 (the function convfix wraps);"


def typical_layer(options: Options) -> Result:
    """8x32x32x16 input, 3x3x16x16 filter, SAME: a typical small conv layer."""
    plan = Plan(pairs=options.pairs_or(30, 8), calls=50)
    return _healthy_conv2d("conv2d healthy, typical 8x32x32x16", *TYPICAL, plan, 1.01)


def tiny_call(options: Options) -> Result:
    """1x8x8x3 input, 3x3x3x4 filter, SAME: TensorFlow's own work is smallest here, so the
    wrapper's share is largest."""
    plan = Plan(pairs=options.pairs_or(30, 8), calls=200)
    return _healthy_conv2d("conv2d healthy, tiny 1x8x8x3", *TINY, plan, 1.03)


def _healthy_conv2d(
    question: str,
    x_shape: Sequence[int],
    k_shape: Sequence[int],
    plan: Plan,
    goal: float,
) -> Result:
    tf = prepare()
    wrapper = tf.nn.conv2d
    tf_conv2d = original(wrapper)
    if tf_conv2d is wrapper:
        return not_patched(question, f"<= {goal:.2f}x")
    seed = tf.random.normal(x_shape)
    k = tf.random.normal(k_shape)

    def make_inputs(n: int) -> list[Any]:
        return [seed + 0.0 for _ in range(n)]  # a new tensor (and buffer) per call

    subject = Side("convfix", lambda x: wrapper(x, k, 1, "SAME"))
    base = Side(
        "tensorflow",
        lambda x: tf_conv2d(x, k, 1, "SAME"),
        context=lambda: unpatched(BACKSTOP_CONV2D),
    )
    # convfix wraps nothing beneath tf.nn.conv2d, so the baseline's context changes nothing
    # the subject runs: both sides can alternate call by call. Were the generated op ever
    # wrapped, separate blocks keep the baseline clean.
    module, attribute = BACKSTOP_CONV2D
    op = getattr(sys.modules[module], attribute)
    timing = compare_alternating if original(op) is op else compare
    c = timing(subject, base, make_inputs, plan)
    fast = takes_fast_path(tf.nn.__name__, "conv2d", lambda: tf.nn.conv2d(seed, k, 1, "SAME"))
    filter_shape = "x".join(map(str, k_shape))
    note = f"{BASELINE} {filter_shape} filter; {fast_path_note(fast)}"
    return ratio_result(question, goal, c, note)


def not_patched(question: str, goal: str) -> Result:
    """The answer when convfix did not wrap the function: nothing to measure."""
    return Result(
        question, "not patched", goal, passed=False, note="convfix.patch() wrapped nothing"
    )


if __name__ == "__main__":
    sys.exit(main([typical_layer, tiny_call], __doc__ or ""))
