"""A window wholly in explicit padding: oneDNN on TF 2.16-2.19 crashes the process on it
(guard/build.py). The repair (padding policy: pad by the call's own padding, run VALID)
must give the definition's answer on every build, and the call must not crash on any."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from convfix import guard
from convfix.call import Binder
from convfix.config import PaddingPolicyConfig
from convfix.guard.build import Build
from convfix.ops import V2_SPECS
from convfix.policies.padding import PaddingPolicy
from convfix.sweep import reference as ref
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
def test_the_repair_gives_the_definitions_answer(
    case: tuple[str, np.ndarray, np.ndarray, dict[str, Any]],
) -> None:
    op, x, f, kwargs = case
    original = unpatched(getattr(__import__("tensorflow").nn, op))
    call = Binder(V2_SPECS[op], original).bind((x, f), kwargs)
    problems = guard.inspect(call, AFFECTED)
    if not problems or problems[0].reason != "padding_only_window":
        event("no window wholly in the padding")
        return
    event("a window wholly in the padding")
    repaired = PaddingPolicy(PaddingPolicyConfig()).apply(call, problems[0])
    assert repaired.action == "pad_explicitly"
    y = np.asarray(Binder(V2_SPECS[op], original).dispatch(original, repaired.call))
    kind = "depthwise" if op == "depthwise_conv2d" else "conv"
    expected = ref.conv(x, f, kind=kind, **kwargs)
    assert y.shape == expected.shape
    scale = max(1.0, float(np.linalg.norm(expected)))
    assert float(np.linalg.norm(y - expected)) <= 1e-5 * scale


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
