"""convfix.ops: the table of wrapped functions and how they name their arguments."""

from __future__ import annotations

import pytest

from convfix.ops import V1_SPECS, V2_SPECS, default_data_format

ALL = [*V2_SPECS.values(), *V1_SPECS.values()]


def test_tf2_ops_are_named_in_events_by_their_attribute_name() -> None:
    # given the tf.nn table, then each row's event name is the attribute's
    assert all(spec.name == name for name, spec in V2_SPECS.items())


def test_compat_v1_ops_are_named_in_events_with_their_namespace() -> None:
    # given the tf.compat.v1.nn table, then its event names say compat.v1
    assert all(spec.name == f"compat.v1.{name}" for name, spec in V1_SPECS.items())


def test_spatial_rank_is_the_digit_in_the_name_and_unknown_for_any_rank_ops() -> None:
    # given every row, then "conv2d"-like names fix the rank; the others read the filter
    for name, spec in [*V2_SPECS.items(), *V1_SPECS.items()]:
        digits = [c for c in name if c.isdigit()]
        assert spec.spatial == (int(digits[0]) if digits else None), spec.name


def test_transposes_are_the_ops_named_transpose() -> None:
    for spec in ALL:
        assert (spec.kind == "transpose") is spec.name.endswith("transpose"), spec.name


def test_separable_convolutions_name_their_pointwise_filter() -> None:
    for specs in (V2_SPECS, V1_SPECS):
        assert specs["separable_conv2d"].pointwise_param == "pointwise_filter"


@pytest.mark.parametrize(("spatial", "name"), [(1, "NWC"), (2, "NHWC"), (3, "NDHWC")])
def test_default_data_format_is_tensorflows_channels_last_name(spatial: int, name: str) -> None:
    assert default_data_format(spatial) == name
