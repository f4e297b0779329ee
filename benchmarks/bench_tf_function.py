"""Does convfix leave a traced graph untouched when the call is healthy?

Inside ``tf.function`` a Python wrapper runs once per trace, so its only lasting cost would be
extra ops in the graph. The op types of one function traced three ways are compared: convfix
active; inside ``convfix.override(mode="off")``; and with TensorFlow's originals swapped back
in (no convfix code at all). The test suite asserts this; here it is reported.

Run alone: ``python benchmarks/bench_tf_function.py [--json]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from _report import Options, Result, main
from _setup import BACKSTOP_CONV2D, prepare, unpatched

X_SHAPE, K_SHAPE = (8, 32, 32, 16), (3, 3, 16, 16)
QUESTION = "tf.function graph ops, on = off = unpatched"


def traced_ops(context: Callable[[], AbstractContextManager[object]]) -> list[str]:
    """Op types of a fresh tf.function traced inside ``context`` (static shapes)."""
    tf = prepare()

    def conv(x: object, k: object) -> object:
        return tf.nn.conv2d(x, k, 1, "SAME")

    # A new tf.function each time: a cached concrete function would not trace again.
    layer = tf.function(conv)

    with context():
        concrete = layer.get_concrete_function(
            tf.TensorSpec(X_SHAPE, tf.float32), tf.TensorSpec(K_SHAPE, tf.float32)
        )
    return [op.type for op in concrete.graph.get_operations()]


def tf_function_graph(options: Options) -> Result:
    """``identical`` when all three traces hold the same op types in the same order."""
    tf = prepare()
    import convfix

    active = traced_ops(nullcontext)
    off = traced_ops(lambda: convfix.override(mode="off"))
    bare = traced_ops(lambda: unpatched((tf.nn.__name__, "conv2d"), BACKSTOP_CONV2D))
    same = active == off == bare
    note = f"traced op types, all three: {' '.join(active)}"
    if not same:
        note = f"active: {active}; override off: {off}; unpatched: {bare}"
    return Result(
        QUESTION,
        measured="identical" if same else "differs",
        goal="identical",
        passed=same,
        note=note,
    )


if __name__ == "__main__":
    sys.exit(main([tf_function_graph], __doc__ or ""))
