"""split_batch on a simulated small device: split, learn, grow back, min_chunk, modes.

The device (convfix.testing.small_device) raises TensorFlow's real ResourceExhaustedError
from beneath every Python layer, so these calls take exactly the path a GPU's OOM takes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import convfix
from convfix.testing import capture_events, reset, small_device
from tests.integration.recovery_support import conv_operands, relative

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.usefixtures("forget_learned", "simulated_gpu")


def _inputs(batch: int = 8) -> tuple[Any, Any]:
    return conv_operands(batch, 12)


def _splits(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in captured if e.get("policy") == "split_batch"]


@pytest.mark.compat
def test_an_out_of_memory_call_is_split_and_matches_the_whole_call() -> None:
    x, k = _inputs(8)
    whole = tf.nn.conv2d(x, k, 1, "SAME")
    with capture_events() as captured, small_device(max_batch=3) as device:
        out = tf.nn.conv2d(x, k, 1, "SAME")
    assert out.shape == whole.shape
    assert relative(out, whole) < 1e-6
    assert device.ooms == 2  # the whole batch of 8, then chunks of 4
    assert [batch for _, batch in device.attempts] == [8, 4, 2, 2, 2, 2]
    (event,) = _splits(captured)
    assert event["event"] == "convfix.intervention"
    assert event["reason"] == "out_of_memory"
    assert event["before"] == {"batch": 8}
    assert event["after"] == {"chunk": 2, "chunks": 4}
    assert event["attempts"] == 3
    assert event["elapsed_ms"] > 0
    assert event["learned"] is False


def test_a_learned_signature_goes_straight_to_its_chunk() -> None:
    x, k = _inputs(8)
    with capture_events() as captured, small_device(max_batch=3) as device:
        tf.nn.conv2d(x, k, 1, "SAME")
        ooms = device.ooms
        del device.attempts[:]
        tf.nn.conv2d(x, k, 1, "SAME")
        assert device.ooms == ooms  # no repeated out-of-memory
        assert [batch for _, batch in device.attempts] == [2, 2, 2, 2]
        # A larger batch of the same examples uses the learned chunk too.
        big, _ = _inputs(12)
        del device.attempts[:]
        tf.nn.conv2d(big, k, 1, "SAME")
        assert device.ooms == ooms
        assert [batch for _, batch in device.attempts] == [2] * 6
    learned = [e for e in _splits(captured) if e["learned"]]
    assert learned[0]["attempts"] == 1


def test_a_new_signature_learns_on_its_own() -> None:
    x, k = _inputs(8)
    other = tf.constant(np.ones((3, 3, 3, 5), np.float32))
    with small_device(max_batch=3) as device:
        tf.nn.conv2d(x, k, 1, "SAME")
        before = device.ooms
        tf.nn.conv2d(x, other, 1, "SAME")  # another filter shape: another signature
        assert device.ooms > before


def test_grow_back_tries_a_larger_chunk_after_n_successes() -> None:
    x, k = _inputs(8)
    with convfix.override(policies={"split_batch": {"grow_back_after": 2}}):
        with small_device(max_batch=3):
            tf.nn.conv2d(x, k, 1, "SAME")  # learns chunk 2
        with capture_events() as captured, small_device(max_batch=8) as device:
            tf.nn.conv2d(x, k, 1, "SAME")
            tf.nn.conv2d(x, k, 1, "SAME")
            del device.attempts[:]
            tf.nn.conv2d(x, k, 1, "SAME")  # third call: grows to chunk 4
            assert [batch for _, batch in device.attempts] == [4, 4]
            assert device.ooms == 0
    grown = [e for e in _splits(captured) if e["grew_back"]]
    assert grown and grown[0]["after"] == {"chunk": 4, "chunks": 2}


def test_a_failed_grow_back_costs_one_oom_and_doubles_the_wait() -> None:
    x, k = _inputs(8)
    with convfix.override(policies={"split_batch": {"grow_back_after": 1}}):
        with small_device(max_batch=3) as device:
            tf.nn.conv2d(x, k, 1, "SAME")  # learns chunk 2
            tf.nn.conv2d(x, k, 1, "SAME")  # one success
            ooms = device.ooms
            out = tf.nn.conv2d(x, k, 1, "SAME")  # tries chunk 4: one OOM, then chunk 2
            assert device.ooms == ooms + 1
            # The wait doubled: the next two calls do not try again.
            tf.nn.conv2d(x, k, 1, "SAME")
            tf.nn.conv2d(x, k, 1, "SAME")
            assert device.ooms == ooms + 1
            tf.nn.conv2d(x, k, 1, "SAME")  # now it does
            assert device.ooms == ooms + 2
    assert relative(out, tf.nn.conv2d(x, k, 1, "SAME")) < 1e-6


def test_grow_back_off_never_tries_again() -> None:
    x, k = _inputs(8)
    with convfix.override(policies={"split_batch": {"grow_back_after": 0}}):
        with small_device(max_batch=3) as device:
            tf.nn.conv2d(x, k, 1, "SAME")
            ooms = device.ooms
            for _ in range(5):
                tf.nn.conv2d(x, k, 1, "SAME")
            assert device.ooms == ooms


def test_min_chunk_stops_the_split_and_tensorflows_error_stands() -> None:
    x, k = _inputs(8)
    settings = {"split_batch": {"min_chunk": 4}, "device_fallback": "off"}
    with convfix.override(policies=settings), capture_events() as captured:
        with (
            small_device(max_batch=3) as device,
            pytest.raises(tf.errors.ResourceExhaustedError) as raised,
        ):
            tf.nn.conv2d(x, k, 1, "SAME")
    assert "[8,12,12,4]" in str(raised.value)  # the error of the call as made
    assert [batch for _, batch in device.attempts] == [8, 4]
    (event,) = _splits(captured)
    assert event["outcome"] == "fix_failed" and event["attempts"] == 2


def test_max_retries_bounds_the_rounds() -> None:
    x, k = _inputs(16)
    settings = {"split_batch": {"max_retries": 1}, "device_fallback": "off"}
    with (
        convfix.override(policies=settings),
        small_device(max_batch=3) as device,
        pytest.raises(tf.errors.ResourceExhaustedError),
    ):
        tf.nn.conv2d(x, k, 1, "SAME")
    assert [batch for _, batch in device.attempts] == [16, 8]


@pytest.mark.parametrize("mode", ["warn", "strict"])
def test_warn_and_strict_reraise_tensorflows_own_error(mode: str) -> None:
    x, k = _inputs(8)
    with (
        convfix.override(policies={"split_batch": mode}),
        capture_events() as captured,
        small_device(max_batch=3) as device,
        pytest.raises(tf.errors.ResourceExhaustedError),
    ):
        tf.nn.conv2d(x, k, 1, "SAME")
    assert len(device.attempts) == 1  # nothing retried
    (event,) = _splits(captured)
    assert event["event"] == "convfix.warning" and event["mode"] == mode


def test_off_mode_leaves_the_error_alone() -> None:
    x, k = _inputs(8)
    with (
        convfix.override(mode="off"),
        capture_events() as captured,
        small_device(max_batch=3),
        pytest.raises(tf.errors.ResourceExhaustedError),
    ):
        tf.nn.conv2d(x, k, 1, "SAME")
    assert captured == []


def test_op_determinism_uses_even_chunks_only() -> None:
    from tensorflow.python.framework import config as tf_config

    x, k = _inputs(9)
    tf_config.enable_op_determinism()
    try:
        with small_device(max_batch=4) as device:
            tf.nn.conv2d(x, k, 1, "SAME")
    finally:
        tf_config.disable_op_determinism()
    sizes = [batch for _, batch in device.attempts[1:]]
    assert len(set(sizes)) == 1 and 9 % sizes[0] == 0  # 3 chunks of 3, never 4+4+1


def test_uneven_chunks_without_determinism_keep_one_size_but_the_last() -> None:
    x, k = _inputs(9)
    with small_device(max_batch=4) as device:
        out = tf.nn.conv2d(x, k, 1, "SAME")
    assert [batch for _, batch in device.attempts] == [9, 4, 4, 1]
    assert relative(out, tf.nn.conv2d(x, k, 1, "SAME")) < 1e-6


def test_gradients_through_a_split_call_are_those_of_the_whole_call() -> None:
    x, k = _inputs(8)
    k = tf.Variable(k)

    def grads() -> tuple[Any, Any]:
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME") ** 2)
        return tape.gradient(loss, x), tape.gradient(loss, k)

    whole = grads()
    with small_device(max_batch=3):
        split = grads()
    assert relative(split[0], whole[0]) < 1e-6
    assert relative(split[1], whole[1]) < 1e-6


def test_the_learned_table_is_bounded() -> None:
    from convfix.memory import MEMORY

    k = tf.constant(np.ones((3, 3, 3, 4), np.float32))
    with (
        convfix.override(policies={"split_batch": {"max_table_size": 2}}),
        small_device(max_batch=1),
    ):
        for size in (5, 6, 7):
            tf.nn.conv2d(tf.ones([2, size, size, 3]), k, 1, "SAME")
    assert len(MEMORY.learned) == 2


def test_keras_predict_run_eagerly_is_split() -> None:
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((10, 10, 3)), keras.layers.Conv2D(4, 3, padding="same")])
    model.compile(run_eagerly=True)
    x = np.random.default_rng(0).normal(size=(16, 10, 10, 3)).astype(np.float32)
    whole = model.predict(x, batch_size=16, verbose=0)
    with capture_events() as captured, small_device(max_batch=4) as device:
        out = model.predict(x, batch_size=16, verbose=0)
        ooms = device.ooms
        again = model.predict(x, batch_size=16, verbose=0)
        assert device.ooms == ooms  # learned: straight to chunks of 4
    assert relative(out, whole) < 1e-6 and relative(again, whole) < 1e-6
    (first, *_) = _splits(captured)
    assert first["layer"] and first["after"]["chunk"] == 4


def _join_limit(batch: int) -> int:
    # A concatenation of x[batch,12,12,3] * k's outputs holds its parts and the output:
    # 2 * batch * 12 * 12 * 4 floats. One byte less does not fit.
    return 2 * batch * 12 * 12 * 4 * 4 - 1


def test_a_join_that_does_not_fit_is_done_in_place() -> None:
    x, k = _inputs(9)
    whole = tf.nn.conv2d(x, k, 1, "SAME")
    with (
        capture_events() as captured,
        small_device(max_batch=4, max_join_bytes=_join_limit(9)) as device,
    ):
        out = tf.nn.conv2d(x, k, 1, "SAME")
        ooms = device.ooms
        again = tf.nn.conv2d(x, k, 1, "SAME")
        assert device.ooms == ooms  # learned: straight to the in-place join
    assert relative(out, whole) < 1e-6 and np.array_equal(out, again)
    first, second = _splits(captured)
    assert first["join"] == "in_place" and first["attempts"] == 3  # whole, concat, in place
    assert first["after"] == {"chunk": 4, "chunks": 3}
    assert second["learned"] and second["attempts"] == 1


def test_the_in_place_join_is_bit_identical_to_concatenation() -> None:
    x, k = _inputs(9)
    with small_device(max_batch=4, max_join_bytes=_join_limit(9)):
        in_place = tf.nn.conv2d(x, k, 1, "SAME")
    reset()
    with small_device(max_batch=4):
        concatenated = tf.nn.conv2d(x, k, 1, "SAME")
    assert np.array_equal(in_place, concatenated)


def test_under_a_tape_a_join_that_does_not_fit_gives_up() -> None:
    # The in-place op has no gradient: a recorded call must concatenate, or fail.
    x, k = _inputs(9)
    settings = {"device_fallback": "off"}
    with (
        convfix.override(policies=settings),
        small_device(max_batch=4, max_join_bytes=_join_limit(9)),
        tf.GradientTape() as tape,
    ):
        tape.watch(x)
        with pytest.raises(tf.errors.ResourceExhaustedError, match=r"shape\[9,12,12,4\]"):
            tf.nn.conv2d(x, k, 1, "SAME")


def test_split_transposes_adjust_their_output_shape_per_chunk() -> None:
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(5, 6, 6, 4)).astype(np.float32))
    k = tf.constant(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    for output_shape in ([5, 12, 12, 2], tf.constant([5, 12, 12, 2])):
        whole = tf.nn.conv2d_transpose(x, k, output_shape, 2, "SAME")
        reset()
        with small_device(max_batch=2) as device:
            split = tf.nn.conv2d_transpose(x, k, output_shape, 2, "SAME")
        assert device.ooms >= 1
        assert relative(split, whole) < 1e-6


def test_a_filter_made_anew_each_call_still_goes_straight_to_the_learned_chunk() -> None:
    x, k = _inputs(8)
    with small_device(max_batch=3) as device:
        tf.nn.conv2d(x, k * 1.0, 1, "SAME")
        ooms = device.ooms
        for _ in range(3):
            tf.nn.conv2d(x, k * 1.0, 1, "SAME")  # a new filter tensor every call
        assert device.ooms == ooms


def test_only_inputs_of_the_learned_shape_leave_the_fast_path() -> None:
    from convfix.memory import MEMORY

    x, k = _inputs(8)
    with small_device(max_batch=3):
        tf.nn.conv2d(x, k, 1, "SAME")
    assert MEMORY.routed == {(12, 12, 3)}


def test_under_determinism_a_learned_chunk_divides_other_batches_evenly() -> None:
    from tensorflow.python.framework import config as tf_config

    k = _inputs(8)[1]
    tf_config.enable_op_determinism()
    try:
        with small_device(max_batch=3) as device:
            tf.nn.conv2d(_inputs(8)[0], k, 1, "SAME")  # learns chunk 2
            del device.attempts[:]
            tf.nn.conv2d(_inputs(9)[0], k, 1, "SAME")
    finally:
        tf_config.disable_op_determinism()
    sizes = [batch for _, batch in device.attempts]
    assert len(set(sizes)) == 1 and 9 % sizes[0] == 0


def test_split_off_leaves_an_out_of_memory_on_its_device() -> None:
    x, k = _inputs(8)
    with (
        convfix.override(policies={"split_batch": "off"}),
        capture_events() as captured,
        small_device(max_batch=3, device="GPU:0"),
        tf.device("/GPU:0"),
        pytest.raises(tf.errors.ResourceExhaustedError),
    ):
        tf.nn.conv2d(x, k, 1, "SAME")
    assert captured == []


def test_a_numpy_output_shape_is_split_too() -> None:
    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(size=(5, 6, 6, 4)).astype(np.float32))
    k = tf.constant(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    whole = tf.nn.conv2d_transpose(x, k, [5, 12, 12, 2], 2, "SAME")
    with small_device(max_batch=2):
        split = tf.nn.conv2d_transpose(x, k, np.array([5, 12, 12, 2]), 2, "SAME")
    assert relative(split, whole) < 1e-6


def test_the_cpus_own_out_of_memory_is_not_split_unless_asked() -> None:
    x, k = _inputs(8)
    with (
        tf.device("/CPU:0"),
        capture_events() as captured,
        small_device(max_batch=3) as device,
        pytest.raises(tf.errors.ResourceExhaustedError),
    ):
        tf.nn.conv2d(x, k, 1, "SAME")
    assert len(device.attempts) == 1
    (event,) = _splits(captured)
    assert event["event"] == "convfix.warning" and "on_cpu" in event["would"]
    with (
        convfix.override(policies={"split_batch": {"on_cpu": True}}),
        tf.device("/CPU:0"),
        small_device(max_batch=3),
    ):
        assert relative(tf.nn.conv2d(x, k, 1, "SAME"), tf.nn.conv2d(x, k, 1, "SAME")) < 1e-6
