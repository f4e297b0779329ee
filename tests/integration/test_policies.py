"""Each policy's repair: exact, in eager mode, tf.function, Keras and keras.ops, with
gradients; each policy's keys from TOML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import convfix
from convfix import events, runtime
from convfix.integrations.tensorflow import onednn_enabled
from convfix.policies import padding as padding_policy
from convfix.sweep import reference as ref
from convfix.testing import capture_events
from tests.integration.conftest import unpatched
from tests.integration.layers import RawConv

rng = np.random.default_rng(11)
conv2d = unpatched(tf.nn.conv2d)


def t(*shape: int, dtype: Any = tf.float32) -> tf.Tensor:
    return tf.constant(rng.standard_normal(shape), dtype=dtype)


# Relative to the reference of the operands' magnitudes (as in test_properties.py).
TOLERANCE = {"float16": 1e-2, "float32": 1e-4, "float64": 1e-10}


def assert_reference(y: Any, x: Any, k: Any, dtype: str, padding: str, pads: Any = None) -> None:
    """``y`` is the float64 reference of conv2d on ``x`` and ``k`` cast to ``dtype`` (and
    ``x`` zero-padded by ``pads``), computed in ``dtype``."""
    xs = tf.cast(x, dtype).numpy().astype(np.float64)
    ks = tf.cast(k, dtype).numpy().astype(np.float64)
    if pads is not None:
        xs = np.pad(xs, pads)
    expected = ref.conv(xs, ks, padding=padding)
    scale = np.linalg.norm(ref.conv(np.abs(xs), np.abs(ks), padding=padding))
    assert y.dtype.name == dtype
    assert tuple(y.shape) == expected.shape
    error = np.linalg.norm(y.numpy().astype(np.float64) - expected) / scale
    assert error <= TOLERANCE[dtype]


@pytest.fixture
def global_dtype_policy() -> Any:
    """Set Keras' global dtype policy for the test; the previous one comes back after."""
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)


# -- batch_dim ------------------------------------------------------------------------


@pytest.mark.compat
def test_batch_dim_adds_and_removes_the_batch_exactly() -> None:
    x, k = t(9, 9, 3), t(3, 3, 3, 4)
    with capture_events() as captured:
        y = tf.nn.conv2d(x, k, 2, "SAME")
    np.testing.assert_array_equal(y.numpy(), conv2d(x[None], k, 2, "SAME")[0].numpy())
    assert captured[0]["action"] == "add_batch_dim"


def test_batch_dim_refuses_when_the_input_could_lack_its_channels_instead() -> None:
    with pytest.raises(convfix.ConvFixError, match=r"missing its batch .* or its channel"):
        tf.nn.conv2d(t(32, 28, 28), t(3, 3, 1, 28), 1, "SAME")


def test_batch_dim_reads_a_last_dimension_of_one_as_a_channel() -> None:
    y = tf.nn.conv2d(t(28, 28, 1), t(3, 3, 1, 8), 1, "SAME")
    assert y.shape == (28, 28, 8)


@pytest.mark.parametrize(
    ("call", "shape"),
    [
        (lambda: tf.nn.conv1d(t(10, 3), t(3, 3, 4), 1, "SAME"), (10, 4)),
        (lambda: tf.nn.conv3d(t(5, 5, 5, 2), t(3, 3, 3, 2, 4), [1] * 5, "SAME"), (5, 5, 5, 4)),
        (lambda: tf.nn.depthwise_conv2d(t(6, 6, 3), t(3, 3, 3, 2), [1] * 4, "SAME"), (6, 6, 6)),
        (lambda: tf.nn.convolution(t(6, 6, 3), t(3, 3, 3, 4)), (4, 4, 4)),
    ],
)
def test_batch_dim_repairs_every_op_family(call: Any, shape: tuple[int, ...]) -> None:
    assert call().shape == shape


# -- padding --------------------------------------------------------------------------


ISSUE_X, ISSUE_K = (2, 40, 3, 1), (3, 5, 1, 8)  # width 3 < kernel 5; height 40 fits
ISSUE_PADS = [[0, 0], [0, 0], [1, 1], [0, 0]]


@pytest.mark.compat
def test_padding_default_pads_only_the_too_small_dimension_eager_and_traced(
    forget_learned: None,
) -> None:
    # given a VALID call whose kernel is wider than the input, but not taller
    x, k = t(*ISSUE_X), t(*ISSUE_K)
    traced = tf.function(lambda x: tf.nn.conv2d(x, k, 1, "VALID"))

    # when it runs with the default settings, eagerly and in tf.function
    with capture_events() as captured:
        eager, graph = tf.nn.conv2d(x, k, 1, "VALID"), traced(x)

    # then only the width is zero-padded (to one window); the height keeps VALID's 38
    for y in (eager, graph):
        assert y.shape == (2, 38, 1, 8)
        assert_reference(y, x, k, "float32", "VALID", pads=ISSUE_PADS)
        np.testing.assert_array_equal(y, conv2d(tf.pad(x, ISSUE_PADS), k, 1, "VALID"))
    assert [(e["reason"], e["action"], e["graph"]) for e in captured] == [
        ("kernel_larger_than_input", "zero_pad_input", False),
        ("kernel_larger_than_input", "zero_pad_input", True),
    ]
    assert captured[0]["after"] == {"input_shape": [2, 40, 5, 1], "padding": "VALID"}


def test_padding_pad_repair_is_replayed_without_being_worked_out_again(
    forget_learned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the policy's repair, counted
    applied: list[str] = []
    apply = padding_policy.PaddingPolicy.apply

    def counted(self: Any, call: Any, problem: Any) -> Any:
        applied.append(problem.reason)
        return apply(self, call, problem)

    monkeypatch.setattr(padding_policy.PaddingPolicy, "apply", counted)
    k = t(*ISSUE_K)
    inputs = [t(*ISSUE_X) for _ in range(3)]

    # when calls of one signature repeat
    with capture_events() as captured:
        results = [tf.nn.conv2d(x, k, 1, "VALID") for x in inputs]

    # then the repair was worked out once, replayed after, and exact every time
    assert applied == ["kernel_larger_than_input"]
    for x, y in zip(inputs, results):
        np.testing.assert_array_equal(y, conv2d(tf.pad(x, ISSUE_PADS), k, 1, "VALID"))
    assert captured and {e["action"] for e in captured} == {"zero_pad_input"}


@pytest.mark.compat
def test_padding_same_strategy_equals_tensorflows_same() -> None:
    x, k = t(1, 2, 2, 3), t(3, 3, 3, 4)
    with convfix.override(policies={"padding": {"strategy": "same"}}):
        y = tf.nn.conv2d(x, k, 1, "VALID")
    np.testing.assert_array_equal(y.numpy(), conv2d(x, k, 1, "SAME").numpy())


def test_padding_pad_strategy_zero_pads_to_one_output_position_split_as_same() -> None:
    x, k = t(1, 2, 4, 3), t(3, 3, 3, 4)  # height too small by 1, width fits
    with convfix.override(policies={"padding": {"strategy": "pad"}}):
        y = tf.nn.conv2d(x, k, 1, "VALID")
    by_hand = conv2d(tf.pad(x, [[0, 0], [0, 1], [0, 0], [0, 0]]), k, 1, "VALID")
    np.testing.assert_array_equal(y.numpy(), by_hand.numpy())
    assert y.shape == (1, 1, 2, 4)


def test_padding_pad_strategy_accounts_for_dilation_and_explicit_padding() -> None:
    x, k = t(1, 3, 3, 2), t(3, 3, 2, 1)  # dilated kernel 5; explicit 1+0 rows, 0 cols
    explicit = [[0, 0], [1, 0], [0, 0], [0, 0]]
    with convfix.override(policies={"padding": {"strategy": "pad"}}):
        y = tf.nn.conv2d(x, k, 1, explicit, dilations=2)
    padded = tf.pad(x, [[0, 0], [0, 1], [1, 1], [0, 0]])  # rows 4 -> 5, cols 3 -> 5
    np.testing.assert_array_equal(y.numpy(), conv2d(padded, k, 1, explicit, dilations=2).numpy())


@pytest.mark.compat
def test_padding_name_in_lower_case_is_upper_cased() -> None:
    x, k = t(1, 6, 6, 3), t(3, 3, 3, 4)
    with capture_events() as captured:
        y = tf.nn.conv2d(x, k, 1, "same")
    np.testing.assert_array_equal(y.numpy(), conv2d(x, k, 1, "SAME").numpy())
    assert captured[0]["reason"] == "padding_case"


# -- dtype ----------------------------------------------------------------------------


@pytest.mark.compat
def test_dtype_default_computes_a_float64_input_in_float32_eager_and_traced() -> None:
    # given a float64 input and a float32 filter, under Keras' default policy
    x, k = t(1, 6, 6, 3, dtype=tf.float64), t(3, 3, 3, 4)
    traced = tf.function(lambda x: tf.nn.conv2d(x, k, 1, "SAME"))

    # when the call runs, eagerly and in tf.function
    with capture_events() as captured:
        eager, graph = tf.nn.conv2d(x, k, 1, "SAME"), traced(x)

    # then the input is cast to the compute dtype, float32, and the result is float32
    for y in (eager, graph):
        assert_reference(y, x, k, "float32", "SAME")
        np.testing.assert_array_equal(y, conv2d(tf.cast(x, tf.float32), k, 1, "SAME"))
    assert [(e["action"], e["graph"]) for e in captured] == [
        ("cast_input", False),
        ("cast_input", True),
    ]
    assert captured[0]["before"] == {"input": "float64", "filter": "float32"}
    assert captured[0]["after"] == {"input": "float32", "filter": "float32"}


def test_dtype_default_casts_a_float64_filter_tensor_to_a_float32_input() -> None:
    x, k = t(1, 6, 6, 3), t(3, 3, 3, 4, dtype=tf.float64)
    with capture_events() as captured:
        y = tf.nn.conv2d(x, k, 1, "SAME")
    assert_reference(y, x, k, "float32", "SAME")
    assert captured[0]["action"] == "cast_filter"


def test_dtype_default_follows_keras_global_mixed_precision_policy(
    global_dtype_policy: Any,
) -> None:
    # given Keras' global policy mixed_float16 (compute float16; floatx stays float32)
    global_dtype_policy("mixed_float16")
    x, k = t(1, 6, 6, 3, dtype=tf.float64), t(3, 3, 3, 4)
    traced = tf.function(lambda x: tf.nn.conv2d(x, k, 1, "SAME"))

    # when a mismatched call runs outside any layer
    with capture_events() as captured:
        eager, graph = tf.nn.conv2d(x, k, 1, "SAME"), traced(x)

    # then both operands are cast to float16
    for y in (eager, graph):
        assert_reference(y, x, k, "float16", "SAME")
    assert captured[0]["action"] == "cast_input_filter"
    assert captured[0]["after"] == {"input": "float16", "filter": "float16"}


def test_dtype_replay_follows_a_changed_global_policy(global_dtype_policy: Any) -> None:
    # given a repair remembered under the float32 policy
    x, k = t(1, 6, 6, 3, dtype=tf.float64), t(3, 3, 3, 4)
    assert tf.nn.conv2d(x, k, 1, "SAME").dtype == tf.float32
    assert tf.nn.conv2d(x, k, 1, "SAME").dtype == tf.float32  # replayed

    # when the global policy changes and the same call is made again
    global_dtype_policy("mixed_float16")
    y = tf.nn.conv2d(x, k, 1, "SAME")

    # then the repair follows the new compute dtype
    assert_reference(y, x, k, "float16", "SAME")


class ConstantFilterConv(keras.layers.Layer):
    """Convolves with a float32 constant filter, not a weight: Keras autocasts the layer's
    inputs to its compute dtype, but not the constant."""

    def __init__(self, kernel: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fixed = kernel

    def call(self, inputs: Any) -> Any:
        return tf.nn.conv2d(inputs, self.fixed, 1, "SAME")


def test_dtype_default_in_a_mixed_float16_layer_computes_in_float16() -> None:
    # given a layer with the mixed_float16 policy under Keras' float32 global policy
    k = t(3, 3, 3, 4)
    layer = ConstantFilterConv(k, dtype="mixed_float16")
    x = t(2, 6, 6, 3)

    # when it is called eagerly, then in a model Keras traces
    with capture_events() as eager_events:
        eager = layer(x)
    events.reset()  # the traced call's event is written in full, not folded into the first
    with capture_events() as graph_events:
        model = keras.Sequential([keras.Input((6, 6, 3)), layer])
        graph = model.predict(x.numpy(), verbose=0)

    # then the filter is cast to the layer's compute dtype, float16, both times
    assert_reference(eager, x, k, "float16", "SAME")
    assert graph.dtype == np.float16
    assert_reference(tf.constant(graph), x, k, "float16", "SAME")
    for captured, traced in ((eager_events, False), (graph_events, True)):
        assert captured[0]["action"] == "cast_filter"
        assert captured[0]["layer"] == layer.name
        assert captured[0]["graph"] is traced
        assert captured[0]["after"] == {"input": "float16", "filter": "float16"}


def test_dtype_promote_target_keeps_the_wider_dtype() -> None:
    # given the pre-0.2 default
    x, k = t(1, 6, 6, 3, dtype=tf.float64), t(3, 3, 3, 4)
    with convfix.override(policies={"dtype": {"target": "promote"}}):
        y = tf.nn.conv2d(x, k, 1, "SAME")

    # then the filter is cast to float64 and the result is float64
    np.testing.assert_array_equal(y, conv2d(x, tf.cast(k, tf.float64), 1, "SAME"))
    assert_reference(y, x, k, "float64", "SAME")


# -- strided windows TF 2.21 answers wrongly (owned by padding) ------------------------


def test_keras_conv3d_same_stride_answers_by_definition_eager_and_traced() -> None:
    # SAME with stride 3 over 9 positions reads 0, 3, 6; TF 2.21's Conv3D outside oneDNN
    # (float64 here) reads 1, 4, 7 unless the input is cropped.
    x = np.arange(1.0, 10.0).reshape(1, 9, 1, 1, 1)
    layer = keras.layers.Conv3D(
        1, 1, strides=3, padding="same", use_bias=False, kernel_initializer="ones",
        dtype="float64",
    )  # fmt: skip
    model = keras.Sequential([keras.Input((9, 1, 1, 1), dtype="float64"), layer])
    with capture_events() as captured:
        eager = layer(x).numpy().ravel().tolist()
        traced = model.predict(x, verbose=0).ravel().tolist()
    assert eager == traced == [1.0, 4.0, 7.0]
    assert {(e["reason"], e["graph"]) for e in captured} == {
        ("negative_same_padding", False),
        ("negative_same_padding", True),
    }


def test_one_channel_width_collapsed_by_a_stride_is_run_as_its_one_window() -> None:
    x = tf.reshape(tf.range(1.0, 5.0), [2, 2, 1, 1])
    k = tf.reshape(tf.constant([10.0, 1.0]), [1, 2, 1, 1])
    with capture_events() as captured:
        y = tf.nn.conv2d(x, k, [1, 1, 2, 1], "SAME")
    assert y.numpy().ravel().tolist() == [10.0, 20.0, 30.0, 40.0]  # oneDNN: [10, 0, 30, 0]
    if onednn_enabled():  # only oneDNN answers it wrongly, so only oneDNN builds repair it
        assert captured[0]["reason"] == "single_window_one_channel"
        assert captured[0]["after"]["strides"] == [1, 1, 1, 1]
    else:
        assert captured == []


# -- layout ---------------------------------------------------------------------------


def test_layout_is_off_by_default_and_leaves_tensorflows_error() -> None:
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.nn.conv2d(t(1, 8, 8, 5), t(4, 5, 3, 3), 1, "SAME")


@pytest.mark.compat
def test_layout_transposes_a_pytorch_filter_when_that_is_the_only_valid_reading() -> None:
    x, k_oihw = t(1, 8, 8, 5), t(4, 5, 3, 3)
    with convfix.override(policies={"layout": "fix"}):
        y = tf.nn.conv2d(x, k_oihw, 1, "SAME")
    by_hand = conv2d(x, tf.transpose(k_oihw, [2, 3, 1, 0]), 1, "SAME")
    np.testing.assert_array_equal(y.numpy(), by_hand.numpy())


def test_layout_transposes_a_channels_first_input_and_the_result_back() -> None:
    x_nchw, k = t(1, 3, 8, 8), t(3, 3, 3, 4)
    with convfix.override(policies={"layout": "fix"}):
        y = tf.nn.conv2d(x_nchw, k, 1, "SAME")
    by_hand = tf.transpose(conv2d(tf.transpose(x_nchw, [0, 2, 3, 1]), k, 1, "SAME"), [0, 3, 1, 2])
    np.testing.assert_array_equal(y.numpy(), by_hand.numpy())


def test_layout_never_touches_a_valid_grouped_convolution() -> None:
    x, k = t(1, 8, 8, 6), t(3, 3, 3, 6)  # 6 = 2 groups of 3: valid
    with convfix.override(policies={"layout": "fix"}), capture_events() as captured:
        y = tf.nn.conv2d(x, k, 1, "SAME")
    np.testing.assert_array_equal(y.numpy(), conv2d(x, k, 1, "SAME").numpy())
    assert captured == []


def test_layout_refuses_when_several_readings_are_valid() -> None:
    x, k = t(1, 6, 4, 4), t(2, 2, 3, 3)  # OIHW reading (in=2 | 4) and NCHW (C=6, 3 | 6)
    with convfix.override(policies={"layout": "fix"}), pytest.raises(convfix.ConvFixError):
        tf.nn.conv2d(x, k, 1, "SAME")


# -- everywhere: tf.function, keras.ops, Keras layers, gradients -----------------------


@pytest.mark.compat
def test_repairs_apply_inside_tf_function() -> None:
    k = t(3, 3, 3, 4)

    @tf.function
    def f(x: Any) -> Any:
        return tf.nn.conv2d(x, k, 1, "VALID")

    y = f(t(9, 9, 3, dtype=tf.float64))  # missing batch, float64
    assert y.shape == (7, 7, 4) and y.dtype == tf.float32  # Keras' compute dtype


@pytest.mark.skipif(not hasattr(keras, "ops"), reason="keras.ops exists from Keras 3")
def test_repairs_apply_through_keras_ops_conv() -> None:
    x, k = t(1, 2, 2, 3, dtype=tf.float64), t(3, 3, 3, 4)
    y = keras.ops.conv(x, k, padding="valid")
    assert y.shape == (1, 1, 1, 4) and y.dtype == tf.float32  # zero-padded, compute dtype


@pytest.mark.compat
def test_keras_model_with_a_float64_custom_conv_trains_with_fit() -> None:
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3), dtype="float64"),
            RawConv(filters=2),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    x = rng.standard_normal((16, 6, 6, 3))
    y = rng.standard_normal((16, 1))
    before = model.layers[0].kernel.numpy().copy()
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(before, model.layers[0].kernel.numpy())  # gradients arrived


@pytest.mark.parametrize(
    "repair",
    [
        lambda x, k: tf.nn.conv2d(tf.cast(x, tf.float64), k, 1, "SAME"),
        lambda x, k: tf.nn.conv2d(x[0], k, 1, "SAME"),
        lambda x, k: tf.nn.conv2d(x[:, :2, :2], k, 1, "VALID"),
        lambda x, k: tf.nn.conv2d(x, k, 1, "same"),
    ],
    ids=["dtype", "batch_dim", "padding", "padding_case"],
)
def test_gradients_flow_through_every_repair(repair: Any) -> None:
    x = tf.Variable(t(1, 5, 5, 3))
    k = tf.Variable(t(3, 3, 3, 4))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(repair(x, k), tf.float32) ** 2)
    gx, gk = tape.gradient(loss, [x, k])
    assert gx is not None and gk is not None
    assert float(tf.reduce_sum(tf.abs(gk))) > 0


# -- TOML -----------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Any:
    previous = runtime.config()

    def load(text: str) -> None:
        path = tmp_path / "convfix.toml"
        path.write_text(text)
        convfix.patch(path)

    yield load
    runtime.set_config(previous)


def test_dtype_keys_from_toml(config_file: Any) -> None:
    config_file('[policies.dtype]\ntarget = "promote"\n')
    assert (
        tf.nn.conv2d(t(1, 5, 5, 3, dtype=tf.float64), t(3, 3, 3, 2), 1, "SAME").dtype == tf.float64
    )


def test_padding_keys_from_toml(config_file: Any) -> None:
    config_file('[policies.padding]\nstrategy = "same"\n')
    assert tf.nn.conv2d(t(1, 2, 2, 3), t(3, 3, 3, 2), 1, "VALID").shape == (1, 2, 2, 2)


def test_batch_dim_mode_from_toml(config_file: Any) -> None:
    config_file('[policies.batch_dim]\nmode = "strict"\n')
    with pytest.raises(convfix.ConvFixError, match=r"policies\.batch_dim\.mode = \"fix\""):
        tf.nn.conv2d(t(5, 5, 3), t(3, 3, 3, 2), 1, "SAME")


def test_layout_on_from_the_aggressive_preset(config_file: Any) -> None:
    config_file('extends = "aggressive"\n')
    assert tf.nn.conv2d(t(1, 8, 8, 5), t(4, 5, 3, 3), 1, "SAME").shape == (1, 8, 8, 4)
    # aggressive also pads rather than switching to SAME
    assert tf.nn.conv2d(t(1, 2, 2, 3), t(3, 3, 3, 2), 1, "VALID").shape == (1, 1, 1, 2)


def test_observe_preset_warns_and_changes_nothing_tensorflow_answers(config_file: Any) -> None:
    config_file('extends = "observe"\n')
    with capture_events() as captured, pytest.raises(tf.errors.InvalidArgumentError):
        tf.nn.conv2d(t(1, 5, 5, 3, dtype=tf.float64), t(3, 3, 3, 2), 1, "SAME")
    assert captured[0]["event"] == "convfix.warning"


def test_strict_preset_raises_naming_the_key(config_file: Any) -> None:
    config_file('extends = "strict"\n')
    with pytest.raises(convfix.ConvFixError, match=r"policies\.padding\.mode = \"fix\""):
        tf.nn.conv2d(t(1, 6, 6, 3), t(3, 3, 3, 2), 1, "same")
