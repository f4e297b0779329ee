"""Channels-first on a CPU without channels-first kernels (the data_format policy).

TensorFlow without oneDNN has only channels-last CPU kernels: every channels-first call of
the ten ops raises there. convfix runs it channels-last between two transposes. This
machine's build has oneDNN on (its own kernels take both layouts), so the repair itself is
checked here on a build described as oneDNN off (the guard's rules take the build as an
argument), against the float64 reference and TensorFlow's own channels-first answer; the
real oneDNN-off build runs in a fresh interpreter with TF_ENABLE_ONEDNN_OPTS=0.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import event, given, settings
from hypothesis import strategies as st

from convfix import guard
from convfix.call import Binder, Call, Repair
from convfix.config import DataFormatPolicyConfig
from convfix.guard import placement
from convfix.guard.build import Build
from convfix.integrations import express
from convfix.integrations import tensorflow as tf_integration
from convfix.integrations.entry import Capabilities, FilterShapes, make_fast_check
from convfix.memory import Memory
from convfix.ops import V2_SPECS
from convfix.policies.data_format import DataFormatPolicy
from convfix.sweep import reference as ref
from convfix.testing import capture_events
from tests.integration import test_fast_check_is_conservative as conservative
from tests.integration.conftest import unpatched
from tests.subproc import run_python

WITHOUT = Build((2, 21), False)  # no channels-first CPU kernels
WITH_GPU = Build((2, 21), False, gpu=True)
ONEDNN = Build((2, 21), True)
FIRST = {1: "NCW", 2: "NCHW", 3: "NCDHW"}
OPS = tuple(V2_SPECS)  # the ten ops


Case = tuple[str, np.ndarray, np.ndarray, dict[str, Any], np.ndarray | None]


@st.composite
def channels_first_calls(draw: st.DrawFn) -> Case:
    """Any of the ten ops, channels-first: sizes 1-5, kernels 1-3, strides 1-2 (an int, one
    per spatial dimension or one per dimension), dilations 1-2 where the op takes them with
    those strides, SAME, VALID or (conv2d) explicit padding; a transpose's output_shape as
    the forward convolution gives it."""
    op = draw(st.sampled_from(OPS))
    spec = V2_SPECS[op]
    spatial = spec.spatial or draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 3)) for _ in range(spatial)]
    step = [draw(st.integers(1, 2)) for _ in range(spatial)]
    transpose = spec.kind == "transpose"
    dilate = 1 if transpose or max(step) > 1 else draw(st.integers(1, 2))
    spans = [(k - 1) * dilate + 1 for k in kernel]
    sizes = [draw(st.integers(s, s + 3)) for s in spans]  # every kernel fits
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    out_channels = draw(st.integers(1, 3))
    padding: Any = draw(st.sampled_from(["SAME", "VALID"]))
    if op == "conv2d" and draw(st.booleans()):
        padding = [[0, 0], [0, 0], *([draw(st.integers(0, 2))] * 2 for _ in range(spatial))]
    form = draw(st.sampled_from(["int", "spatial", "full"]))
    if form == "int" or (op == "convolution" and form == "full"):
        step = [step[0]] * spatial
    strides: Any = step[0] if form == "int" else step if form == "spatial" else [1, 1, *step]
    if spec.kind in ("depthwise", "separable"):
        strides = [1, 1, *step]  # the only form they take
    if op == "conv3d":
        strides = [1, 1, *step]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kwargs: dict[str, Any] = {"padding": padding, "data_format": FIRST[spatial]}
    kwargs[spec.strides_param or "strides"] = strides
    if dilate > 1:
        kwargs["dilations"] = [1, 1, *[dilate] * spatial] if op == "conv3d" else [dilate] * spatial
    pointwise = None
    if transpose:
        x = rng.standard_normal([batch, channels, *sizes])
        f = rng.standard_normal([*kernel, out_channels, channels])
        out = [
            n * s if padding == "SAME" else (n - 1) * s + k for n, s, k in zip(sizes, step, kernel)
        ]
        kwargs["output_shape"] = [batch, out_channels, *out]
    else:
        x = rng.standard_normal([batch, channels, *sizes])
        if spec.kind == "conv":
            f = rng.standard_normal([*kernel, channels, out_channels])
        else:
            f = rng.standard_normal([*kernel, channels, draw(st.integers(1, 2))])
            if spec.kind == "separable":
                pointwise = rng.standard_normal([1, 1, f.shape[-2] * f.shape[-1], out_channels])
    return op, x.astype(np.float32), f.astype(np.float32), kwargs, pointwise


def _bind(op: str, x: Any, f: Any, kwargs: dict[str, Any], pointwise: Any = None) -> Call:
    spec = V2_SPECS[op]
    given_kwargs = dict(kwargs)
    if pointwise is not None:
        given_kwargs["pointwise_filter"] = pointwise.astype(np.float32)
    original = unpatched(getattr(tf.nn, op))
    return Binder(spec, original).bind((tf.constant(x), tf.constant(f)), given_kwargs)


def _repair(call: Call) -> Repair:
    problems = guard.inspect(call, WITHOUT)
    assert [p.reason for p in problems] == ["channels_first_on_cpu"]
    return DataFormatPolicy(DataFormatPolicyConfig()).apply(call, problems[0])


def _run(call: Call, repair: Repair) -> Any:
    original = unpatched(getattr(tf.nn, call.spec.name))
    result = Binder(call.spec, original).dispatch(original, repair.call)
    assert repair.finish is not None
    return repair.finish(result)


def _reference(case: Case) -> np.ndarray:
    op, x, f, kwargs, pointwise = case
    spec = V2_SPECS[op]
    options = {k: v for k, v in kwargs.items() if k != "output_shape"}
    options["strides"] = options.pop(spec.strides_param or "strides")
    if spec.kind == "transpose":
        return ref.conv_transpose(x, f, kwargs["output_shape"], **options)
    return ref.conv(x, f, kind=spec.kind, pointwise=pointwise, **options)


@settings(max_examples=150, deadline=None)
@given(case=channels_first_calls())
def test_the_repair_gives_the_references_answer_and_tensorflows_own_bit_for_bit(
    case: Case,
) -> None:
    # given a channels-first call of any op, on a build without channels-first CPU kernels
    op, x, f, kwargs, pointwise = case
    call = _bind(op, x, f, kwargs, pointwise)
    # when the guard finds it and the data_format policy repairs it
    repair = _repair(call)
    assert repair.action == "transpose_to_channels_last"
    here = tf_integration.caps.build if tf_integration.caps is not None else WITHOUT
    if guard.inspect(repair.call, here) or guard.inspect(call, here):
        # this machine's kernels (oneDNN's) answer this geometry wrongly in either layout:
        # the pipeline repairs that next (the padding policy's tests); not this one's
        event("a geometry this build's own kernels get wrong")
        return
    y = _run(call, repair)
    # then it is the definition's answer, in the caller's layout...
    expected = _reference(case)
    assert y.shape == expected.shape
    scale = max(1.0, float(np.linalg.norm(expected)))
    assert float(np.linalg.norm(np.asarray(y, np.float64) - expected)) <= 1e-5 * scale
    # ...and bit for bit what oneDNN's channels-first kernels answer on this build
    original = unpatched(getattr(tf.nn, op))
    native = Binder(call.spec, original).dispatch(original, call)
    assert np.array_equal(np.asarray(y), np.asarray(native))


def test_a_tensor_output_shape_and_full_rank_arguments_move_with_the_input() -> None:
    # given a conv2d_transpose with every layout-bound argument in NCHW form
    x = np.random.default_rng(1).standard_normal([2, 3, 4, 5]).astype(np.float32)
    f = np.random.default_rng(2).standard_normal([3, 2, 4, 3]).astype(np.float32)
    kwargs = {
        "output_shape": tf.constant([2, 4, 8, 5]),
        "strides": [1, 1, 2, 1],
        "padding": "SAME",
        "data_format": "NCHW",
    }
    call = _bind("conv2d_transpose", x, f, kwargs)
    # when it is repaired, then it answers as the definition does
    y = _run(call, _repair(call))
    expected = ref.conv_transpose(x, f, [2, 4, 8, 5], strides=[1, 1, 2, 1], data_format="NCHW")
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


# -- which calls --------------------------------------------------------------------------


def _conv2d(placed: str | None = None, data_format: str = "NCHW") -> Call:
    call = _bind("conv2d", np.ones([1, 3, 5, 5]), np.ones([3, 3, 3, 2]),
                 {"strides": 1, "padding": "SAME", "data_format": data_format})  # fmt: skip
    return Call(call.spec, call.arguments, call.input_name, call.filter_name, placement=placed)


@pytest.mark.parametrize(
    ("build", "placed", "found"),
    [
        (WITHOUT, None, True),  # no GPU: every call runs on the CPU
        (WITHOUT, "gpu", True),  # a GPU scope with no GPU: placed on the CPU anyway
        (WITHOUT, "cpu", True),
        (WITHOUT, "xla", False),  # XLA's kernels take both layouts
        (WITH_GPU, None, False),  # TensorFlow places it on the GPU
        (WITH_GPU, "gpu", False),
        (WITH_GPU, "cpu", True),  # a CPU scope on a GPU machine
        (ONEDNN, None, False),  # oneDNN's kernels take both layouts
        (ONEDNN, "cpu", False),
    ],
)
def test_the_guard_finds_a_channels_first_call_only_where_it_runs_on_cpu_kernels_without_it(
    build: Build, placed: str | None, found: bool
) -> None:
    # given a channels-first conv2d placed as given; when the guard inspects it on the build
    reasons = [p.reason for p in guard.inspect(_conv2d(placed), build)]
    # then it finds the missing kernel exactly where TensorFlow would have none
    assert reasons == (["channels_first_on_cpu"] if found else [])


def test_a_channels_last_call_is_never_the_data_format_policys() -> None:
    assert guard.inspect(_conv2d(None, "NHWC"), WITHOUT) == []


def test_placement_reads_the_device_scope_and_xla_at_trace_time() -> None:
    # given calls made under no scope, a CPU scope, and inside an XLA-compiled function
    seen: dict[str, str | None] = {"none": placement.where()}
    with tf.device("/CPU:0"):
        seen["cpu"] = placement.where()

    @tf.function
    def traced_on_cpu() -> tf.Tensor:
        with tf.device("/CPU:0"):
            seen["traced cpu"] = placement.where()
        return tf.constant(0)

    @tf.function(jit_compile=True)
    def compiled(v: tf.Tensor) -> tf.Tensor:
        seen["xla"] = placement.where()
        return v + 1

    traced_on_cpu()
    compiled(tf.constant(1))
    # then each is read as it is
    assert seen == {"none": None, "cpu": "cpu", "traced cpu": "cpu", "xla": "xla"}


def test_only_channels_first_calls_on_a_build_without_the_kernels_read_the_placement() -> None:
    assert placement.needed(_conv2d(), WITHOUT)
    assert not placement.needed(_conv2d(), ONEDNN)
    assert not placement.needed(_conv2d(None, "NHWC"), WITHOUT)


# -- the hot path ---------------------------------------------------------------------------


def _caps(build: Build) -> Capabilities:
    real = tf_integration.caps
    assert real is not None
    return Capabilities(
        real.eager, real.symbolic, set(real.filter_types), build, real.direct_filter_types
    )


K = tf.ones([3, 3, 3, 2])


@pytest.mark.parametrize("op", ["conv2d", "conv3d_transpose", "depthwise_conv2d", "conv1d"])
@pytest.mark.parametrize(
    ("build", "eager_may", "traced_may"),
    [(WITHOUT, False, False), (WITH_GPU, True, False), (ONEDNN, True, True)],
    ids=["no oneDNN", "no oneDNN, a GPU", "oneDNN"],
)
def test_the_fast_check_sends_a_channels_first_call_on_only_where_it_may_run_without_kernels(
    op: str, build: Build, eager_may: bool, traced_may: bool
) -> None:
    # given a SAME call in both layouts, eager and traced
    spec = V2_SPECS[op]
    spatial = spec.spatial or 2
    f = {
        "transpose": tf.ones([*[1] * spatial, 2, 3]),
        "depthwise": tf.ones([*[1] * spatial, 3, 1]),
    }.get(spec.kind, tf.ones([*[1] * spatial, 3, 2]))
    original = unpatched(getattr(tf.nn, op))
    caps = _caps(build)
    fast = make_fast_check(spec, original, caps, FilterShapes(caps), Memory())
    seen: dict[tuple[str, bool], bool] = {}

    def look(first: bool, x: tf.Tensor, how: str) -> None:
        kwargs: dict[str, Any] = {"padding": "SAME", "data_format": FIRST[spatial]}
        kwargs[spec.strides_param or "strides"] = [1] * (spatial + 2)
        if spec.kind == "transpose":
            kwargs["output_shape"] = [1, 2, *[4] * spatial]
        if not first:
            kwargs["data_format"] = {1: "NWC", 2: "NHWC", 3: "NDHWC"}[spatial]
            if spec.kind == "transpose":
                kwargs["output_shape"] = [1, *[4] * spatial, 2]
            x = tf.transpose(x, [0, *range(2, spatial + 2), 1])
        seen[how, first] = fast((x, f), kwargs)

    @tf.function
    def trace(v: tf.Tensor) -> tf.Tensor:
        look(True, v, "traced")
        look(False, v, "traced")
        return v

    x = tf.ones([1, 3, *[4] * spatial])
    look(True, x, "eager")
    look(False, x, "eager")
    trace(x)
    # then a channels-first call is cleared only where its channels-last twin is and no
    # CPU without channels-first kernels can run it unnoticed (eagerly with a GPU visible,
    # TensorFlow's own error reaches recovery)
    assert seen["eager", True] is (seen["eager", False] and eager_may)
    assert seen["traced", True] is (seen["traced", False] and traced_may)
    assert seen["eager", False]  # the twin is cleared: the test is not vacuous


@pytest.mark.parametrize("build", [WITHOUT, WITH_GPU, ONEDNN], ids=str)
def test_the_quick_check_clears_channels_last_and_not_channels_first_without_kernels(
    build: Build,
) -> None:
    # given the express lane's check for conv2d on the build
    quick = express.make_quick_check(V2_SPECS["conv2d"], _caps(build), Memory())
    assert quick is not None
    x, reads = tf.ones([1, 5, 5, 3]), express.reads_format(_caps(build))
    # when it looks at a channels-last and a channels-first call, the format passed only
    # where the lane reads it, then it clears channels-last always ...
    assert quick(x, K, "SAME", 1, *(["NHWC"] if reads else []))
    assert quick(x, K, "SAME", 1, *([None] if reads else []))
    # ... and channels-first only where no CPU without channels-first kernels runs it
    assert reads is (build is WITHOUT)
    if reads:
        assert not quick(tf.ones([1, 3, 5, 5]), K, "SAME", 1, "NCHW")


@settings(max_examples=1500, deadline=None)
@given(case=conservative.cases())
def test_whatever_either_check_clears_without_the_kernels_is_no_channels_first_call(
    case: conservative.Case,
) -> None:
    # given any call of any op (the fast-check property's calls: every layout, argument
    # form and shape), eager, on a build without channels-first CPU kernels
    args, kwargs = case.arguments()
    call = conservative._bind(case, args, kwargs)
    spec = V2_SPECS[case.op]
    caps = _caps(WITHOUT)
    fast = make_fast_check(spec, case.function, caps, FilterShapes(caps), Memory())
    quick = express.make_quick_check(spec, caps, Memory())
    try:
        cleared = fast(args, kwargs)
    except Exception:
        cleared = False
    # (the lane passes the data_format where it reads it)
    fmt = [call.data_format] if express.reads_format(caps) else []
    if quick is not None and quick(call.input, call.filter, call.padding, call.strides, *fmt):
        cleared = True
    event(f"cleared: {cleared}")
    # when either clears it, then the guard finds no channels-first call TensorFlow's CPU
    # kernels would refuse (a rank-short input is batch_dim's first: it is repaired after)
    if cleared:
        reasons = [p.reason for p in guard.inspect(call, WITHOUT)]
        assert "channels_first_on_cpu" not in reasons


def test_on_this_build_a_channels_first_call_is_left_to_tensorflow_bit_for_bit() -> None:
    # given this machine's build (oneDNN on: channels-first CPU kernels exist)
    build = tf_integration.caps.build if tf_integration.caps is not None else None
    if build is None or not build.onednn:
        pytest.skip("this build has oneDNN off: the subprocess test covers it")
    x = tf.random.normal([2, 3, 6, 6], seed=3)
    k = tf.random.normal([3, 3, 3, 4], seed=4)
    # when the patched conv2d runs it, eager and traced
    with capture_events() as events:
        y = tf.nn.conv2d(x, k, 1, "SAME", data_format="NCHW")
        traced = tf.function(lambda v: tf.nn.conv2d(v, k, 1, "SAME", data_format="NCHW"))(x)
    # then TensorFlow's own answer comes back, untouched, and nothing is logged
    plain = unpatched(tf.nn.conv2d)(x, k, 1, "SAME", data_format="NCHW")
    assert np.array_equal(y, plain) and np.array_equal(traced, plain)
    assert events == []


# -- the real build without oneDNN ---------------------------------------------------------

CHILD = """
import json, sys
import convfix.auto
import numpy as np
import tensorflow as tf
import keras
from tensorflow.python.util import _pywrap_util_port
from convfix.sweep import reference as ref
from convfix import events as convfix_events
from convfix.testing import capture_events

out = {"onednn": bool(_pywrap_util_port.IsMklEnabled())}
rng = np.random.default_rng(0)
def t(shape):
    return tf.constant(rng.standard_normal(shape).astype(np.float32))

def close(y, expected):
    y = np.asarray(y, np.float64)
    return y.shape == expected.shape and bool(
        np.linalg.norm(y - expected) <= 1e-5 * max(1.0, np.linalg.norm(expected)))

x4, x3, x5 = t([2, 3, 5, 5]), t([2, 3, 5]), t([2, 3, 4, 4, 4])
CALLS = {
    "conv1d": (tf.nn.conv1d, x3, t([3, 3, 4]), dict(stride=1, padding="SAME", data_format="NCW"),
               lambda f: ref.conv(x3, f, padding="SAME", data_format="NCW")),
    "conv2d": (tf.nn.conv2d, x4, t([3, 3, 3, 4]),
               dict(strides=[1, 1, 2, 1], padding="VALID", data_format="NCHW"),
               lambda f: ref.conv(x4, f, strides=[1, 1, 2, 1], data_format="NCHW")),
    "convolution": (tf.nn.convolution, x4, t([3, 3, 3, 4]),
                    dict(padding="SAME", data_format="NCHW", dilations=2),
                    lambda f: ref.conv(x4, f, padding="SAME", dilations=2, data_format="NCHW")),
    "conv3d": (tf.nn.conv3d, x5, t([2, 2, 2, 3, 4]),
               dict(strides=[1] * 5, padding="SAME", data_format="NCDHW"),
               lambda f: ref.conv(x5, f, padding="SAME", data_format="NCDHW")),
    "depthwise_conv2d": (tf.nn.depthwise_conv2d, x4, t([3, 3, 3, 2]),
                         dict(strides=[1] * 4, padding="SAME", data_format="NCHW"),
                         lambda f: ref.conv(x4, f, padding="SAME", data_format="NCHW",
                                            kind="depthwise")),
    "conv1d_transpose": (tf.nn.conv1d_transpose, x3, t([3, 4, 3]),
                         dict(output_shape=[2, 4, 10], strides=2, padding="SAME",
                              data_format="NCW"),
                         lambda f: ref.conv_transpose(x3, f, [2, 4, 10], strides=2,
                                                      data_format="NCW")),
    "conv2d_transpose": (tf.nn.conv2d_transpose, x4, t([3, 3, 4, 3]),
                         dict(output_shape=[2, 4, 5, 5], strides=1, padding="SAME",
                              data_format="NCHW"),
                         lambda f: ref.conv_transpose(x4, f, [2, 4, 5, 5], data_format="NCHW")),
    "conv3d_transpose": (tf.nn.conv3d_transpose, x5, t([2, 2, 2, 4, 3]),
                         dict(output_shape=[2, 4, 4, 4, 4], strides=[1] * 5, padding="SAME",
                              data_format="NCDHW"),
                         lambda f: ref.conv_transpose(x5, f, [2, 4, 4, 4, 4],
                                                      data_format="NCDHW")),
    "conv_transpose": (tf.nn.conv_transpose, x4, t([3, 3, 4, 3]),
                       dict(output_shape=[2, 4, 5, 5], strides=1, padding="SAME",
                            data_format="NCHW"),
                       lambda f: ref.conv_transpose(x4, f, [2, 4, 5, 5], data_format="NCHW")),
}
pw = t([1, 1, 6, 4])
CALLS["separable_conv2d"] = (
    lambda x, f, **kw: tf.nn.separable_conv2d(x, f, pw, **kw), x4, t([3, 3, 3, 2]),
    dict(strides=[1] * 4, padding="SAME", data_format="NCHW"),
    lambda f: ref.conv(x4, f, padding="SAME", data_format="NCHW", kind="separable",
                       pointwise=pw))

results = {}
for name, (fn, x, f, kw, expected) in CALLS.items():
    row = {}
    convfix_events.reset()  # each op's first repair is written, not folded into the last's
    with capture_events() as events:
        row["eager"] = close(fn(x, f, **kw), expected(f))
        row["again"] = close(fn(x, f, **kw), expected(f))  # replayed
        g = tf.Variable(f + 1.0)  # a filter never seen: not sent on by the memory
        convfix_events.reset()  # separable's calls share one callsite, eager and traced
        row["traced"] = close(tf.function(lambda v: fn(v, g, **kw))(x), expected(g))
    row["events"] = sorted({(e["policy"], e["reason"], e["action"], e["graph"])
                            for e in events if e["event"] == "convfix.intervention"})
    results[name] = row
out["ops"] = results

# gradients, eager and traced, against the same convolution written channels-last by hand
k = tf.Variable(t([3, 3, 3, 4]))
def by_hand(v):
    return tf.transpose(tf.nn.conv2d(tf.transpose(v, [0, 2, 3, 1]), k, 1, "SAME"), [0, 3, 1, 2])
def grads(fn, v):
    with tf.GradientTape() as tape:
        tape.watch(v)
        loss = tf.reduce_sum(fn(v) ** 2)
    return tape.gradient(loss, [v, k])
repaired = lambda v: tf.nn.conv2d(v, k, 1, "SAME", data_format="NCHW")
for label, run in (("eager", grads), ("traced", tf.function(grads))):
    got, want = run(repaired, x4), grads(by_hand, x4)
    out["grad_" + label] = all(
        g is not None and bool(np.array_equal(g, w)) for g, w in zip(got, want))

# XLA has channels-first kernels: left alone, and right
with capture_events() as events:
    xla = tf.function(lambda v: tf.nn.conv2d(v, t([3, 3, 3, 2]) * 0 + 1, 1, "SAME",
                                             data_format="NCHW"), jit_compile=True)(x4)
out["xla_events"] = len([e for e in events if e["event"] == "convfix.intervention"])
out["xla_shape"] = list(xla.shape)

# the policy off: TensorFlow's own error stands
import convfix
with convfix.override(policies={"data_format": "off"}):
    try:
        tf.nn.conv2d(x4, t([3, 3, 3, 2]), 1, "SAME", data_format="NCHW")
        out["off"] = "answered"
    except Exception as error:
        out["off"] = type(error).__name__

# Keras: a channels_first Conv2D, predict and a training step
keras.utils.set_random_seed(0)
layer = keras.layers.Conv2D(4, 3, padding="same", data_format="channels_first")
model = keras.Sequential([keras.Input((3, 5, 5)), layer])
with capture_events() as events:
    y = model.predict(x4.numpy(), verbose=0)
    model.compile(optimizer="sgd", loss="mse")
    before = layer.kernel.numpy().copy()
    hand = tf.transpose(tf.nn.bias_add(tf.nn.conv2d.__convfix_original__(
        tf.transpose(x4, [0, 2, 3, 1]), before, 1, "SAME"), layer.bias), [0, 3, 1, 2])
    history = model.fit(x4.numpy(), np.zeros([2, 4, 5, 5], np.float32), epochs=1, verbose=0)
out["keras_predict"] = bool(np.allclose(y, hand, rtol=1e-5, atol=1e-5))
out["keras_trained"] = bool(np.isfinite(history.history["loss"][0])) and not bool(
    np.array_equal(before, layer.kernel.numpy()))
out["keras_events"] = sorted({(e["policy"], e["layer"] is not None) for e in events
                              if e["event"] == "convfix.intervention"})
print("RESULT " + json.dumps(out))
"""


@pytest.mark.subprocess
def test_without_onednn_every_channels_first_op_is_repaired_eager_traced_and_in_keras() -> None:
    # given a fresh interpreter with oneDNN off (TensorFlow's own CPU kernels only)
    done = run_python(CHILD, env={"TF_ENABLE_ONEDNN_OPTS": "0"}, timeout=300)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, done.stderr[-3000:]
    result = json.loads(line[len("RESULT ") :])
    assert result["onednn"] is False
    # then each of the ten ops answers as the float64 reference does, eagerly, replayed
    # and traced, with one repair event each way
    for name, row in result["ops"].items():
        assert row == {
            "eager": True,
            "again": True,
            "traced": True,
            "events": [
                ["data_format", "channels_first_on_cpu", "transpose_to_channels_last", False],
                ["data_format", "channels_first_on_cpu", "transpose_to_channels_last", True],
            ],
        }, name
    assert len(result["ops"]) == 10
    # gradients flow, bit for bit those of the same convolution written channels-last
    assert result["grad_eager"] is True and result["grad_traced"] is True
    # XLA is left alone; the policy off leaves TensorFlow's own error
    assert result["xla_events"] == 0 and result["xla_shape"] == [2, 2, 5, 5]
    assert result["off"] == "UnimplementedError"
    # Keras' channels_first Conv2D predicts and trains, its calls repaired (layer named)
    assert result["keras_predict"] is True and result["keras_trained"] is True
    assert result["keras_events"] == [["data_format", True]]


SAVE = """
import sys
import numpy as np
import tensorflow as tf
if sys.argv[1] == "convfix":
    import convfix.auto
k = tf.constant(np.arange(3 * 3 * 3 * 2, dtype=np.float32).reshape([3, 3, 3, 2]) / 50)
module = tf.Module()
module.f = tf.function(lambda v: tf.nn.conv2d(v, k, 1, "SAME", data_format="NCHW"),
                       input_signature=[tf.TensorSpec([None, 3, 5, 5], tf.float32)])
tf.saved_model.save(module, sys.argv[2])
"""

LOAD = """
import sys
import numpy as np
import tensorflow as tf
x = tf.constant(np.linspace(-1, 1, 2 * 3 * 5 * 5, dtype=np.float32).reshape([2, 3, 5, 5]))
try:
    y = tf.saved_model.load(sys.argv[1]).f(x)
    k = tf.constant(np.arange(3 * 3 * 3 * 2, dtype=np.float32).reshape([3, 3, 3, 2]) / 50)
    hand = tf.transpose(tf.nn.conv2d(tf.transpose(x, [0, 2, 3, 1]), k, 1, "SAME"), [0, 3, 1, 2])
    print("RESULT", bool(np.array_equal(y, hand)))
except Exception as error:
    print("RESULT", type(error).__name__)
"""


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("saved_with", "onednn", "loaded"),
    [("convfix", "0", "True"), ("bare", "1", "UnimplementedError")],
    ids=["traced with the repair", "traced with oneDNN's kernels"],
)
def test_a_savedmodel_holds_the_graph_as_traced(
    tmp_path: Any, saved_with: str, onednn: str, loaded: str
) -> None:
    # given a channels-first function saved where it was (or was not) repaired
    path = str(tmp_path / "model")
    saved = run_python(
        f"import sys; sys.argv = ['-', {saved_with!r}, {path!r}]\n" + SAVE,
        env={"TF_ENABLE_ONEDNN_OPTS": onednn},
    )
    assert saved.returncode == 0, saved.stderr[-3000:]
    # when it is loaded without convfix where oneDNN is off
    done = run_python(
        f"import sys; sys.argv = ['-', {path!r}]\n" + LOAD, env={"TF_ENABLE_ONEDNN_OPTS": "0"}
    )
    # then the traced repair runs (bit for bit), and a graph traced without it fails
    assert f"RESULT {loaded}" in done.stdout, done.stderr[-3000:]
