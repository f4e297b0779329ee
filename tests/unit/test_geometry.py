"""convfix.geometry: shape arithmetic, pinned by hand and against the float64 reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convfix.geometry import (
    Window,
    crop_sizes,
    effective_kernel,
    explicit_pads,
    output_size,
    padding_name,
    per_spatial,
    shape_values,
    shown_padding,
    single_windows,
    spatial_sizes,
    static_shape,
    windows_of,
)
from convfix.sweep import reference as ref
from tests.unit.standins import StaticShape, Tensor, tensor, unknown_rank

PROPERTY = settings(max_examples=200, deadline=None)


# --- static_shape ------------------------------------------------------------------------


def test_static_shape_of_a_tensor_is_its_shape_as_a_list() -> None:
    assert static_shape(tensor(2, 5, 5, 3)) == [2, 5, 5, 3]


def test_static_shape_keeps_unknown_sizes_unknown() -> None:
    assert static_shape(tensor(None, 5, None, 3)) == [None, 5, None, 3]


def test_static_shape_of_an_unknown_rank_is_none() -> None:
    assert static_shape(unknown_rank()) is None


def test_static_shape_of_a_numpy_array_is_plain_ints() -> None:
    # given an array, whose shape holds Python ints, then so does the result
    found = static_shape(np.zeros((1, 4, 3)))
    assert found == [1, 4, 3]
    assert all(type(d) is int for d in found or [])


def test_static_shape_of_nested_lists_follows_the_first_elements() -> None:
    assert static_shape([[[1.0, 2.0]], [[3.0, 4.0]]]) == [2, 1, 2]


def test_static_shape_of_an_empty_list_is_one_zero_dim() -> None:
    assert static_shape([]) == [0]


def test_static_shape_of_a_number_is_a_scalars() -> None:
    assert static_shape(2.5) == []


def test_static_shape_of_something_shapeless_is_none() -> None:
    assert static_shape("not a tensor") is None
    assert static_shape(None) is None


# --- per_spatial -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "last", "expected"),
    [
        pytest.param(None, True, [1, 1], id="none_is_ones"),
        pytest.param(2, True, [2, 2], id="int"),
        pytest.param([3], True, [3, 3], id="one_item"),
        pytest.param((2, 3), True, [2, 3], id="one_per_spatial"),
        pytest.param([1, 2, 3, 1], True, [2, 3], id="all_dims_channels_last"),
        pytest.param([1, 1, 2, 3], False, [2, 3], id="all_dims_channels_first"),
    ],
)
def test_per_spatial_reads_tensorflows_forms(value: Any, last: bool, expected: list[int]) -> None:
    assert per_spatial(value, 2, last) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="bool"),
        pytest.param("2", id="string"),
        pytest.param([1, 2, 3], id="wrong_length"),
        pytest.param([1.0, 2.0], id="floats"),
        pytest.param([True, 2], id="bool_item"),
        pytest.param(2.0, id="float"),
    ],
)
def test_per_spatial_of_another_form_is_none(value: Any) -> None:
    assert per_spatial(value, 2, True) is None


@PROPERTY
@given(
    spatial=st.integers(1, 3),
    last=st.booleans(),
    data=st.data(),
)
def test_per_spatial_agrees_with_the_reference(spatial: int, last: bool, data: Any) -> None:
    # given strides in any form TensorFlow takes
    values = data.draw(st.lists(st.integers(1, 4), min_size=spatial, max_size=spatial))
    form = data.draw(st.sampled_from(["int", "one", "spatial", "all"]))
    value: Any = {
        "int": values[0],
        "one": [values[0]],
        "spatial": values,
        "all": [1, *values, 1] if last else [1, 1, *values],
    }[form]
    # then convfix reads them as the reference does
    fmt = "NHWC" if last else "NCHW"
    assert per_spatial(value, spatial, last) == ref.per_spatial(value, spatial, fmt)


# --- explicit_pads -----------------------------------------------------------------------


def test_explicit_pads_are_the_spatial_pairs_channels_last() -> None:
    assert explicit_pads([[0, 0], [1, 2], [3, 4], [0, 0]], 2, True) == [(1, 2), (3, 4)]


def test_explicit_pads_are_the_spatial_pairs_channels_first() -> None:
    assert explicit_pads([[0, 0], [0, 0], [1, 2], [3, 4]], 2, False) == [(1, 2), (3, 4)]


@pytest.mark.parametrize(
    "padding",
    [
        pytest.param("SAME", id="name"),
        pytest.param([[1, 2], [3, 4]], id="spatial_pairs_only"),
        pytest.param([[0, 0], [1, 2, 3], [3, 4], [0, 0]], id="triple"),
        pytest.param([[0, 0], [1.0, 2], [3, 4], [0, 0]], id="float"),
        pytest.param(3, id="int"),
    ],
)
def test_explicit_pads_of_anything_but_one_pair_per_dim_is_none(padding: Any) -> None:
    assert explicit_pads(padding, 2, True) is None


# --- effective_kernel / output_size / shown_padding --------------------------------------


def test_effective_kernel_spreads_taps_by_the_dilation() -> None:
    assert effective_kernel([3, 1, 2], [2, 5, 1]) == [5, 1, 2]


def test_effective_kernel_of_an_unknown_size_is_unknown() -> None:
    assert effective_kernel([None, 3], [2, 2]) == [None, 5]


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "expected"),
    [
        pytest.param(5, 3, 2, "SAME", 3, id="same_is_ceil"),
        pytest.param(5, 9, 1, "SAME", 5, id="same_ignores_the_kernel"),
        pytest.param(5, 3, 2, "VALID", 2, id="valid"),
        pytest.param(5, 3, 2, (1, 1), 3, id="explicit"),
        pytest.param(2, 3, 1, "VALID", 0, id="valid_overhang_within_a_stride"),
        pytest.param(2, 5, 1, "VALID", -2, id="valid_negative"),
    ],
)
def test_output_size_as_tensorflow_computes_it(
    size: int, kernel: int, stride: int, padding: Any, expected: int
) -> None:
    assert output_size(size, kernel, stride, padding) == expected


def test_output_size_of_an_unknown_input_is_unknown() -> None:
    assert output_size(None, 3, 1, "SAME") is None


def test_output_size_of_an_unknown_kernel_is_unknown_unless_same() -> None:
    assert output_size(5, None, 1, "VALID") is None
    assert output_size(5, None, 2, "SAME") == 3


def test_padding_name_is_the_name_in_upper_case() -> None:
    assert padding_name("same") == "SAME"
    assert padding_name("VALID") == "VALID"


def test_padding_name_of_an_explicit_list_is_none() -> None:
    assert padding_name([[0, 0], [1, 1], [1, 1], [0, 0]]) is None


def test_shown_padding_keeps_names_and_writes_lists_as_text() -> None:
    assert shown_padding("SAME") == "SAME"
    assert shown_padding([[0, 0], [1, 1]]) == "[[0, 0], [1, 1]]"


@PROPERTY
@given(
    size=st.integers(1, 12),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
    padding=st.one_of(
        st.sampled_from(["SAME", "VALID"]), st.tuples(st.integers(0, 3), st.integers(0, 3))
    ),
)
def test_output_size_is_the_length_of_the_reference_convolution(
    size: int, kernel: int, stride: int, dilation: int, padding: str | tuple[int, int]
) -> None:
    # given a 1-d convolution, computed in float64 by the reference
    x, f = np.ones((1, size, 1)), np.ones((kernel, 1, 1))
    how: Any = padding if isinstance(padding, str) else [padding]
    try:
        y = ref.conv(x, f, strides=stride, padding=how, dilations=dilation)
    except ValueError:  # the reference refuses what TensorFlow refuses: negative sizes
        length = None
    else:
        length = y.shape[1]
    # when convfix computes the output length from the shapes
    found = output_size(size, effective_kernel([kernel], [dilation])[0], stride, padding)
    # then it is the reference's, or negative where the reference refuses
    assert found == length if length is not None else found is not None and found < 0


# --- shape_values / spatial_sizes --------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [[2, 5, 5, 3], (2, 5, 5, 3), np.array([2, 5, 5, 3]), StaticShape([2, 5, 5, 3])],
    ids=["list", "tuple", "numpy", "tensor_shape"],
)
def test_shape_values_reads_an_output_shape_as_ints(value: Any) -> None:
    assert shape_values(value) == [2, 5, 5, 3]


@pytest.mark.parametrize(
    "value",
    [StaticShape([2, None, 5, 3]), StaticShape(None), None, 7, ["a"]],
    ids=["unknown_size", "unknown_rank", "none", "int", "text"],
)
def test_shape_values_known_only_at_run_time_are_none(value: Any) -> None:
    assert shape_values(value) is None


def test_spatial_sizes_sit_between_batch_and_channels_when_channels_last() -> None:
    assert spatial_sizes([2, 5, 6, 3], 2, True) == [5, 6]


def test_spatial_sizes_follow_the_channels_when_channels_first() -> None:
    assert spatial_sizes([2, 3, 5, 6], 2, False) == [5, 6]


def test_spatial_sizes_skip_any_number_of_leading_batch_dims() -> None:
    assert spatial_sizes([4, 2, 5, 6, 3], 2, True) == [5, 6]
    assert spatial_sizes([4, 2, 3, 5, 6], 2, False) == [5, 6]


# --- windows_of --------------------------------------------------------------------------


def test_same_windows_put_the_odd_pad_after() -> None:
    # given size 4, kernel 3, stride 2: out 2, padding total 1
    (window,) = windows_of([4], [3], 2, 1, "SAME", 1, True) or []
    # then TensorFlow's split puts the one zero after
    assert window == Window(size=4, kernel=3, stride=2, pads=(0, 1), out=2)


def test_windows_use_the_dilated_kernel() -> None:
    (window,) = windows_of([9], [3], 1, 2, "VALID", 1, True) or []
    assert (window.kernel, window.out) == (5, 5)


def test_windows_read_explicit_pads_of_the_spatial_dims() -> None:
    padding = [[0, 0], [0, 0], [1, 2], [0, 1]]
    dims = windows_of([5, 4], [3, 2], [1, 1, 2, 1], 1, padding, 2, False) or []
    assert [(w.pads, w.stride, w.out) for w in dims] == [((1, 2), 2, 3), ((0, 1), 1, 4)]


@pytest.mark.parametrize(
    ("sizes", "kernel", "strides", "dilations", "padding"),
    [
        pytest.param([None, 5], [3, 3], 1, 1, "SAME", id="unknown_size"),
        pytest.param([5, 5], [None, 3], 1, 1, "VALID", id="unknown_kernel"),
        pytest.param([5, 5], [3, 3], 0, 1, "SAME", id="zero_stride"),
        pytest.param([5, 5], [3, 3], 1, [1, 2, 3], "SAME", id="unreadable_dilations"),
        pytest.param([5, 5], [3, 3], 1, 1, "CAUSAL", id="unknown_padding_name"),
        pytest.param([5, 5], [3, 3], 1, 1, 3, id="padding_neither_name_nor_list"),
    ],
)
def test_windows_are_unknown_where_something_is_not_known(
    sizes: list[int | None], kernel: list[int | None], strides: Any, dilations: Any, padding: Any
) -> None:
    assert windows_of(sizes, kernel, strides, dilations, padding, 2, True) is None


@st.composite
def geometries(draw: st.DrawFn) -> dict[str, Any]:
    """A convolution's spatial geometry: sizes, kernel, strides, dilations, padding, layout."""
    spatial = draw(st.integers(1, 3))
    per_dim = st.lists(st.integers(1, 4), min_size=spatial, max_size=spatial)
    last = draw(st.booleans())
    padding: Any = draw(st.sampled_from(["SAME", "VALID", "explicit"]))
    if padding == "explicit":
        pairs = [[draw(st.integers(0, 3)), draw(st.integers(0, 3))] for _ in range(spatial)]
        padding = [[0, 0], *pairs, [0, 0]] if last else [[0, 0], [0, 0], *pairs]
    return {
        "sizes": draw(st.lists(st.integers(1, 9), min_size=spatial, max_size=spatial)),
        "kernel": draw(st.lists(st.integers(1, 4), min_size=spatial, max_size=spatial)),
        "strides": draw(per_dim),
        "dilations": draw(st.lists(st.integers(1, 3), min_size=spatial, max_size=spatial)),
        "padding": padding,
        "last": last,
    }


def reference_output(g: dict[str, Any]) -> list[int] | None:
    """The spatial output shape of the float64 reference convolution; None if it refuses."""
    spatial = len(g["sizes"])
    x_shape = [1, *g["sizes"], 1] if g["last"] else [1, 1, *g["sizes"]]
    fmt = (
        ["NWC", "NHWC", "NDHWC"][spatial - 1]
        if g["last"]
        else ["NCW", "NCHW", "NCDHW"][spatial - 1]
    )
    try:
        y = ref.conv(
            np.ones(x_shape),
            np.ones([*g["kernel"], 1, 1]),
            strides=g["strides"],
            padding=g["padding"],
            dilations=g["dilations"],
            data_format=fmt,
        )
    except ValueError:
        return None
    return list(y.shape[1:-1] if g["last"] else y.shape[2:])


@PROPERTY
@given(g=geometries())
def test_windows_match_the_reference_convolution(g: dict[str, Any]) -> None:
    # given a convolution's geometry
    spatial = len(g["sizes"])
    # when convfix works out its windows
    dims = windows_of(
        g["sizes"], g["kernel"], g["strides"], g["dilations"], g["padding"], spatial, g["last"]
    )
    assert dims is not None
    # then the output sizes are the reference convolution's (negative where it refuses) ...
    expected = reference_output(g)
    if expected is None:
        assert any(w.out < 0 for w in dims)
    else:
        assert [w.out for w in dims] == expected
    # ... and the pads are the reference's
    fmt = "NHWC" if g["last"] else "NCHW"
    pads = ref.spatial_pads(
        g["padding"], g["sizes"], g["kernel"], g["strides"], g["dilations"], fmt
    )
    assert [w.pads for w in dims] == pads


# --- crop_sizes / single_windows ---------------------------------------------------------


def test_crop_sizes_cut_input_two_or_more_past_the_last_same_window() -> None:
    # given size 7, kernel 1, stride 4: windows read 0 and 4, so 5 and 6 are never read
    dims = windows_of([7], [1], 4, 1, "SAME", 1, True) or []
    # then the input is cut to the positions read
    assert crop_sizes(dims) == [5]


def test_crop_sizes_leave_one_unread_position_alone() -> None:
    # given size 6, kernel 1, stride 4: TensorFlow's padding total is -1, which shifts nothing
    dims = windows_of([6], [1], 4, 1, "SAME", 1, True) or []
    assert crop_sizes(dims) == [6]


@PROPERTY
@given(size=st.integers(1, 16), kernel=st.integers(1, 4), stride=st.integers(1, 6))
def test_cropping_to_crop_sizes_keeps_the_reference_answer(
    size: int, kernel: int, stride: int
) -> None:
    # given a SAME convolution of distinct values
    x = np.arange(1.0, size + 1).reshape(1, size, 1)
    f = np.arange(1.0, kernel + 1).reshape(kernel, 1, 1)
    dims = windows_of([size], [kernel], stride, 1, "SAME", 1, True) or []
    # when the input is cut to the sizes convfix says the windows read
    (kept,) = crop_sizes(dims)
    cropped = ref.conv(x[:, :kept], f, strides=stride, padding="SAME")
    # then the definition's answer is unchanged
    np.testing.assert_array_equal(cropped, ref.conv(x, f, strides=stride, padding="SAME"))


@pytest.mark.parametrize(
    ("window", "single"),
    [
        pytest.param(Window(3, 3, 2, (0, 0), 1), True, id="strided"),
        pytest.param(Window(1, 3, 1, (1, 1), 1), True, id="padded"),
        pytest.param(Window(3, 3, 1, (0, 0), 1), False, id="plain"),
        pytest.param(Window(2, 1, 2, (0, 0), 1), False, id="kernel_one"),
        pytest.param(Window(5, 3, 2, (0, 0), 2), False, id="two_windows"),
    ],
)
def test_single_windows_are_one_strided_or_padded_window(window: Window, single: bool) -> None:
    assert single_windows([window]) == [single]


@st.composite
def single_window_lines(draw: st.DrawFn) -> tuple[int, int, int, int, Any]:
    """A 1-d call (size, kernel, stride, dilation, padding) with one output window that is
    strided or reaches into padding: what ``single_windows`` flags."""
    kernel, dilation = draw(st.integers(2, 4)), draw(st.integers(1, 3))
    reach = (kernel - 1) * dilation + 1
    how = draw(st.sampled_from(["SAME", "VALID", "explicit"]))
    if how == "SAME":  # one window: ceil(size / stride) == 1
        stride = draw(st.integers(1, 4))
        return draw(st.integers(1, stride)), kernel, stride, dilation, "SAME"
    # one window: reach <= padded size < reach + stride; strided (VALID) or padded
    stride = draw(st.integers(2 if how == "VALID" else 1, 4))
    total = 0 if how == "VALID" else draw(st.integers(1, reach + stride - 2))
    padded = draw(st.integers(max(reach, total + 1), reach + stride - 1))
    lo = draw(st.integers(0, total))
    padding: Any = "VALID" if how == "VALID" else [[0, 0], [lo, total - lo], [0, 0]]
    return padded - total, kernel, stride, dilation, padding


@PROPERTY
@given(line=single_window_lines())
def test_a_single_window_is_the_reference_run_on_that_window_alone(
    line: tuple[int, int, int, int, Any],
) -> None:
    # given a 1-d convolution whose one output window is strided or reaches into padding
    size, kernel, stride, dilation, padding = line
    (window,) = windows_of([size], [kernel], stride, dilation, padding, 1, True) or []
    assert single_windows([window]) == [True]
    x = np.arange(1.0, size + 1).reshape(1, size, 1)
    f = np.arange(1.0, kernel + 1).reshape(kernel, 1, 1)
    # when the input is padded by the call's pads, cut to that window and run VALID, stride 1
    lo, hi = window.pads
    alone = np.pad(x, [(0, 0), (lo, hi), (0, 0)])[:, : window.kernel]
    answer = ref.conv(alone, f, strides=1, padding="VALID", dilations=dilation)
    # then it is the reference answer of the call as made
    expected = ref.conv(x, f, strides=stride, padding=padding, dilations=dilation)
    np.testing.assert_array_equal(answer, expected)


def test_a_tensor_stand_in_reads_like_a_tensor() -> None:
    # given the stand-in tensors other tests build calls from, then geometry reads them
    assert static_shape(Tensor((1, 2, 3))) == [1, 2, 3]
    assert static_shape(Tensor(StaticShape([None, 2]))) == [None, 2]


@pytest.mark.parametrize(
    "value", [np.int64(2), np.array([1, 2, 2, 1]), np.array([2, 2])], ids=["scalar", "4", "2"]
)
def test_numpy_strides_read_like_python_ints(value: Any) -> None:
    # TensorFlow's _get_sequence takes NumPy values: the rules must read them too
    assert per_spatial(value, 2, True) == [2, 2]


def test_a_flat_padding_list_is_not_explicit_padding() -> None:
    # TensorFlow refuses [1, 1, 1, 1] with its own error; reading it must not raise
    assert explicit_pads([1, 1, 1, 1], 2, True) is None


def test_numpy_explicit_padding_reads_like_lists() -> None:
    pads = np.array([[0, 0], [1, 2], [3, 4], [0, 0]])
    assert explicit_pads(pads, 2, True) == [(1, 2), (3, 4)]
