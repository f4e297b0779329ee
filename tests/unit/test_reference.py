"""The NumPy reference the property tests trust, pinned to hand-computed cases (no TF)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from convfix.sweep import reference as ref


def line(values: list[float]) -> np.ndarray:
    """A 1-D signal as a [batch 1, width, 1 channel] input."""
    return np.asarray(values, np.float64).reshape(1, -1, 1)


def taps(values: list[float]) -> np.ndarray:
    """A 1-D kernel as a [width, 1, 1] filter."""
    return np.asarray(values, np.float64).reshape(-1, 1, 1)


def flat(y: np.ndarray) -> list[float]:
    return [float(v) for v in y.ravel()]


def test_valid_cross_correlation_of_a_line() -> None:
    assert flat(ref.conv(line([1, 2, 3]), taps([1, 1]), padding="VALID")) == [3, 5]


def test_kernel_is_not_flipped() -> None:
    assert flat(ref.conv(line([1, 2, 3]), taps([1, 10]), padding="VALID")) == [21, 32]


def test_same_padding_with_stride_two_pads_evenly() -> None:
    # out = ceil(5 / 2) = 3, total = 2 * 2 + 3 - 5 = 2: one zero each side.
    y = ref.conv(line([1, 2, 3, 4, 5]), taps([1, 1, 1]), strides=2, padding="SAME")
    assert flat(y) == [3, 9, 9]


def test_same_padding_puts_the_odd_zero_after() -> None:
    # out = 2, total = 2 + 3 - 4 = 1: TensorFlow pads 0 before, 1 after.
    y = ref.conv(line([1, 2, 3, 4]), taps([1, 1, 1]), strides=2, padding="SAME")
    assert flat(y) == [6, 7]
    assert ref.same_pads(4, 3, 2, 1) == (0, 1)


def test_lower_case_padding_means_the_same() -> None:
    x, f = line([1, 2, 3, 4]), taps([1, 2, 3])
    assert flat(ref.conv(x, f, padding="same")) == flat(ref.conv(x, f, padding="SAME"))


def test_dilation_spreads_the_taps() -> None:
    y = ref.conv(line([1, 2, 3, 4, 5]), taps([1, 10]), dilations=2, padding="VALID")
    assert flat(y) == [31, 42, 53]


def test_dilated_same_padding_covers_the_dilated_kernel() -> None:
    # dilated kernel 3 at stride 1: one zero each side.
    y = ref.conv(line([1, 2, 3]), taps([1, 10]), dilations=2, padding="SAME")
    assert flat(y) == [20, 31, 2]


def test_explicit_padding_for_every_dimension() -> None:
    y = ref.conv(line([1, 2, 3]), taps([1, 1]), padding=[[0, 0], [1, 2], [0, 0]])
    assert flat(y) == [1, 3, 5, 3, 0]


def test_explicit_padding_for_spatial_dimensions_only() -> None:
    y = ref.conv(line([1, 2, 3]), taps([1, 1]), padding=[[1, 2]])
    assert flat(y) == [1, 3, 5, 3, 0]


def test_grouped_convolution_keeps_groups_apart() -> None:
    # 2 input channels, filter in-channels 1: two groups, two outputs per group.
    x = np.asarray([1.0, 2.0]).reshape(1, 1, 2)
    f = np.asarray([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 4)
    assert flat(ref.conv(x, f)) == [1, 2, 6, 8]


def test_ungrouped_convolution_sums_channels() -> None:
    x = np.asarray([1.0, 2.0]).reshape(1, 1, 2)
    f = np.asarray([[3.0], [5.0]]).reshape(1, 2, 1)
    assert flat(ref.conv(x, f)) == [13]


def test_depthwise_orders_outputs_channel_major() -> None:
    x = np.asarray([2.0, 3.0]).reshape(1, 1, 1, 2)
    f = np.asarray([[10.0, 20.0], [30.0, 40.0]]).reshape(1, 1, 2, 2)
    assert flat(ref.conv(x, f, kind="depthwise")) == [20, 40, 90, 120]


def test_separable_is_depthwise_then_pointwise() -> None:
    x = np.asarray([2.0, 3.0]).reshape(1, 1, 1, 2)
    f = np.asarray([[10.0, 20.0], [30.0, 40.0]]).reshape(1, 1, 2, 2)
    pointwise = np.asarray([1.0, 0.0, 1.0, 0.5]).reshape(1, 1, 4, 1)
    assert flat(ref.conv(x, f, kind="separable", pointwise=pointwise)) == [20 + 90 + 60]


def test_transpose_scatters_each_input_over_the_kernel() -> None:
    y = ref.conv_transpose(line([1, 2]), taps([1, 1]), [1, 4, 1], strides=2, padding="VALID")
    assert flat(y) == [1, 1, 2, 2]


def test_transpose_of_same_crops_the_forward_padding() -> None:
    # forward SAME on width 3 with kernel 3 pads one each side; the transpose crops it.
    y = ref.conv_transpose(line([1, 2, 3]), taps([1, 10, 100]), [1, 3, 1], padding="SAME")
    assert flat(y) == [1 * 10 + 2 * 1, 1 * 100 + 2 * 10 + 3 * 1, 2 * 100 + 3 * 10]


def test_empty_batch_gives_an_empty_result_of_the_right_shape() -> None:
    y = ref.conv(np.zeros([0, 5, 5, 3]), np.ones([3, 3, 3, 4]), padding="SAME")
    assert y.shape == (0, 5, 5, 4)


def test_output_shape_of_strided_valid() -> None:
    assert ref.output_shape([1, 10, 10, 3], [3, 3, 3, 4], strides=3) == [1, 3, 3, 4]


def test_output_shape_refuses_a_kernel_larger_than_the_input() -> None:
    with pytest.raises(ValueError):
        ref.output_shape([1, 1, 1, 3], [3, 3, 3, 4], padding="VALID")


def test_output_shape_refuses_channels_that_do_not_divide() -> None:
    with pytest.raises(ValueError):
        ref.output_shape([1, 5, 5, 5], [3, 3, 3, 4], padding="SAME")


def test_output_shape_refuses_a_transpose_output_shape_that_does_not_fit() -> None:
    with pytest.raises(ValueError):
        ref.output_shape([1, 3, 1], [2, 1, 1], kind="transpose", out_shape=[1, 9, 1])


def naive_conv2d(
    x: np.ndarray, f: np.ndarray, strides: tuple[int, int], pads: list[tuple[int, int]], d: int
) -> np.ndarray:
    """conv2d straight from the definition, one output element at a time."""
    batch, height, width, channels = x.shape
    kh, kw, f_in, f_out = f.shape
    per_group = f_out // (channels // f_in)
    rows = (height + sum(pads[0]) - (kh - 1) * d - 1) // strides[0] + 1
    cols = (width + sum(pads[1]) - (kw - 1) * d - 1) // strides[1] + 1
    y = np.zeros([batch, rows, cols, f_out])
    for b, i, j, o in itertools.product(range(batch), range(rows), range(cols), range(f_out)):
        group = o // per_group
        for a, c, k in itertools.product(range(kh), range(kw), range(f_in)):
            r = i * strides[0] - pads[0][0] + a * d
            s = j * strides[1] - pads[1][0] + c * d
            if 0 <= r < height and 0 <= s < width:
                y[b, i, j, o] += x[b, r, s, group * f_in + k] * f[a, c, k, o]
    return y


@pytest.mark.parametrize("seed", range(12))
def test_conv2d_matches_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups, f_in = rng.integers(1, 3), rng.integers(1, 3)
    f = rng.normal(size=[*rng.integers(1, 4, size=2), f_in, groups * rng.integers(1, 3)])
    x = rng.normal(size=[2, *rng.integers(4, 8, size=2), groups * f_in])
    strides = tuple(int(v) for v in rng.integers(1, 3, size=2))
    dilation = int(rng.integers(1, 3))
    padding = "SAME" if seed % 2 else [[0, 0], [1, 0], [0, 2], [0, 0]]
    s = list(strides)
    pads = ref.spatial_pads(padding, x.shape[1:3], f.shape[:2], s, [dilation] * 2)
    got = ref.conv(x, f, strides=s, padding=padding, dilations=dilation)
    np.testing.assert_allclose(got, naive_conv2d(x, f, strides, pads, dilation), atol=1e-12)


ADJOINT_CASES = [
    # (input shape, filter shape, strides, padding, dilations)
    ([2, 7, 1], [3, 1, 2], 1, "VALID", 1),
    ([1, 8, 2], [3, 2, 3], 2, "SAME", 1),
    ([2, 9, 9, 2], [3, 2, 2, 3], [2, 3], "SAME", 1),
    ([1, 8, 7, 3], [2, 3, 3, 2], 1, "VALID", 2),
    ([1, 6, 6, 2], [3, 3, 2, 2], 3, [[0, 0], [1, 2], [2, 0], [0, 0]], 1),
    ([1, 5, 6, 4, 2], [2, 3, 2, 2, 2], [1, 2, 2], "SAME", 1),
]


@pytest.mark.parametrize(("x_shape", "f_shape", "strides", "padding", "dilations"), ADJOINT_CASES)
def test_transpose_is_the_adjoint_of_conv(
    x_shape: list[int], f_shape: list[int], strides: object, padding: object, dilations: int
) -> None:
    rng = np.random.default_rng(len(x_shape) * 100 + x_shape[1])
    x = rng.normal(size=x_shape)
    f = rng.normal(size=f_shape)
    args = {"strides": strides, "padding": padding, "dilations": dilations}
    forward = ref.conv(x, f, **args)
    y = rng.normal(size=forward.shape)
    back = ref.conv_transpose(y, f, x_shape, **args)
    assert back.shape == x.shape
    assert np.vdot(forward, y) == pytest.approx(np.vdot(x, back), rel=1e-12)


CHANNELS_FIRST = [
    ("NCW", "conv", [2, 9, 3], [3, 3, 2], [1, 1, 2], "SAME"),
    ("NCHW", "conv", [1, 6, 7, 4], [2, 3, 2, 4], [1, 1, 2, 1], [[0, 0], [0, 0], [1, 0], [0, 2]]),
    ("NCHW", "depthwise", [1, 6, 5, 2], [3, 2, 2, 2], [1, 1, 1, 2], "VALID"),
    ("NCDHW", "conv", [1, 4, 5, 6, 2], [2, 2, 3, 2, 3], 2, "SAME"),
]


@pytest.mark.parametrize(
    ("fmt", "kind", "x_shape", "f_shape", "strides", "padding"), CHANNELS_FIRST
)
def test_channels_first_is_channels_last_transposed(
    fmt: str, kind: str, x_shape: list[int], f_shape: list[int], strides: object, padding: object
) -> None:
    rng = np.random.default_rng(7)
    x_last = rng.normal(size=x_shape)
    f = rng.normal(size=f_shape)
    spatial = len(f_shape) - 2
    last_strides = strides
    last_padding = padding
    if isinstance(strides, list):  # per-dimension lists name dimensions in the format's order
        last_strides = [1, *strides[2:], 1]
    if isinstance(padding, list):
        last_padding = [[0, 0], *padding[2:], [0, 0]]
    expected = ref.conv(x_last, f, strides=last_strides, padding=last_padding, kind=kind)
    first = (0, spatial + 1, *range(1, spatial + 1))
    got = ref.conv(
        x_last.transpose(first), f, strides=strides, padding=padding, data_format=fmt, kind=kind
    )
    np.testing.assert_allclose(got, expected.transpose(first), atol=1e-12)


def test_channels_first_transpose_is_channels_last_transposed() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=[1, 3, 3, 2])
    f = rng.normal(size=[3, 3, 4, 2])
    expected = ref.conv_transpose(y, f, [1, 6, 5, 4], strides=2, padding="SAME")
    got = ref.conv_transpose(
        y.transpose(0, 3, 1, 2), f, [1, 4, 6, 5], strides=2, padding="SAME", data_format="NCHW"
    )
    np.testing.assert_allclose(got, expected.transpose(0, 3, 1, 2), atol=1e-12)
