"""What ``python -m convfix.cli.demo`` runs, and how one side of a case runs in its own process.

Each case is a snippet of user code that binds ``y``; the demo runs it in two fresh
interpreters, without and with ``import convfix.auto``. A new failure class (out of memory
on a simulated device, a cuDNN failure) is one more entry in :data:`CASES`. What a case
should end as depends on the mode its policy runs in (:mod:`convfix.cli.demo.expect`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convfix.config import Config

Shape = tuple[int, ...]
Adapt = Callable[["Config", "str | None", "Shape | None"], "tuple[str | None, Shape | None]"]

_MARKER = "CONVFIX_DEMO_OUTCOME "  # starts the one stdout line a child reports on
_TIMEOUT = 180.0  # seconds per child; importing TensorFlow alone takes a few
_CRASHES = {"SIGABRT": "process aborted", "SIGSEGV": "process crashed"}


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
    """The outcome with convfix in fix mode: ``("ok", dtype)`` or ``("error", type)``."""
    owner: str | None = None
    """The policy (or "guard") whose mode decides the call; None: nothing to decide."""
    in_fix: str = "repaired"
    """What fix mode does: "repaired" (``expect_with``), or "refused" where no repair can
    be right (an ambiguous call)."""
    in_warn: str = "tensorflow"
    """What warn mode does: "tensorflow" (TensorFlow's own outcome: it answers safely),
    "refused" (it would crash or answer wrong, so convfix refuses even when only warning),
    or "repaired" (convfix's answer is exact, so it is given in warn mode too)."""
    adapt: Adapt | None = None
    """How the policy's settings change the repaired result's (dtype, shape)."""
    correct_shape: tuple[int, ...] | None = None
    """The shape a faithful answer to the call has: other shapes are shown as wrong."""
    correct_values: tuple[float, ...] | None = None
    """The values a faithful answer has (small results): others are shown as wrong."""
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
        expect_with=("ok", "float32"),  # the dtype policy's default: Keras' compute dtype
        correct_shape=(1, 8, 8, 4),
        owner="dtype",  # TensorFlow raises a clear error of its own: warn leaves it
        adapt=lambda config, _, shape: (cast_to(config, "float64", "float32", "float64"), shape),
    ),
    DemoCase(
        "input smaller than kernel",
        "input [1, 2, 2, 3], kernel [3, 3, 3, 4], padding VALID",
        'y = tf.nn.conv2d(tf.ones([1, 2, 2, 3]), tf.ones([3, 3, 3, 4]), 1, "VALID")',
        expect_with=("ok", "float32"),
        correct_shape=(1, 0, 0, 4),
        owner="padding",
        in_warn="refused",  # a wrongly shaped answer
        adapt=lambda config, dtype, _: (dtype, _padded_shape(config)),
    ),
    DemoCase(
        "missing batch dimension",
        "input [10, 10, 3] for conv2d, which needs [batch, 10, 10, 3]",
        'y = tf.nn.conv2d(tf.ones([10, 10, 3]), tf.ones([3, 3, 3, 4]), 1, "SAME")',
        expect_with=("ok", "float32"),
        correct_shape=(10, 10, 4),
        owner="batch_dim",
        in_warn="refused",  # oneDNN aborts the process
    ),
    DemoCase(
        "empty batch",
        "input [0, 10, 10, 3], kernel [3, 3, 3, 4], padding SAME",
        'y = tf.nn.conv2d(tf.ones([0, 10, 10, 3]), tf.ones([3, 3, 3, 4]), 1, "SAME")',
        expect_with=("ok", "float32"),
        correct_shape=(0, 10, 10, 4),
        owner="guard",
        in_warn="repaired",  # the empty answer is exact: given in warn mode too
    ),
    DemoCase(
        "uint8 images",
        "uint8 image batch, float32 filter",
        "x = tf.zeros([2, 8, 8, 3], dtype=tf.uint8)\n"
        'y = tf.nn.conv2d(x, tf.random.normal([3, 3, 3, 4]), 1, "SAME")',
        expect_with=("ok", "float32"),
        correct_shape=(2, 8, 8, 4),
        owner="dtype",
        adapt=lambda config, _, shape: (cast_to(config, "uint8", "float32", "float32"), shape),
    ),
    DemoCase(
        "one channel, strided window",
        "input [2, 2, 1, 1], kernel [1, 2, 1, 1], strides [1, 1, 2, 1], SAME: oneDNN leaves "
        "rows of the answer unwritten",
        "x = tf.reshape(tf.range(1.0, 5.0), [2, 2, 1, 1])\n"
        "k = tf.reshape(tf.constant([10.0, 1.0]), [1, 2, 1, 1])\n"
        'y = tf.nn.conv2d(x, k, [1, 1, 2, 1], "SAME")',
        expect_with=("ok", "float32"),
        correct_shape=(2, 2, 1, 1),
        correct_values=(10.0, 20.0, 30.0, 40.0),
        owner="padding",
        in_warn="refused",  # wrong values
    ),
    DemoCase(
        "batch or channel missing?",
        "input [32, 28, 28], filter [3, 3, 1, 28]: one image, or 32 without channels?",
        'y = tf.nn.conv2d(tf.ones([32, 28, 28]), tf.ones([3, 3, 1, 28]), 1, "SAME")',
        expect_with=("error", "ConvFixError"),
        owner="batch_dim",
        in_fix="refused",  # both readings are valid: never guess
        in_warn="refused",
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


def cast_to(config: Config, input: str, filter: str, wider: str) -> str | None:
    """The dtype a dtype repair of (input, filter) computes in under ``config``; None where
    the demo cannot tell (an integer input cast "to the input")."""
    settings = config.policies.dtype
    if settings.output == "input":
        return input if input.startswith(("float", "bfloat")) else None
    # "policy" is the Keras compute dtype; the demo's children never import Keras: float32.
    targets = {"promote": wider, "input": input, "filter": filter, "policy": "float32"}
    chosen = targets.get(settings.target, settings.target)
    return chosen if chosen.startswith(("float", "bfloat")) else None


def _padded_shape(config: Config) -> Shape:
    # Input [1, 2, 2, 3], kernel 3x3, VALID: "same" keeps the 2x2 size, "pad" pads it to the
    # kernel's, leaving one VALID window.
    return (1, 2, 2, 4) if config.policies.padding.strategy == "same" else (1, 1, 1, 4)


@dataclass(frozen=True)
class Outcome:
    """How one child ended: ``ok`` (a result), ``error`` (an exception) or ``crash``."""

    kind: str
    detail: str  # dtype, exception type, or how the process died
    shape: tuple[int, ...] = ()
    message: str = ""
    digest: str = ""  # of the result's bytes: "same result" means the same values
    pid: int = field(default=0, compare=False)
    values: tuple[float, ...] = field(default=(), compare=False)  # small results only


_CHILD = """\
{activate}
import hashlib
import json
import os


def _report(**fields):
    print({marker!r} + json.dumps({{"pid": os.getpid(), **fields}}), flush=True)


try:
    import tensorflow as tf

{code}
except Exception as error:
    lines = str(error).strip().splitlines()
    _report(kind="error", type=type(error).__name__, message=lines[0][:400] if lines else "")
else:
    digest = hashlib.sha256(y.numpy().tobytes()).hexdigest()[:16]
    small = [float(v) for v in y.numpy().ravel()] if y.shape.num_elements() <= 16 else []
    _report(kind="ok", shape=list(y.shape), dtype=y.dtype.name, digest=digest, values=small)
"""


def child_code(case: DemoCase, with_convfix: bool) -> str:
    """The program one child runs: the case's code, reporting one outcome line."""
    return _CHILD.format(
        activate="import convfix.auto" if with_convfix else "",
        marker=_MARKER,
        code=textwrap.indent(case.code, "    "),
    )


def run_child(case: DemoCase, with_convfix: bool, env: Mapping[str, str]) -> Outcome:
    """Run one side of ``case`` in a fresh interpreter and read its outcome line."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", child_code(case, with_convfix)],
            env={**env, **case.env},
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return Outcome("crash", f"timed out after {_TIMEOUT:.0f} s")
    if done.returncode < 0:  # killed by a signal: subprocess reports minus its number
        name = signal.Signals(-done.returncode).name
        why = next((ln for ln in done.stderr.splitlines() if "Check failed" in ln), "")
        what = f"{_CRASHES.get(name, 'process killed')} ({name}, exit {128 - done.returncode})"
        return Outcome("crash", what, message=why[why.find("Check failed") :].strip())
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_MARKER):
            got = json.loads(line[len(_MARKER) :])
            if got["kind"] == "ok":
                return Outcome(
                    "ok",
                    got["dtype"],
                    tuple(got["shape"]),
                    digest=got["digest"],
                    pid=got["pid"],
                    values=tuple(got.get("values", ())),
                )
            return Outcome("error", got["type"], message=got["message"], pid=got["pid"])
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return Outcome("crash", f"exited with code {done.returncode}", message=last)


def config_text(events_path: str) -> str:
    """The demo's own convfix.toml: the built-in defaults, events to ``events_path``."""
    # Braces would be read as {pid}/{task} placeholders; doubled, they are literal.
    literal = events_path.replace("{", "{{").replace("}", "}}")
    return (
        "# Written by `python -m convfix.cli.demo`: built-in defaults, events to a file.\n"
        'mode = "fix"\n\n[events]\n'
        f"path = {json.dumps(literal)}\n"
        'format = "json"\n'
    )
