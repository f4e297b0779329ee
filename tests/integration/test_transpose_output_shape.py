"""A transposed convolution's output_shape: impossible sizes are refused in words, and an
output batch other than the input's is repaired with the input's (guard/output_shape.py,
policies/output_batch.py). Real TensorFlow, checked against the float64 reference."""

from __future__ import annotations

import json
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import convfix
from convfix import ConvFixError, events
from convfix.guard.output_shape import valid_sizes
from convfix.sweep.reference import conv_transpose as reference
from convfix.testing import capture_events
from tests.integration.conftest import unpatched
from tests.subproc import run_python

X = tf.random.normal([1, 3, 3, 8], seed=1)
K = tf.random.normal([3, 3, 4, 8], seed=2)


def _reasons(events: list[dict[str, Any]], kind: str) -> list[str]:
    return [e["reason"] for e in events if e["event"] == kind]


def _close(result: Any, expected: np.ndarray) -> bool:
    return result.shape == expected.shape and np.allclose(result, expected, atol=1e-4)


# -- item 2: sizes that cannot be produced -------------------------------------------------


@pytest.mark.parametrize(
    ("size", "padding", "says"),
    [
        (7, "SAME", ["must be 5 or 6", "padding 'VALID' gives 7 (it accepts 7 or 8)"]),
        (4, "SAME", ["must be 5 or 6", "(it accepts 7 or 8)", "no padding name gives it"]),
        (9, "VALID", ["must be 7 or 8", "(it accepts 5 or 6)", "no padding name gives it"]),
        (5, "VALID", ["must be 7 or 8", "padding 'SAME' gives 5 (it accepts 5 or 6)"]),
    ],
)
def test_an_impossible_size_is_refused_naming_the_valid_sizes_and_padding(
    size: int, padding: str, says: list[str]
) -> None:
    # given the call: input 3x3, kernel 3, stride 2
    with capture_events() as events, pytest.raises(ConvFixError) as refused:
        # when output_shape asks for a size that padding cannot give
        tf.nn.conv2d_transpose(X, K, [1, size, size, 4], 2, padding)
    # then the refusal names the sizes, the padding that gives it or that none does
    for text in says:
        assert text in str(refused.value)
    assert _reasons(events, "convfix.refused") == ["impossible_output_shape"]


def test_a_size_onednn_would_answer_silently_is_refused_before_dispatch() -> None:
    # given VALID, one input position, and a size below the kernel (oneDNN answers it)
    x, k = tf.ones([1, 1, 1, 3]), tf.ones([3, 3, 2, 3])
    # when it is called, then convfix refuses (TensorFlow's kernel is never reached)
    with pytest.raises(ConvFixError, match="must be 3 or 4"):
        tf.nn.conv2d_transpose(x, k, [1, 2, 2, 2], 2, "VALID")


def _call(op: str, spatial: int, size: int, **options: Any) -> Any:
    x = tf.ones([2, *[3] * spatial, 3])
    k = tf.ones([*[2] * spatial, 2, 3])
    out = [2, *[size] * spatial, 2]
    if op == "compat.v1.conv2d_transpose":
        return tf.compat.v1.nn.conv2d_transpose(x, k, out, [1, 2, 2, 1], **options)
    if op == "compat.v1.conv3d_transpose":
        return tf.compat.v1.nn.conv3d_transpose(x, k, out, [1, 2, 2, 2, 1], **options)
    return getattr(tf.nn, op)(x, k, out, 2, **options)


@pytest.mark.parametrize(
    ("op", "spatial"),
    [
        ("conv1d_transpose", 1),
        ("conv2d_transpose", 2),
        ("conv3d_transpose", 3),
        ("conv_transpose", 2),
        ("conv_transpose", 3),
        ("compat.v1.conv2d_transpose", 2),
        ("compat.v1.conv3d_transpose", 3),
    ],
)
def test_every_transpose_refuses_an_impossible_size_and_runs_a_possible_one(
    op: str, spatial: int
) -> None:
    # given input size 3, kernel 2, stride 2, SAME: sizes 5 or 6
    # when a possible size is asked for, then it runs
    assert _call(op, spatial, 6, padding="SAME").shape[1] == 6
    # when an impossible one is, then convfix refuses it
    with pytest.raises(ConvFixError, match="must be 5 or 6"):
        _call(op, spatial, 7, padding="SAME")


def test_explicit_padding_is_judged_by_its_own_sizes() -> None:
    # given conv2d_transpose with explicit padding (1, 1): sizes 4 or 5 for input 3
    pads = [[0, 0], [1, 1], [1, 1], [0, 0]]
    assert _call("conv2d_transpose", 2, 5, padding=pads).shape[1] == 5
    # when 6 is asked for, then the refusal names its sizes and that SAME gives 6
    with pytest.raises(ConvFixError, match=r"must be 4 or 5; padding 'SAME' gives 6"):
        _call("conv2d_transpose", 2, 6, padding=pads)


def test_dilations_are_counted_in_the_kernel() -> None:
    # given kernel 3 dilated by 2 (5 wide), stride 1, VALID, input 3: only size 7
    x, k = tf.ones([1, 3, 3, 8]), tf.ones([3, 3, 4, 8])
    # when 6 is asked for, then the refusal names 7
    with pytest.raises(ConvFixError, match="must be 7; "):
        tf.nn.conv2d_transpose(x, k, [1, 6, 6, 4], 1, "VALID", dilations=2)


@st.composite
def geometries(draw: st.DrawFn) -> dict[str, Any]:
    spatial = draw(st.integers(1, 2))
    size, kernel, stride = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    accepted = valid_sizes(size, kernel, stride, padding)
    wanted = draw(st.integers(max(accepted.start - 2, 1), accepted.stop + 1))
    return {
        "spatial": spatial, "size": size, "kernel": kernel, "stride": stride,
        "padding": padding, "wanted": wanted, "valid": wanted in accepted,
    }  # fmt: skip


@settings(max_examples=120, deadline=None)
@given(g=geometries())
def test_a_possible_size_matches_the_reference_and_an_impossible_one_is_refused(
    g: dict[str, Any],
) -> None:
    # given a transpose of any small geometry (events of one callsite are folded: reset)
    events.reset()
    spatial = g["spatial"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal([2, *[g["size"]] * spatial, 3]).astype(np.float32)
    k = rng.standard_normal([*[g["kernel"]] * spatial, 2, 3]).astype(np.float32)
    out = [2, *[g["wanted"]] * spatial, 2]
    op = tf.nn.conv1d_transpose if spatial == 1 else tf.nn.conv2d_transpose
    call = lambda: op(tf.constant(x), tf.constant(k), out, g["stride"], g["padding"])  # noqa: E731
    with capture_events() as seen:
        if g["valid"]:
            # when the size is one the padding gives, then the result is the reference's
            expected = reference(x.astype(np.float64), k.astype(np.float64), out,
                                 strides=g["stride"], padding=g["padding"])  # fmt: skip
            assert _close(call(), expected)
            assert seen == []
        else:
            # when it is not, then convfix refuses it, every time
            with pytest.raises(ConvFixError, match="cannot come from input"):
                call()
            assert _reasons(seen, "convfix.refused") == ["impossible_output_shape"]


def test_a_traced_impossible_size_is_refused_when_traced() -> None:
    # given a tf.function whose static shapes make output_shape impossible
    traced = tf.function(lambda x: tf.nn.conv2d_transpose(x, K, [1, 7, 7, 4], 2, "SAME"))
    # when it traces, then convfix refuses (TensorFlow would fail only when the graph runs)
    with pytest.raises(ConvFixError, match="must be 5 or 6"):
        traced.get_concrete_function(tf.TensorSpec([1, 3, 3, 8]))


# -- item 3: the output batch --------------------------------------------------------------

XB = tf.random.normal([3, 3, 3, 8], seed=3)


def _expected(x: Any, batch: int) -> np.ndarray:
    return reference(np.float64(x), np.float64(K), [batch, 6, 6, 4], strides=2, padding="SAME")


def test_a_last_partial_batch_uses_the_input_batch_and_is_logged() -> None:
    # given output_shape hard-coded for a batch of 8 and a last batch of 3
    with capture_events() as events:
        # when the transpose runs (twice: the second is replayed)
        first = tf.nn.conv2d_transpose(XB, K, [8, 6, 6, 4], 2, "SAME")
        second = tf.nn.conv2d_transpose(XB, K, [8, 6, 6, 4], 2, "SAME")
    # then both results are the reference's for the input's batch
    assert _close(first, _expected(XB, 3)) and _close(second, _expected(XB, 3))
    # and each repair is logged, with shapes only
    repairs = [e for e in events if e["event"] == "convfix.intervention"]
    assert [(e["reason"], e["policy"], e["action"]) for e in repairs] == [
        ("output_batch_mismatch", "batch_dim", "use_input_batch")
    ] * 2
    assert repairs[0]["before"]["output_shape"] == [8, 6, 6, 4]
    assert repairs[0]["after"] == {"output_shape": [3, 6, 6, 4]}


def test_an_output_shape_tensor_gets_the_input_batch_too() -> None:
    # given output_shape as a tensor with the wrong batch
    with capture_events() as events:
        result = tf.nn.conv_transpose(XB, K, tf.constant([8, 6, 6, 4]), 2, "SAME")
    # then the result is exact and the repair logged
    assert _close(result, _expected(XB, 3))
    assert _reasons(events, "convfix.intervention") == ["output_batch_mismatch"]


def test_a_wrong_batch_with_the_policy_strict_is_refused() -> None:
    with convfix.override(policies={"batch_dim": "strict"}), pytest.raises(ConvFixError):
        tf.nn.conv2d_transpose(XB, K, [8, 6, 6, 4], 2, "SAME")


def _op_types(concrete: Any) -> list[str]:
    return sorted(op.type for op in concrete.graph.get_operations())


def test_traced_with_an_unknown_batch_the_graph_reads_the_input_batch() -> None:
    # given a traced transpose whose output batch is a number and whose input batch is not
    traced = tf.function(lambda x: tf.nn.conv2d_transpose(x, K, [8, 6, 6, 4], 2, "SAME"))
    with capture_events() as events:
        concrete = traced.get_concrete_function(tf.TensorSpec([None, 3, 3, 8]))
    assert [(e["reason"], e["graph"]) for e in events if e["event"] == "convfix.intervention"] == [
        ("output_batch_mismatch", True)
    ]
    # when the graph runs with the batch of 8 and with a last batch of 3, then both are exact
    full = tf.random.normal([8, 3, 3, 8], seed=4)
    assert _close(concrete(full), _expected(full, 8))
    assert _close(concrete(XB), _expected(XB, 3))
    # and the graph holds what the same call written with tf.shape(x)[0] holds
    by_hand = tf.function(
        lambda x: unpatched(tf.nn.conv2d_transpose)(x, K, [tf.shape(x)[0], 6, 6, 4], 2, "SAME")
    ).get_concrete_function(tf.TensorSpec([None, 3, 3, 8]))
    assert _op_types(concrete) == _op_types(by_hand)
    # which is 3 ops more than the call as made, besides constants: Shape, StridedSlice, Pack
    as_made = tf.function(
        lambda x: unpatched(tf.nn.conv2d_transpose)(x, K, [8, 6, 6, 4], 2, "SAME")
    ).get_concrete_function(tf.TensorSpec([None, 3, 3, 8]))
    added = [t for t in _op_types(concrete) if t != "Const"]
    for t in [t for t in _op_types(as_made) if t != "Const"]:
        added.remove(t)
    assert sorted(added) == ["Pack", "Shape", "StridedSlice"]


def test_keras_conv2d_transpose_traced_with_an_unknown_batch_is_left_alone() -> None:
    # given Keras 3's Conv2DTranspose (it passes tf.shape(x)[0] as the output batch)
    layer = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")
    layer.build((None, 3, 3, 8))
    traced = tf.function(layer)
    with capture_events() as events:
        concrete = traced.get_concrete_function(tf.TensorSpec([None, 3, 3, 8]))
    with convfix.override(mode="off"):
        plain = tf.function(layer).get_concrete_function(tf.TensorSpec([None, 3, 3, 8]))
    # then convfix logs nothing and the graph is the one Keras makes without it
    assert events == []
    assert _op_types(concrete) == _op_types(plain)
    kernel = layer.kernel.numpy()
    expected = reference(np.float64(XB), np.float64(kernel), [3, 6, 6, 4], strides=2)
    assert _close(concrete(XB), expected + layer.bias.numpy())


def test_keras_conv2d_transpose_eager_and_valid_runs_untouched() -> None:
    layer = keras.layers.Conv2DTranspose(4, 3, strides=2)  # padding "valid"
    with capture_events() as events:
        result = layer(XB)
    assert result.shape == (3, 7, 7, 4) and events == []


CHILD = """
import json
import convfix.auto
import numpy as np
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
from convfix import ConvFixError
from convfix.testing import capture_events

x = tf.random.normal([1, 3, 3, 8], seed=1)
k = tf.random.normal([3, 3, 4, 8], seed=2)
xb = tf.random.normal([3, 3, 3, 8], seed=3)
out = {"onednn": bool(_pywrap_util_port.IsMklEnabled())}
with capture_events() as events:
    try:
        tf.nn.conv2d_transpose(x, k, [1, 7, 7, 4], 2, "SAME")
        out["refused"] = ""
    except ConvFixError as error:
        out["refused"] = str(error)
    y = tf.nn.conv2d_transpose(xb, k, [8, 6, 6, 4], 2, "SAME")
    plain = tf.nn.conv2d_transpose.__convfix_original__
    out["batch"] = bool(np.array_equal(y, plain(xb, k, [3, 6, 6, 4], 2, "SAME")))
out["reasons"] = [e["reason"] for e in events if e["event"] != "convfix.summary"]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.subprocess
def test_without_onednn_the_same_refusal_and_repair() -> None:
    done = run_python(CHILD, env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["onednn"] is False
    assert "must be 5 or 6; padding 'VALID' gives 7" in result["refused"]
    assert result["batch"] is True
    assert result["reasons"] == ["impossible_output_shape", "output_batch_mismatch"]
