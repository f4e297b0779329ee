"""[policies.split_batch] max_batch_bytes: split over-budget calls before they run, in
graph mode (where no OOM can be caught) and eagerly alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import convfix
from convfix.policies.split_batch.chunks import estimate_bytes
from convfix.testing import capture_events
from tests.integration.recovery_support import conv_operands, relative

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.usefixtures("forget_learned", "simulated_gpu")

# x[8,16,16,3] * k[3,3,3,4], SAME: per example 3,072 B in + 4,096 B out + 27,648 B im2col.
PER_EXAMPLE = (16 * 16 * 3 + 16 * 16 * 4 + 16 * 16 * 27) * 4
BUDGET = {"split_batch": {"max_batch_bytes": 2 * PER_EXAMPLE}}  # two examples a chunk


def _inputs() -> tuple[Any, Any]:
    return conv_operands(8, 16, seed=11)


def _budget_events(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in captured if e.get("reason") == "over_memory_budget"]


def test_the_estimate_is_input_output_and_workspace() -> None:
    x, k = _inputs()
    from convfix.call import Binder
    from convfix.ops import V2_SPECS
    from tests.integration.conftest import unpatched

    original = unpatched(tf.nn.conv2d)
    call = Binder(V2_SPECS["conv2d"], original).bind((x, k, 1, "SAME"), {})
    assert estimate_bytes(call) == (8 * PER_EXAMPLE, PER_EXAMPLE)


def test_an_eager_call_over_budget_runs_in_chunks() -> None:
    x, k = _inputs()
    whole = tf.nn.conv2d(x, k, 1, "SAME")
    with convfix.override(policies=BUDGET), capture_events() as captured:
        out = tf.nn.conv2d(x, k, 1, "SAME")
    assert relative(out, whole) < 1e-6
    (event,) = _budget_events(captured)
    assert event["after"] == {"chunk": 2, "chunks": 4} and event["graph"] is False
    assert event["before"]["estimated_bytes"] == 8 * PER_EXAMPLE


def test_a_call_within_budget_is_untouched() -> None:
    x, k = _inputs()
    roomy = {"split_batch": {"max_batch_bytes": 8 * PER_EXAMPLE}}
    whole = tf.nn.conv2d(x, k, 1, "SAME")
    with convfix.override(policies=roomy), capture_events() as captured:
        out = tf.nn.conv2d(x, k, 1, "SAME")
    assert np.array_equal(out, whole) and captured == []


def test_a_traced_call_with_a_known_batch_is_split_in_the_graph() -> None:
    x, k = _inputs()
    whole = tf.nn.conv2d(x, k, 1, "SAME")
    with convfix.override(policies=BUDGET), capture_events() as captured:
        step = tf.function(lambda v: tf.nn.conv2d(v, k, 1, "SAME"))
        out = step(x)
        graph = step.get_concrete_function(x).graph
    assert relative(out, whole) < 1e-6
    ops = [op.type for op in graph.get_operations()]
    assert "Conv2D" not in ops  # the convolution runs inside the loop, a chunk at a time
    assert {"While", "StatelessWhile"} & set(ops)
    (event,) = _budget_events(captured)
    assert event["graph"] is True and event["after"] == {"chunk": 2, "chunks": 4}


def test_a_traced_call_with_an_unknown_batch_loops_over_chunks() -> None:
    x, k = _inputs()
    spec = tf.TensorSpec([None, 16, 16, 3], tf.float32)
    with convfix.override(policies=BUDGET), capture_events() as captured:
        step = tf.function(lambda v: tf.nn.conv2d(v, k, 1, "SAME"), input_signature=[spec])
        for batch in (8, 5, 2, 1, 0):  # one trace, every batch size
            out = step(x[:batch])
            assert out.shape == (batch, 16, 16, 4)
            if batch:
                assert relative(out, tf.nn.conv2d(x[:batch], k, 1, "SAME")) < 1e-6
    assert step.experimental_get_tracing_count() == 1
    (event,) = [e for e in _budget_events(captured) if e["graph"]]
    assert event["before"]["batch"] is None


def test_gradients_through_a_budgeted_graph_are_the_whole_calls() -> None:
    x, k = _inputs()
    k = tf.Variable(k)
    spec = tf.TensorSpec([None, 16, 16, 3], tf.float32)

    def loss(v: Any) -> Any:
        return tf.reduce_sum(tf.nn.conv2d(v, k, 1, "SAME") ** 2)

    def grads(fn: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return tape.gradient(value, [x, k])

    whole = grads(loss)
    with convfix.override(policies=BUDGET), capture_events() as captured:
        split = grads(tf.function(loss, input_signature=[spec]))
    assert _budget_events(captured)
    for a, b in zip(split, whole):
        assert relative(a, b) < 1e-6


def test_gradients_of_an_empty_batch_under_a_budget() -> None:
    x, k = _inputs()
    spec = tf.TensorSpec([None, 16, 16, 3], tf.float32)
    with convfix.override(policies=BUDGET):
        step = tf.function(lambda v: tf.nn.conv2d(v, k, 1, "SAME"), input_signature=[spec])
        empty = x[:0]
        with tf.GradientTape() as tape:
            tape.watch(empty)
            loss = tf.reduce_sum(step(empty))
        assert tape.gradient(loss, empty).shape == (0, 16, 16, 3)


@pytest.mark.parametrize("spec", [None, tf.TensorSpec([None, 16, 16, 3], tf.float32)])
def test_xla_compiled_functions_split_under_a_budget(spec: Any) -> None:
    x, k = _inputs()
    whole = tf.nn.conv2d(x, k, 1, "SAME")
    signature = None if spec is None else [spec]
    with convfix.override(policies=BUDGET), capture_events() as captured:
        step = tf.function(
            lambda v: tf.nn.conv2d(v, k, 1, "SAME"), jit_compile=True, input_signature=signature
        )
        out = step(x)
    assert _budget_events(captured)
    assert relative(out, whole) < 1e-6


def test_keras_fit_under_a_budget_trains_like_without() -> None:
    keras = pytest.importorskip("keras")
    data = np.random.default_rng(0).normal(size=(16, 16, 16, 3)).astype(np.float32)
    target = np.random.default_rng(1).normal(size=(16, 16, 16, 4)).astype(np.float32)

    def trained(policies: dict[str, Any] | None) -> Any:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, padding="same")]
        )
        model.compile(optimizer="sgd", loss="mse")
        with convfix.override(policies=policies or {}):
            model.fit(data, target, batch_size=8, epochs=2, verbose=0)
        return model.get_weights()[0]

    plain = trained(None)
    with capture_events() as captured:
        budgeted = trained(BUDGET)
    assert _budget_events(captured)
    assert relative(budgeted, plain) < 1e-5


def test_second_order_gradients_through_a_budgeted_graph() -> None:
    x, k = _inputs()
    k = tf.Variable(k)
    spec = tf.TensorSpec([None, 16, 16, 3], tf.float32)

    def penalty(v: Any) -> Any:  # a gradient penalty, as in WGAN-GP
        with tf.GradientTape() as inner:
            inner.watch(v)
            y = tf.reduce_sum(tf.nn.conv2d(v, k, 1, "SAME") ** 2)
        return tf.reduce_sum(inner.gradient(y, v) ** 2)

    def outer(fn: Any) -> Any:
        with tf.GradientTape() as tape:
            value = fn(x)
        return tape.gradient(value, k)

    whole = outer(penalty)
    with convfix.override(policies=BUDGET), capture_events() as captured:
        split = outer(tf.function(penalty, input_signature=[spec]))
    assert _budget_events(captured)
    assert relative(split, whole) < 1e-5


def test_transposes_split_in_the_graph_too() -> None:
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(6, 8, 8, 4)).astype(np.float32))
    k = tf.constant(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    whole = tf.nn.conv2d_transpose(x, k, [6, 16, 16, 2], 2, "SAME")
    tiny = {"split_batch": {"max_batch_bytes": 20_000}}
    with convfix.override(policies=tiny), capture_events() as captured:
        out = tf.function(lambda v: tf.nn.conv2d_transpose(v, k, [6, 16, 16, 2], 2, "SAME"))(x)
    assert _budget_events(captured), "the budget did not split the transpose"
    assert relative(out, whole) < 1e-6


@pytest.mark.parametrize("kind", ["numpy", "tensorshape"])
def test_transpose_output_shapes_of_any_kind_are_budgeted(kind: str) -> None:
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(6, 8, 8, 4)).astype(np.float32))
    k = tf.constant(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    shape = np.array([6, 16, 16, 2]) if kind == "numpy" else tf.TensorShape([6, 16, 16, 2])
    whole = tf.nn.conv2d_transpose(x, k, [6, 16, 16, 2], 2, "SAME")
    tiny = {"split_batch": {"max_batch_bytes": 20_000}}
    with convfix.override(policies=tiny), capture_events() as captured:
        out = tf.nn.conv2d_transpose(x, k, shape, 2, "SAME")
    assert _budget_events(captured)
    assert relative(out, whole) < 1e-6


def test_strict_mode_refuses_an_over_budget_call_without_running_it() -> None:
    from convfix.testing import small_device

    x, k = _inputs()
    with (
        convfix.override(policies={"split_batch": {"mode": "strict", "max_batch_bytes": 1000}}),
        small_device(max_batch=1000) as device,
        pytest.raises(convfix.ConvFixError, match="max_batch_bytes"),
    ):
        tf.nn.conv2d(x, k, 1, "SAME")
    assert device.attempts == []  # never dispatched


def test_a_budgeted_call_that_still_runs_out_of_memory_shrinks_below_the_budget() -> None:
    from convfix.testing import small_device

    x, k = _inputs()  # the budget gives chunks of 2; the device holds 1
    with (
        convfix.override(policies=BUDGET),
        capture_events() as captured,
        small_device(max_batch=1) as device,
    ):
        out = tf.nn.conv2d(x, k, 1, "SAME")
    assert [size for _, size in device.attempts][:2] == [2, 1]  # never above the budget
    assert relative(out, tf.nn.conv2d(x, k, 1, "SAME")) < 1e-6
    (split,) = [e for e in captured if e.get("reason") == "out_of_memory"]
    assert split["after"]["chunk"] == 1


def test_a_budgeted_call_whose_concatenation_does_not_fit_joins_in_place() -> None:
    from convfix.testing import small_device

    x, k = _inputs()
    output = 8 * 16 * 16 * 4 * 4
    with (
        convfix.override(policies=BUDGET),
        small_device(max_join_bytes=2 * output - 1) as device,
    ):
        out = tf.nn.conv2d(x, k, 1, "SAME")
    assert relative(out, tf.nn.conv2d(x, k, 1, "SAME")) < 1e-6
    assert max(size for _, size in device.attempts) == 2  # the whole batch never ran


def test_grow_back_stays_within_the_budget() -> None:
    from convfix.testing import small_device

    x, k = _inputs()
    settings = {"split_batch": {"max_batch_bytes": 2 * PER_EXAMPLE, "grow_back_after": 1}}
    with convfix.override(policies=settings):
        with small_device(max_batch=1):
            tf.nn.conv2d(x, k, 1, "SAME")  # learns chunk 1
        with small_device() as device:  # room again: grow-back may climb, to the budget
            for _ in range(6):
                tf.nn.conv2d(x, k, 1, "SAME")
    assert max(size for _, size in device.attempts) == 2
