"""What does convfix's dtype repair cost against the same repair done by hand?

A float64 input with a float32 filter, which TensorFlow refuses, through the patched
``tf.nn.conv2d`` (convfix casts the input to the compute dtype, float32 under Keras'
default policy, and emits an intervention event) vs TensorFlow's own conv2d called with
``tf.cast(x, tf.float32)``, no convfix code beneath.
Events go to the temp file ``_setup`` names in CONVFIX_EVENTS_PATH, so writing them is part
of the cost measured, as it would be for a user.

Run alone: ``python benchmarks/bench_dtype_repair.py [--quick] [--pairs N] [--json]``.
"""

from __future__ import annotations

import sys
from typing import Any

from _report import Options, Result, main, ratio_result
from _setup import BACKSTOP_CONV2D, original, prepare, unpatched
from _timing import Plan, Side, compare

X_SHAPE, K_SHAPE = (8, 32, 32, 16), (3, 3, 16, 16)
QUESTION = "dtype repair f64 input/f32 filter, 8x32x32x16"
NOTE = "base: TF's conv2d_v2(tf.cast(x, tf.float32), k, ...) by hand, no convfix beneath"
GOAL = 1.10


def dtype_repair(options: Options) -> Result:
    """convfix's cast-the-input repair vs the hand-written cast."""
    tf = prepare()
    wrapper = tf.nn.conv2d
    tf_conv2d = original(wrapper)
    seed = tf.random.normal(X_SHAPE, dtype=tf.float64)
    k = tf.random.normal(K_SHAPE)  # float32: the mismatch convfix repairs (target "policy")

    def make_inputs(n: int) -> list[Any]:
        return [seed + 0.0 for _ in range(n)]

    def by_hand(x: Any) -> Any:
        return tf_conv2d(tf.cast(x, tf.float32), k, 1, "SAME")

    plan = Plan(pairs=options.pairs_or(30, 8), calls=30)
    subject = Side("convfix", lambda x: wrapper(x, k, 1, "SAME"))
    base = Side("by hand", by_hand, context=lambda: unpatched(BACKSTOP_CONV2D))
    _check_repaired(wrapper(seed, k, 1, "SAME"), tf.float32)
    c = compare(subject, base, make_inputs, plan)
    return ratio_result(QUESTION, GOAL, c, NOTE)


def _check_repaired(result: Any, dtype: Any) -> None:
    # Timing a call that raised, or one that took some other route, would answer nothing.
    if result.dtype != dtype:
        raise RuntimeError(f"expected convfix to compute in {dtype}, got {result.dtype}")


if __name__ == "__main__":
    sys.exit(main([dtype_repair], __doc__ or ""))
