"""What ``python -m convfix.demo`` runs: one :class:`DemoCase` per failure class.

Each case is a snippet of user code that binds ``y``; the demo runs it in two fresh
interpreters, without and with ``import convfix.auto``. A new failure class (out of memory
on a simulated device, a cuDNN failure) is one more entry in :data:`CASES`.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field

MARKER = "CONVFIX_DEMO_OUTCOME "
"""Starts the one stdout line a child reports its outcome on."""


@dataclass(frozen=True)
class DemoCase:
    """One failure class: the call, and what convfix must make of it."""

    name: str
    """The row label in the table."""
    what: str
    """One line saying what the call does wrong."""
    code: str
    """User code run after ``import tensorflow as tf``; it must bind the result to ``y``."""
    expect_with: tuple[str, str]
    """The outcome with convfix: ``("ok", dtype)`` or ``("error", exception type)``."""
    correct_shape: tuple[int, ...] | None = None
    """The shape a correct answer has; a result of another shape is shown as wrong."""
    same_as_without: bool = False
    """With convfix the result must be the very one TensorFlow gives alone."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for both children (e.g. a simulated device)."""


CASES: tuple[DemoCase, ...] = (
    DemoCase(
        "dtype mismatch",
        "float64 input, float32 filter",
        "x = tf.random.normal([1, 8, 8, 3], dtype=tf.float64)\n"
        'y = tf.nn.conv2d(x, tf.random.normal([3, 3, 3, 4]), 1, "SAME")',
        expect_with=("ok", "float64"),
        correct_shape=(1, 8, 8, 4),
    ),
    DemoCase(
        "input smaller than kernel",
        "input [1, 2, 2, 3], kernel [3, 3, 3, 4], padding VALID",
        'y = tf.nn.conv2d(tf.ones([1, 2, 2, 3]), tf.ones([3, 3, 3, 4]), 1, "VALID")',
        expect_with=("error", "ConvFixError"),
        correct_shape=(1, 0, 0, 4),
    ),
    DemoCase(
        "missing batch dimension",
        "input [10, 10, 3] for conv2d, which needs [batch, 10, 10, 3]",
        'y = tf.nn.conv2d(tf.ones([10, 10, 3]), tf.ones([3, 3, 3, 4]), 1, "SAME")',
        expect_with=("error", "ConvFixError"),
    ),
    DemoCase(
        "empty batch",
        "input [0, 10, 10, 3], kernel [3, 3, 3, 4], padding SAME",
        'y = tf.nn.conv2d(tf.ones([0, 10, 10, 3]), tf.ones([3, 3, 3, 4]), 1, "SAME")',
        expect_with=("ok", "float32"),
        correct_shape=(0, 10, 10, 4),
    ),
    DemoCase(
        "uint8 images",
        "uint8 image batch, float32 filter",
        "x = tf.zeros([2, 8, 8, 3], dtype=tf.uint8)\n"
        'y = tf.nn.conv2d(x, tf.random.normal([3, 3, 3, 4]), 1, "SAME")',
        expect_with=("ok", "float32"),
        correct_shape=(2, 8, 8, 4),
    ),
    DemoCase(
        "healthy call",
        "float32 input and filter that fit: convfix must change nothing",
        "x = tf.reshape(tf.range(192, dtype=tf.float32), [1, 8, 8, 3]) / 100\n"
        "k = tf.reshape(tf.range(108, dtype=tf.float32), [3, 3, 3, 4]) / 100\n"
        'y = tf.nn.conv2d(x, k, 1, "SAME")',
        expect_with=("ok", "float32"),
        correct_shape=(1, 8, 8, 4),
        same_as_without=True,
    ),
)

_CHILD = """\
{activate}
import hashlib
import json


def _report(**fields):
    print({marker!r} + json.dumps(fields), flush=True)


try:
    import tensorflow as tf

{code}
except Exception as error:
    lines = str(error).strip().splitlines()
    _report(kind="error", type=type(error).__name__, message=lines[0][:400] if lines else "")
else:
    digest = hashlib.sha256(y.numpy().tobytes()).hexdigest()[:16]
    _report(kind="ok", shape=list(y.shape), dtype=y.dtype.name, digest=digest)
"""


def child_code(case: DemoCase, with_convfix: bool) -> str:
    """The program one child runs: the case's code, reporting one outcome line."""
    return _CHILD.format(
        activate="import convfix.auto" if with_convfix else "",
        marker=MARKER,
        code=textwrap.indent(case.code, "    "),
    )


def config_text(events_path: str) -> str:
    """The demo's own convfix.toml: the built-in defaults, events to ``events_path``."""
    # Braces would be read as {pid}/{task} placeholders; doubled, they are literal.
    literal = events_path.replace("{", "{{").replace("}", "}}")
    return (
        "# Written by `python -m convfix.demo`: built-in defaults, events to a file.\n"
        'mode = "fix"\n\n[events]\n'
        f"path = {json.dumps(literal)}\n"
        'format = "json"\n'
    )
