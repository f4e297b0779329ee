"""Where real training runs: tf.function traces, Keras fit / evaluate / predict, XLA,
SavedModels reloaded in a process without convfix, and many threads at once."""

from __future__ import annotations

import inspect
import json
import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.ops import gen_nn_ops, nn_ops

import convfix
from convfix import events
from convfix.integrations.entry import MARK
from convfix.testing import capture_events
from tests.integration.conftest import unpatched
from tests.integration.layers import RawConv
from tests.subproc import run_python

rng = np.random.default_rng(23)
conv2d = unpatched(tf.nn.conv2d)


def t(*shape: int, dtype: Any = tf.float32) -> tf.Tensor:
    return tf.constant(rng.standard_normal(shape), dtype=dtype)


K32 = t(3, 3, 3, 4)


def _callsite(function: Any, text: str) -> str:
    """``"path:line"`` of the line of ``function``'s source that contains ``text``."""
    lines, first = inspect.getsourcelines(function)
    offset = next(i for i, line in enumerate(lines) if text in line)
    return f"{function.__code__.co_filename}:{first + offset}"


def _interventions(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in captured if e["event"] == events.INTERVENTION]


class Conv(keras.layers.Layer):
    """A custom layer calling tf.nn.conv2d with the padding it is given (autocast off, like
    RawConv); by hand, ``cast_input`` casts the input to the layer's compute dtype and
    ``pads`` zero-pads it first."""

    def __init__(
        self,
        padding: str = "SAME",
        cast_input: bool = False,
        pads: list[list[int]] | None = None,
        filters: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(autocast=False, **kwargs)
        self.padding, self.cast_input, self.pads = padding, cast_input, pads
        self.filters = filters

    def build(self, input_shape: Any) -> None:
        shape = (3, 3, int(input_shape[-1]), self.filters)
        self.kernel = self.add_weight(shape=shape, name="kernel")

    def call(self, inputs: Any) -> Any:
        if self.cast_input:
            inputs = tf.cast(inputs, self.compute_dtype)
        if self.pads is not None:
            inputs = tf.pad(inputs, self.pads)
        return tf.nn.conv2d(inputs, self.kernel, 1, self.padding)


# A 2x2 input zero-padded for a 3x3 kernel, as the padding policy's default does it.
PADS_2X2 = [[0, 0], [0, 1], [0, 1], [0, 0]]

# The custom layer convfix repairs, the same layer repaired by hand, input shape and dtype,
# and the reason convfix gives.
REPAIRED_LAYERS = [
    pytest.param(
        RawConv,
        lambda: Conv("SAME", cast_input=True),
        (6, 6, 3),
        "float64",
        "dtype_mismatch",
        id="dtype",
    ),
    pytest.param(
        lambda: Conv("valid"),
        lambda: Conv("VALID"),
        (6, 6, 3),
        "float32",
        "padding_case",
        id="padding_case",
    ),
    pytest.param(
        lambda: Conv("VALID"),
        lambda: Conv("VALID", pads=PADS_2X2),
        (2, 2, 3),
        "float32",
        "kernel_larger_than_input",
        id="input_below_kernel",
    ),
]
REPAIRED_LAYER_ARGS = ("make_bad", "make_fixed", "shape", "dtype", "reason")


def _model(
    conv: keras.layers.Layer, shape: tuple[int, ...], dtype: str, jit_compile: bool = False
) -> keras.Model:
    """Input -> conv -> Flatten -> Dense(1), functional, compiled for SGD on MSE."""
    inputs = keras.Input(shape, dtype=dtype)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(conv(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    return model


def _data(shape: tuple[int, ...], n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((n, *shape)), rng.standard_normal((n, 1))


def _by_hand_twin(model: keras.Model, make_conv: Any, jit_compile: bool = False) -> keras.Model:
    """The same model, weights included, with its conv layer repaired by hand; built
    without convfix so that nothing but the hand repair is in it."""
    shape, dtype = tuple(model.inputs[0].shape[1:]), model.inputs[0].dtype
    with convfix.override(mode="off"):
        twin = _model(make_conv(), shape, dtype, jit_compile)
    twin.set_weights(model.get_weights())
    return twin


# -- tf.function ----------------------------------------------------------------------


def _dtype_repair_body(x: Any) -> Any:
    return tf.nn.conv2d(x, K32, 1, "SAME")  # float64 x, float32 filter: repaired


def test_traced_repair_is_counted_once_per_trace_never_per_step() -> None:
    # given a traced function whose conv is repaired
    step = tf.function(_dtype_repair_body)
    x = t(2, 6, 6, 3, dtype=tf.float64)
    # when it runs 50 steps
    with capture_events() as captured:
        for _ in range(50):
            y = step(x)
    # then the repair was written once, with graph true, and counted once: one trace
    (event,) = _interventions(captured)
    assert event["graph"] is True
    assert event["reason"] == "dtype_mismatch"
    assert list(events.counts().values()) == [1]
    np.testing.assert_array_equal(y.numpy(), conv2d(tf.cast(x, tf.float32), K32, 1, "SAME"))


def test_retrace_for_a_new_input_shape_adds_one_to_the_count_and_writes_nothing() -> None:
    step = tf.function(_dtype_repair_body)
    step(t(2, 6, 6, 3, dtype=tf.float64))
    with capture_events() as captured:
        for _ in range(50):
            step(t(2, 7, 7, 3, dtype=tf.float64))  # one retrace, then 49 steps
            step(t(2, 6, 6, 3, dtype=tf.float64))  # the first trace again
    assert _interventions(captured) == []  # its key was written at the first trace
    assert list(events.counts().values()) == [2]
    assert step.experimental_get_tracing_count() == 2


def test_traced_repair_callsite_is_the_users_line_not_autographs_generated_file() -> None:
    with capture_events() as captured:
        tf.function(_dtype_repair_body)(t(1, 5, 5, 3, dtype=tf.float64))
    (event,) = _interventions(captured)
    assert event["callsite"] == _callsite(_dtype_repair_body, "tf.nn.conv2d")
    assert "__autograph_generated_file" not in event["callsite"]


def test_repair_inside_a_python_if_on_a_tensor_condition_names_the_users_line() -> None:
    def branchy(x: Any) -> Any:
        if tf.reduce_sum(x) > 0:  # a tensor condition: AutoGraph turns this into tf.cond
            y = tf.nn.conv2d(x, K32, 1, "same")
        else:
            y = -tf.nn.conv2d(x, K32, 1, "SAME")
        return y

    step = tf.function(branchy)
    x = tf.abs(t(1, 6, 6, 3))
    with capture_events() as captured:
        y = step(x)
    graph_ops = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
    assert graph_ops & {"If", "StatelessIf"}  # converted, both branches traced
    (event,) = _interventions(captured)
    assert event["reason"] == "padding_case" and event["graph"] is True
    assert event["callsite"] == _callsite(branchy, '"same"')
    np.testing.assert_array_equal(y.numpy(), conv2d(x, K32, 1, "SAME").numpy())


def test_retracing_never_stacks_convfix_wrappers() -> None:
    # given a function retraced for several shapes and dtypes, and a second one
    step = tf.function(_dtype_repair_body)
    for size in (5, 6, 7):
        for dtype in (tf.float32, tf.float64):
            step(t(1, size, size, 3, dtype=dtype))
    tf.function(lambda x: tf.nn.conv2d(x, K32, 1, "same"))(t(1, 5, 5, 3))
    # then tf.nn.conv2d is still exactly one wrapper around TensorFlow's own function
    original = getattr(tf.nn.conv2d, MARK)
    assert not hasattr(original, MARK)
    assert original is nn_ops.conv2d_v2


@pytest.mark.parametrize(
    ("padding", "spec", "bad_input"),
    [
        ("same", [None, 8, 8, 3], [0, 8, 8, 3]),  # unknown batch: EnsureShape expected
        ("valid", [None, None, None, 3], [1, 2, 2, 3]),  # unknown sizes: Assert expected
    ],
    ids=["empty_batch", "input_below_kernel"],
)
def test_call_repaired_in_a_graph_keeps_the_run_time_check_for_unknown_sizes(
    padding: str, spec: list[int | None], bad_input: list[int]
) -> None:
    @tf.function(input_signature=[tf.TensorSpec(spec)])
    def step(x: Any) -> Any:
        return tf.nn.conv2d(x, K32, 1, padding)

    with pytest.raises(tf.errors.InvalidArgumentError):
        step(tf.ones(bad_input))


# -- Keras fit / evaluate / predict ---------------------------------------------------


@pytest.mark.compat
@pytest.mark.parametrize(REPAIRED_LAYER_ARGS, REPAIRED_LAYERS)
def test_sequential_model_with_a_repaired_custom_conv_trains_evaluates_and_predicts(
    make_bad: Any, make_fixed: Any, shape: tuple[int, ...], dtype: str, reason: str
) -> None:
    # given a Sequential model whose custom conv layer makes a call convfix repairs
    with capture_events() as captured:
        conv = make_bad()
        model = keras.Sequential(
            [keras.Input(shape, dtype=dtype), conv, keras.layers.Flatten(), keras.layers.Dense(1)]
        )
        model.compile(optimizer="sgd", loss="mse")
        x, y = _data(shape)
        before = conv.kernel.numpy().copy()
        # when it trains 2 epochs of 4 steps, then evaluates and predicts 4 steps each
        history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
        loss = model.evaluate(x, y, batch_size=4, verbose=0)
        predicted = model.predict(x, batch_size=4, verbose=0)
    # then it trained
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all() and np.isfinite(loss)
    assert not np.array_equal(before, conv.kernel.numpy())  # gradients reached the kernel
    assert predicted.shape == (16, 1) and np.isfinite(predicted).all()
    # and the repair was written once, in a graph, naming the layer; counted once per trace
    # (Keras 3: model build, fit, evaluate, predict: 4; Keras 2 traces its build once more:
    # 5), never per step (16)
    (event,) = _interventions(captured)
    assert (event["reason"], event["graph"], event["layer"]) == (reason, True, conv.name)
    assert event["callsite"] == _callsite(type(conv).call, "tf.nn.conv2d")
    assert list(events.counts().values()) == [4 if keras.__version__.startswith("3.") else 5]


@pytest.mark.parametrize(REPAIRED_LAYER_ARGS, REPAIRED_LAYERS)
def test_predict_of_a_repaired_model_equals_the_repair_done_by_hand(
    make_bad: Any, make_fixed: Any, shape: tuple[int, ...], dtype: str, reason: str
) -> None:
    # given a functional model with the bad call, and its twin repaired by hand
    model = _model(make_bad(), shape, dtype)
    twin = _by_hand_twin(model, make_fixed)
    x, _ = _data(shape)
    # when both predict (the twin without convfix)
    predicted = model.predict(x, verbose=0)
    with convfix.override(mode="off"):
        by_hand = twin.predict(x, verbose=0)
    # then convfix's repair is exactly the hand repair
    np.testing.assert_array_equal(predicted, by_hand)


def _builtin_conv_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.DepthwiseConv2D(3)(h)
    h = keras.layers.SeparableConv2D(4, 3)(h)
    h = keras.layers.Conv2DTranspose(2, 3)(h)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_builtin_conv_layers_on_float64_data_train_exactly_as_without_convfix() -> None:
    # given built-in conv layers (Keras casts the float64 batch itself) and a twin
    with capture_events() as captured:
        model = _builtin_conv_model()
    with convfix.override(mode="off"):
        twin = keras.models.clone_model(model)
        twin.compile(optimizer="sgd", loss="mse")
    twin.set_weights(model.get_weights())
    x, y = _data((8, 8, 3))
    # when one trains with convfix and the other without
    with capture_events() as training:
        history = model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    with convfix.override(mode="off"):
        without = twin.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    # then convfix found nothing to do and changed nothing, bit for bit
    assert captured + training == []
    assert history.history["loss"] == without.history["loss"]
    for ours, theirs in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_builtin_conv_layers_predict_exactly_as_the_same_model_without_convfix() -> None:
    # given a trained model of built-in conv layers and a float64 batch
    model = _builtin_conv_model()
    x, y = _data((8, 8, 3))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    # when it predicts and evaluates with convfix, then retraced without it
    with capture_events() as captured:
        predicted = model.predict(x, verbose=0)
        loss = model.evaluate(x, y, verbose=0)
    with convfix.override(mode="off"):
        model.make_predict_function(force=True)  # traced again, inside the override
        model.make_test_function(force=True)
        without = model.predict(x, verbose=0)
        loss_without = model.evaluate(x, y, verbose=0)
    # then nothing was repaired and the answers are the same, bit for bit
    assert captured == []
    np.testing.assert_array_equal(predicted, without)
    assert loss == loss_without


# -- XLA ------------------------------------------------------------------------------


def test_jit_compiled_model_trains_and_predicts_with_the_dtype_repair_applied() -> None:
    # given a float64 model with RawConv, compiled for XLA
    with capture_events() as captured:
        model = _model(RawConv(), (6, 6, 3), "float64", jit_compile=True)
        conv = model.layers[1]
        before = conv.kernel.numpy().copy()
        x, y = _data((6, 6, 3))
        # when it trains and predicts
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        predicted = model.predict(x, verbose=0)
    # then it trained, the repair was traced into the XLA graph...
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(before, conv.kernel.numpy())
    (event,) = _interventions(captured)
    assert (event["reason"], event["graph"], event["layer"]) == ("dtype_mismatch", True, conv.name)
    # ...and predicts exactly as the input cast by hand, also under XLA
    twin = _by_hand_twin(model, lambda: Conv("SAME", cast_input=True), jit_compile=True)
    with convfix.override(mode="off"):
        np.testing.assert_array_equal(predicted, twin.predict(x, verbose=0))


@pytest.mark.parametrize(
    ("repaired", "by_hand", "x", "reason"),
    [
        (
            lambda x: tf.nn.conv2d(x, K32, 1, "SAME"),
            lambda x: conv2d(tf.cast(x, tf.float32), K32, 1, "SAME"),
            t(2, 6, 6, 3, dtype=tf.float64),
            "dtype_mismatch",
        ),
        (
            lambda x: tf.nn.conv2d(x, K32, 1, "same"),
            lambda x: conv2d(x, K32, 1, "SAME"),
            t(2, 6, 6, 3),
            "padding_case",
        ),
        (
            lambda x: tf.nn.conv2d(x, K32, 1, "SAME"),
            lambda x: conv2d(x[None], K32, 1, "SAME")[0],
            t(6, 6, 3),
            "missing_batch_dim",
        ),
        (
            lambda x: tf.nn.conv2d(x, K32, 1, "VALID"),
            lambda x: conv2d(tf.pad(x, PADS_2X2), K32, 1, "VALID"),
            t(1, 2, 2, 3),
            "kernel_larger_than_input",
        ),
    ],
    ids=["dtype", "padding_case", "batch_dim", "too_small"],
)
def test_jit_compiled_function_applies_the_repair(
    repaired: Any, by_hand: Any, x: tf.Tensor, reason: str
) -> None:
    with capture_events() as captured:
        y = tf.function(repaired, jit_compile=True, autograph=False)(x)
    want = tf.function(by_hand, jit_compile=True, autograph=False)(x)
    np.testing.assert_array_equal(y.numpy(), want.numpy())
    (event,) = _interventions(captured)
    assert (event["reason"], event["graph"]) == (reason, True)


def test_jit_compiled_function_answers_a_too_small_input_of_unknown_size_correctly() -> None:
    # Under XLA convfix's run-time Assert compiles to nothing, and is not needed: XLA does not
    # use oneDNN, so a VALID input below the kernel gets the correct empty result, not garbage.
    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, None, None, 3])])
    def step(x: Any) -> Any:
        return tf.nn.conv2d(x, K32, 1, "VALID")

    assert step(tf.ones([1, 5, 5, 3])).shape == (1, 3, 3, 4)
    assert step(tf.ones([1, 2, 2, 3])).shape == (1, 0, 0, 4)


# -- SavedModel, reloaded without convfix ---------------------------------------------


class Float64Served(tf.Module):
    """A served function whose float32 filter meets float64 inputs: repaired at trace."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]))

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float64)])
    def __call__(self, x: Any) -> Any:
        return tf.nn.conv2d(x, self.kernel, 1, "SAME")


def _fixed_input() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 8, 8, 3))


def test_served_function_has_the_cast_baked_into_its_graph() -> None:
    served = Float64Served()
    with capture_events() as captured:
        graph = served.__call__.get_concrete_function().graph
    conv = next(op for op in graph.get_operations() if op.type == "Conv2D")
    assert [i.dtype for i in conv.inputs] == [tf.float32, tf.float32]
    assert conv.inputs[0].op.type == "Cast"
    (event,) = _interventions(captured)
    assert (event["action"], event["graph"]) == ("cast_input", True)


_CHILD = """
import json, sys
import numpy as np
import tensorflow as tf

loaded = tf.saved_model.load({path!r})
x = np.random.default_rng(0).standard_normal((4, 8, 8, 3))
np.save({out!r}, {call}(x).numpy())
print(json.dumps({{"convfix_imported": "convfix" in sys.modules}}))
"""


def _run_without_convfix(path: Path, call: str) -> np.ndarray:
    """Load the SavedModel at ``path`` in a fresh interpreter that never imports convfix,
    and run ``call`` (an expression on ``loaded``) on the fixed input there."""
    out = path.parent / "result.npy"
    child = run_python(_CHILD.format(path=str(path), out=str(out), call=call))
    assert child.returncode == 0, child.stderr[-3000:]
    assert json.loads(child.stdout.strip().splitlines()[-1]) == {"convfix_imported": False}
    return np.load(out)


@pytest.mark.subprocess
def test_saved_model_repaired_at_trace_runs_bit_identically_without_convfix(
    tmp_path: Path,
) -> None:
    # given a SavedModel whose served function was repaired at trace, and its result here
    module = Float64Served()
    here = module(_fixed_input()).numpy()
    tf.saved_model.save(module, str(tmp_path / "saved"))
    # when a fresh interpreter that never imports convfix loads and runs it
    there = _run_without_convfix(tmp_path / "saved", "loaded")
    # then the cast is in the saved graph: the same float32 result, bit for bit
    assert there.dtype == np.float32
    np.testing.assert_array_equal(there, here)


@pytest.mark.subprocess
def test_keras_export_of_a_repaired_model_runs_bit_identically_without_convfix(
    tmp_path: Path,
) -> None:
    # given a float64 model with RawConv (repaired at trace), exported, and its result here
    model = _model(RawConv(), (8, 8, 3), "float64")
    x = _fixed_input()
    # model.predict's graph rounds the float32 Dense 1 ulp differently (with or without
    # convfix): the export serves the model's own call, so compare with that
    here = model(x, training=False).numpy()
    quiet = {"verbose": False} if keras.__version__.startswith("3.") else {}  # Keras 2: none
    model.export(str(tmp_path / "exported"), **quiet)
    # when a fresh interpreter that never imports convfix serves it
    there = _run_without_convfix(tmp_path / "exported", "loaded.serve")
    # then the result is the same, bit for bit
    np.testing.assert_array_equal(there, here)


# -- threads --------------------------------------------------------------------------


def _eager_repaired(x: Any) -> Any:
    return tf.nn.conv2d(x, K32, 1, "SAME")  # float64 x: a dtype repair on every call


def _eager_healthy(x: Any) -> Any:
    return tf.nn.conv2d(x, K32, 1, "SAME")  # float32 x: untouched


def _traced_repaired(x: Any) -> Any:
    return tf.nn.conv2d(x, K32, 1, "SAME")  # float64 x: a dtype repair at each trace


def test_threads_tracing_and_running_eagerly_get_right_results_and_exact_counts() -> None:
    # given 8 threads, each with its own tf.function and input shape, and the expected
    # results computed beforehand with TensorFlow alone
    threads, steps = 8, 20
    x64 = [t(1, 5 + i, 5 + i, 3, dtype=tf.float64) for i in range(threads)]
    x32 = [tf.cast(x, tf.float32) for x in x64]
    want64 = [conv2d(tf.cast(x, tf.float32), K32, 1, "SAME").numpy() for x in x64]  # repaired
    want32 = [conv2d(x, K32, 1, "SAME").numpy() for x in x32]
    start = threading.Barrier(threads, timeout=60)
    wrong: list[str] = []
    raised: list[BaseException] = []

    def work(i: int) -> None:
        try:
            step = tf.function(_traced_repaired)
            start.wait()
            for _ in range(steps):
                for name, y, want in [
                    ("traced", step(x64[i]), want64[i]),
                    ("eager repaired", _eager_repaired(x64[i]), want64[i]),
                    ("eager healthy", _eager_healthy(x32[i]), want32[i]),
                ]:
                    if not np.array_equal(y.numpy(), want):
                        wrong.append(f"thread {i}: {name}")
        except BaseException as error:
            raised.append(error)

    # when they all run at once
    with capture_events() as captured:
        workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
    # then every result is right, nothing raised, and every repair is counted exactly:
    # eager ones per call, traced ones per trace (one per thread)
    assert not any(worker.is_alive() for worker in workers)
    assert raised == [] and wrong == []
    eager = (_callsite(_eager_repaired, "tf.nn"), None, "dtype", "dtype_mismatch")
    traced = (_callsite(_traced_repaired, "tf.nn"), None, "dtype", "dtype_mismatch")
    assert events.counts() == {eager: threads * steps, traced: threads}
    written = sorted((e["callsite"], e["graph"]) for e in _interventions(captured))
    assert written == sorted([(eager[0], False), (traced[0], True)])


def test_repaired_call_completes_while_another_thread_is_inside_a_tensorflow_conv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a gate beneath convfix, in TensorFlow's own op function, that holds one thread
    # inside its convolution until released (with timeouts: the test can never hang)
    original = gen_nn_ops.conv2d
    held: set[int] = set()
    inside, release = threading.Event(), threading.Event()

    def gated(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() in held:
            inside.set()
            release.wait(timeout=60)
        return original(*args, **kwargs)

    monkeypatch.setattr(gen_nn_ops, "conv2d", gated)
    k = t(3, 3, 3, 4)
    slow_x, fast_x = t(16, 16, 3), t(1, 6, 6, 3, dtype=tf.float64)
    results: dict[str, Any] = {}
    done = {"slow": threading.Event(), "fast": threading.Event()}

    def run(name: str, x: Any) -> None:
        if name == "slow":
            held.add(threading.get_ident())
        try:
            results[name] = tf.nn.conv2d(x, k, 1, "SAME")  # both repaired by convfix
        except BaseException as error:
            results[name] = error
        done[name].set()

    slow = threading.Thread(target=run, args=("slow", slow_x), daemon=True)
    fast = threading.Thread(target=run, args=("fast", fast_x), daemon=True)
    try:
        # when the slow call is inside TensorFlow and another thread makes a repaired call
        slow.start()
        assert inside.wait(timeout=30), "the slow call never reached TensorFlow"
        fast.start()
        # then the other call completes while the first is still inside TensorFlow
        assert done["fast"].wait(timeout=30), "a repaired call waited for another thread"
        assert not done["slow"].is_set()
    finally:
        release.set()
        slow.join(timeout=60)
        fast.join(timeout=60)
    np.testing.assert_array_equal(
        results["fast"].numpy(), conv2d(tf.cast(fast_x, tf.float32), k, 1, "SAME").numpy()
    )
    np.testing.assert_array_equal(
        results["slow"].numpy(), conv2d(slow_x[None], k, 1, "SAME")[0].numpy()
    )
    assert sorted(reason for (_, _, _, reason) in events.counts()) == [
        "dtype_mismatch",
        "missing_batch_dim",
    ]
