"""A window wholly in explicit padding: oneDNN on TF 2.16-2.19 crashes the process on it
(guard/build.py). The repair (padding policy: pad by the call's own padding, run VALID)
must give the definition's answer on every build, and the call must not crash on any."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from convfix import events, guard
from convfix.call import Binder
from convfix.guard.build import Build
from convfix.memory import Memory
from convfix.ops import V2_SPECS
from convfix.pipeline import Target, handle
from convfix.sweep import reference as ref
from convfix.testing import capture_events
from tests.integration.conftest import unpatched
from tests.subproc import run_python

pytestmark = pytest.mark.compat  # the version matrix runs these on 2.16-2.19 too

AFFECTED = Build((2, 17), True)


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, np.ndarray, np.ndarray, dict[str, Any]]:
    """conv2d (either layout) or depthwise_conv2d with explicit padding where some window
    of some dimension lies wholly in the padding (the rule's region, as swept)."""
    op = draw(st.sampled_from(["conv2d", "depthwise_conv2d"]))
    layout = "NHWC" if op == "depthwise_conv2d" else draw(st.sampled_from(["NHWC", "NCHW"]))
    sizes = [draw(st.integers(1, 4)) for _ in range(2)]
    kernel = [draw(st.integers(1, 3)) for _ in range(2)]
    strides = [draw(st.integers(1, 3)) for _ in range(2)]
    pads = [[draw(st.integers(0, 3)), draw(st.integers(0, 3))] for _ in range(2)]
    for n, k, (lo, hi) in zip(sizes, kernel, pads):
        if n + lo + hi < k:
            pads[sizes.index(n)][1] += k  # the kernel fits the padded input
    channels, out = draw(st.sampled_from([(1, 1), (2, 1), (2, 3)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = [2, *sizes, channels] if layout == "NHWC" else [2, channels, *sizes]
    x = rng.standard_normal(shape).astype(np.float32)
    f = rng.standard_normal([*kernel, channels, out]).astype(np.float32)
    spatial_pads = [[0, 0], *pads, [0, 0]] if layout == "NHWC" else [[0, 0], [0, 0], *pads]
    step = [1, *strides, 1] if layout == "NHWC" else [1, 1, *strides]
    kwargs: dict[str, Any] = {"strides": step, "padding": spatial_pads}
    if op == "conv2d":
        kwargs["data_format"] = layout
    return op, x, f, kwargs


@settings(max_examples=150, deadline=None)
@given(case=calls())
@example(  # the repaired call has a single one-channel window: oneDNN's other bug
    case=(
        "conv2d",
        np.full([2, 1, 1, 1], 0.5, np.float32),
        np.full([2, 1, 1, 1], 0.25, np.float32),
        {"strides": [1, 1, 2, 1], "padding": [[0, 0], [1, 0], [0, 2], [0, 0]]},
    )
)
def test_the_repair_gives_the_definitions_answer(
    case: tuple[str, np.ndarray, np.ndarray, dict[str, Any]],
) -> None:
    # given a call in the rule's region, through the whole pipeline as on an affected
    # build (TF 2.17, oneDNN), running on this one: the repaired call is inspected again,
    # and any hazard the repair leaves (a single one-channel window) is repaired in turn
    op, x, f, kwargs = case
    original = unpatched(getattr(tf.nn, op))
    binder = Binder(V2_SPECS[op], original)
    problems = guard.inspect(binder.bind((x, f), kwargs), AFFECTED)
    if not problems or problems[0].reason != "padding_only_window":
        event("no window wholly in the padding")
        return
    event("a window wholly in the padding")
    events.reset()  # each example's events written in full, not folded
    memory = Memory()
    target = Target(original, binder, AFFECTED, memory, lambda: None, memory.plans(op))
    with capture_events() as captured:
        y = np.asarray(handle(target, (x, f), kwargs))
    # then it answers as the definition of the call as made, and says what it did
    kind = "depthwise" if op == "depthwise_conv2d" else "conv"
    expected = ref.conv(x, f, kind=kind, **kwargs)
    assert y.shape == expected.shape
    scale = max(1.0, float(np.linalg.norm(expected)))
    assert float(np.linalg.norm(y - expected)) <= 1e-5 * scale
    actions = [e["action"] for e in captured if e["event"] == "convfix.intervention"]
    assert actions[0] == "pad_explicitly"


@pytest.mark.subprocess
def test_the_crashing_calls_run_under_convfix_on_this_build() -> None:
    # the sweep's two reproductions (SIGSEGV on TF 2.16-2.19 with oneDNN, run bare)
    code = """
import convfix.auto
import numpy as np
import tensorflow as tf
from convfix.sweep import reference as ref
x, f = tf.random.uniform([3, 2, 1, 1]), tf.random.uniform([3, 1, 2, 1])
kw = dict(strides=[1, 1, 3, 2], padding=[[0, 0], [0, 0], [0, 2], [1, 1]], data_format="NCHW")
y = tf.nn.conv2d(x, f, **kw)
assert np.allclose(y.numpy(), ref.conv(x.numpy(), f.numpy(), **kw), atol=1e-5)
x, f = tf.random.uniform([2, 5, 3, 4]), tf.random.uniform([4, 1, 4, 3])
kw = dict(strides=[1, 3, 4, 1], padding=[[0, 0], [1, 1], [1, 1], [0, 0]])
y = tf.nn.depthwise_conv2d(x, f, **kw)
assert np.allclose(y.numpy(), ref.conv(x.numpy(), f.numpy(), kind="depthwise", **kw), atol=1e-5)
print("RESULT ok")
"""
    # (oneDNN only: the crash is oneDNN's, and without it a CPU has no NCHW kernel)
    done = run_python(code, env={"TF_ENABLE_ONEDNN_OPTS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RESULT ok" in done.stdout
