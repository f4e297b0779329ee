"""convfix's own bugs never break a call; threads; hot loops; tf.function graphs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import convfix
from convfix import events, guard
from convfix.integrations.entry import MARK
from convfix.policies.dtype import DtypePolicy
from convfix.testing import capture_events

X64 = tf.ones([1, 5, 5, 3], tf.float64)
K32 = tf.ones([3, 3, 3, 2])


class Boom(RuntimeError):
    pass


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise Boom("injected")


@pytest.fixture
def counting_dispatch(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts how often TensorFlow's own conv2d op runs."""
    from tensorflow.python.ops import gen_nn_ops

    original = gen_nn_ops.conv2d
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(gen_nn_ops, "conv2d", counted)
    yield calls


def test_bug_in_a_policy_falls_back_to_the_original_call_and_logs(
    monkeypatch: pytest.MonkeyPatch, counting_dispatch: list[int]
) -> None:
    monkeypatch.setattr(DtypePolicy, "apply", _boom)
    with capture_events() as captured, pytest.raises(tf.errors.InvalidArgumentError):
        tf.nn.conv2d(X64, K32, 1, "SAME")  # TF's own error, as without convfix
    assert [e["event"] for e in captured] == ["convfix.internal_error"]
    assert captured[0]["error_type"] == "Boom"
    assert captured[0]["fell_back"] is True
    assert len(counting_dispatch) == 1  # dispatched once, never twice


def test_bug_in_the_guard_on_a_safe_call_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # A NumPy input is valid but not on the fast path, so the full guard runs (and fails).
    monkeypatch.setattr(guard, "inspect", _boom)
    x, k = np.ones([1, 5, 5, 3], np.float32), tf.ones([3, 3, 3, 2])
    with capture_events() as captured:
        y = tf.nn.conv2d(x, k, 1, "VALID")
    np.testing.assert_array_equal(y.numpy(), getattr(tf.nn.conv2d, MARK)(x, k, 1, "VALID"))
    assert captured[0]["event"] == "convfix.internal_error"
    assert captured[0]["fell_back"] is True


def test_bug_while_checking_an_unsafe_call_raises_convfix_error_not_an_abort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(DtypePolicy, "detect", _boom)
    with capture_events() as captured, pytest.raises(convfix.ConvFixError) as raised:
        tf.nn.conv2d(tf.ones([10, 10, 3]), K32, 1, "SAME")  # would abort the process
    assert isinstance(raised.value.__cause__, Boom)
    assert captured[0]["fell_back"] is False


def test_bug_after_dispatch_keeps_the_result_and_never_dispatches_twice(
    monkeypatch: pytest.MonkeyPatch, counting_dispatch: list[int]
) -> None:
    def dispatches() -> tuple[int, Any]:
        before = len(counting_dispatch)
        y = tf.nn.conv2d(X64, K32, 1, "SAME")
        return len(counting_dispatch) - before, y

    dispatches()  # the first repair is learned; later ones replay it
    steady, _ = dispatches()
    monkeypatch.setattr(events, "record", _boom)
    with capture_events() as captured:
        with_bug, y = dispatches()
    assert y.dtype == tf.float32
    assert with_bug == steady == 1
    assert captured[0]["event"] == "convfix.internal_error"


def test_hot_loop_writes_one_line_and_counts_every_repair() -> None:
    with capture_events() as captured:
        for _ in range(10_000):
            tf.nn.conv2d(X64, K32, 1, "SAME")
    assert len([e for e in captured if e["event"] == "convfix.intervention"]) == 1
    assert sum(events.counts().values()) == 10_000
    with capture_events() as summary:
        events.write_summary()
    assert summary[0]["total"] == 10_000


def test_threads_repairing_and_passing_calls_get_right_results_and_exact_counts() -> None:
    x32 = tf.random.normal([2, 6, 6, 3], seed=1)
    x64 = tf.cast(x32, tf.float64)
    want32 = getattr(tf.nn.conv2d, MARK)(x32, K32, 1, "SAME").numpy()
    # The repair casts the input to Keras' compute dtype, float32.
    want64 = getattr(tf.nn.conv2d, MARK)(tf.cast(x64, tf.float32), K32, 1, "SAME").numpy()
    errors: list[str] = []
    per_thread = 200

    def work(repair: bool) -> None:
        for _ in range(per_thread):
            y = tf.nn.conv2d(x64 if repair else x32, K32, 1, "SAME").numpy()
            if not np.array_equal(y, want64 if repair else want32):
                errors.append("wrong result")

    with capture_events() as captured:
        threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert sum(events.counts().values()) == 4 * per_thread
    # One callsite, one key, one line (a periodic summary may land too on a slow machine).
    assert [e["event"] for e in captured if e["event"] != "convfix.summary"] == [
        "convfix.intervention"
    ]


def _op_types(function: Any, *specs: tf.TensorSpec) -> list[str]:
    graph = function.get_concrete_function(*specs).graph
    return [op.type for op in graph.get_operations()]


def test_traced_graph_is_unchanged_where_static_shapes_prove_the_call_safe() -> None:
    k = tf.ones([3, 3, 3, 4])

    def model(x: Any) -> Any:
        return tf.nn.relu(tf.nn.conv2d(x, k, 1, "VALID"))

    spec = tf.TensorSpec([4, 16, 16, 3])
    with_convfix = _op_types(tf.function(model), spec)
    with convfix.override(mode="off"):
        without = _op_types(tf.function(model), spec)
    assert with_convfix == without


def test_repair_inside_tf_function_is_baked_in_at_trace_and_logged_once() -> None:
    @tf.function
    def step(x: Any) -> Any:
        return tf.nn.conv2d(x, K32, 1, "SAME")

    with capture_events() as captured:
        for _ in range(5):
            y = step(X64)
    assert y.dtype == tf.float32
    (event,) = captured
    assert event["graph"] is True
    assert sum(events.counts().values()) == 1  # traced once: counted once, not per step
    assert "test_robustness.py" in str(event["callsite"])


def test_gradients_flow_through_a_dtype_repair() -> None:
    k = tf.Variable(tf.random.normal([3, 3, 3, 2], seed=2))
    x = tf.random.normal([1, 5, 5, 3], seed=3, dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME") ** 2)
    grad = tape.gradient(loss, k)
    with tf.GradientTape() as tape:
        by_hand = tf.reduce_sum(
            getattr(tf.nn.conv2d, MARK)(tf.cast(x, tf.float32), k, 1, "SAME") ** 2
        )
    np.testing.assert_array_equal(grad.numpy(), tape.gradient(by_hand, k).numpy())


def test_unknown_batch_in_a_graph_refuses_an_empty_batch_instead_of_garbage() -> None:
    k = tf.ones([3, 3, 3, 4])

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3])])
    def model(x: Any) -> Any:
        return tf.nn.conv2d(x, k, 1, "SAME")

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[\?,8,8,4\]"):
        model(tf.ones([0, 8, 8, 3]))
    np.testing.assert_array_equal(
        model(tf.ones([2, 8, 8, 3])).numpy(),
        getattr(tf.nn.conv2d, MARK)(tf.ones([2, 8, 8, 3]), k, 1, "SAME").numpy(),
    )


def test_unknown_spatial_size_in_a_graph_refuses_a_too_small_input_at_run_time() -> None:
    k = tf.ones([3, 3, 3, 4])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])])
    def model(x: Any) -> Any:
        return tf.nn.conv2d(x, k, 1, "VALID")

    assert model(tf.ones([1, 5, 5, 3])).shape == (1, 3, 3, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="convfix"):
        model(tf.ones([1, 2, 2, 3]))


def test_learned_repair_is_replayed_without_waiting_for_tensorflow_to_refuse(
    counting_dispatch: list[int],
) -> None:
    k = tf.ones([3, 3, 3, 2])  # a filter of its own: nothing learned about it yet
    tf.nn.conv2d(X64, k, 1, "SAME")
    first = len(counting_dispatch)
    for _ in range(3):
        y = tf.nn.conv2d(X64, k, 1, "SAME")
    assert first == 2  # TensorFlow's refusal, then the repaired call
    assert len(counting_dispatch) - first == 3  # then one dispatch per call
    assert y.dtype == tf.float32
    assert sum(events.counts().values()) == 4


def test_healthy_call_sharing_a_repaired_filter_stays_untouched() -> None:
    k = tf.ones([3, 3, 3, 2])
    tf.nn.conv2d(X64, k, 1, "SAME")  # the filter is now known from a repair
    x32 = tf.random.normal([1, 5, 5, 3], seed=4)
    with capture_events() as captured:
        y = tf.nn.conv2d(x32, k, 1, "SAME")
    np.testing.assert_array_equal(y.numpy(), getattr(tf.nn.conv2d, MARK)(x32, k, 1, "SAME"))
    assert captured == []


def test_a_learned_repair_does_not_outlive_a_config_change() -> None:
    k = tf.ones([3, 3, 3, 2])
    assert tf.nn.conv2d(X64, k, 1, "SAME").dtype == tf.float32
    with (
        convfix.override(policies={"dtype": "off"}),
        pytest.raises(tf.errors.InvalidArgumentError),
    ):
        tf.nn.conv2d(X64, k, 1, "SAME")


@pytest.mark.parametrize(
    ("call", "by_hand"),
    [
        (
            lambda x, k: tf.nn.conv2d(x[0], k, 1, "same"),
            lambda x, k: getattr(tf.nn.conv2d, MARK)(x[0:1], k, 1, "SAME")[0],
        ),
        (
            lambda x, k: tf.nn.conv2d(tf.cast(x, tf.float64), k, 1, "VALID"),
            lambda x, k: getattr(tf.nn.conv2d, MARK)(  # float64 back to float32, zero-padded
                tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]), k, 1, "VALID"
            ),
        ),
    ],
    ids=["batch_dim+padding_case", "dtype+padding_fit"],
)
def test_replayed_repairs_give_the_first_calls_result_and_count_every_call(
    call: Any, by_hand: Any
) -> None:
    x = tf.random.normal([1, 2, 2, 3], seed=5)
    k = tf.random.normal([3, 3, 3, 2], seed=6)
    want = by_hand(x, k).numpy()
    with capture_events() as captured:
        for _ in range(4):
            np.testing.assert_array_equal(call(x, k).numpy(), want)
    reasons = sorted(str(e["reason"]) for e in captured)
    assert len(reasons) == 2  # each problem written once
    assert sum(events.counts().values()) == 8  # and counted on every call
