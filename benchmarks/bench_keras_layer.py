"""What does convfix cost on a healthy eager call of a Keras Conv2D layer?

keras.layers.Conv2D reaches TensorFlow through ``tf.nn.convolution`` (looked up on the
``tf.nn`` module at every call), which convfix wraps, and then ``gen_nn_ops.conv2d``. The
baseline swaps them back to TensorFlow's originals for its blocks (``convfix.override
(mode="off")`` would still run the wrappers' pass-through, so it is not a clean baseline).

Run alone: ``python benchmarks/bench_keras_layer.py [--quick] [--pairs N] [--json]``.
"""

from __future__ import annotations

import sys
from typing import Any

from _report import Options, Result, main, ratio_result
from _setup import BACKSTOP_CONV2D, fast_path_note, prepare, takes_fast_path, unpatched
from _timing import Plan, Side, compare

X_SHAPE = (8, 32, 32, 16)
QUESTION = "Keras Conv2D healthy, 8x32x32x16"
BASELINE = (
    "base: tf.nn.convolution and gen_nn_ops.conv2d swapped back to TF's originals "
    '(override(mode="off") would still run the wrappers);'
)
GOAL = 1.01


def keras_layer(options: Options) -> Result:
    """Eager ``layer(x)`` with convfix active vs with TensorFlow's originals swapped in."""
    tf = prepare()
    import keras

    plan = Plan(pairs=options.pairs_or(30, 8), calls=50)
    seed = tf.random.normal(X_SHAPE)
    layer = keras.layers.Conv2D(16, 3, padding="same")
    layer(seed)  # build the kernel outside the clock

    def make_inputs(n: int) -> list[Any]:
        return [seed + 0.0 for _ in range(n)]

    entry = (tf.nn.__name__, "convolution")
    subject = Side("convfix", layer)
    base = Side("tensorflow", layer, context=lambda: unpatched(entry, BACKSTOP_CONV2D))
    c = compare(subject, base, make_inputs, plan)
    fast = takes_fast_path(*entry, lambda: layer(seed))
    return ratio_result(QUESTION, GOAL, c, f"{BASELINE} {fast_path_note(fast)}")


if __name__ == "__main__":
    sys.exit(main([keras_layer], __doc__ or ""))
