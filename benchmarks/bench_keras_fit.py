"""What does convfix cost on a Keras model.fit step?

Inside model.fit Keras traces the train step once (tf.function): convfix runs at trace
time only, so a step should cost what it costs without convfix. Two identical models (same
weights): one traced with convfix active, one traced with convfix off; their steps are
timed alternately (``train_on_batch``, the unit of work model.fit repeats).

Run alone: ``python benchmarks/bench_keras_fit.py [--quick] [--pairs N] [--json]``.
"""

from __future__ import annotations

import sys
from typing import Any

from _report import Options, Result, main, ratio_result
from _setup import prepare
from _timing import Plan, Side, compare

QUESTION = "Keras model.fit step, 2 conv layers, 8x32x32x3"
GOAL = 1.01


def keras_fit(options: Options) -> Result:
    """train_on_batch with a model traced under convfix vs one traced without it."""
    tf = prepare()
    import keras
    import numpy as np

    import convfix

    def build() -> Any:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((32, 32, 3)),
                keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer="sgd", loss="mse")
        return model

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32, 32, 3)).astype("float32")
    y = rng.standard_normal((8, 1)).astype("float32")
    with_convfix = build()
    with_convfix.train_on_batch(x, y)  # traced with convfix active
    without = build()
    with convfix.override(mode="off"):
        without.train_on_batch(x, y)  # traced with convfix passing everything through

    def make_inputs(n: int) -> list[Any]:
        return [None] * n

    plan = Plan(pairs=options.pairs_or(30, 8), calls=20)
    subject = Side("convfix", lambda _: with_convfix.train_on_batch(x, y))
    base = Side("tensorflow", lambda _: without.train_on_batch(x, y))
    c = compare(subject, base, make_inputs, plan)
    del tf
    return ratio_result(QUESTION, GOAL, c, "both models traced once; steps timed alternately")


if __name__ == "__main__":
    sys.exit(main([keras_fit], __doc__ or ""))
