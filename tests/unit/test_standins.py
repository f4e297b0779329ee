"""The stand-in functions keep TensorFlow's signatures, and the op table names their params."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from convfix.ops import V1_SPECS, V2_SPECS, OpSpec
from tests.unit.standins import V1_FUNCTIONS, V2_FUNCTIONS

TABLES = [
    pytest.param(V2_SPECS, V2_FUNCTIONS, "nn", id="tf.nn"),
    pytest.param(V1_SPECS, V1_FUNCTIONS, "compat.v1.nn", id="tf.compat.v1.nn"),
]


def described(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """A signature as its parameters' names, kinds and defaults (annotations aside)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def named_params(spec: OpSpec) -> list[str]:
    """Every parameter name an OpSpec row says its function takes."""
    names = [*spec.input_params, *spec.filter_params, spec.padding_param]
    names += [*spec.dilations_params, spec.data_format_param]
    names += [p for p in (spec.strides_param, spec.pointwise_param) if p is not None]
    return names


@pytest.mark.parametrize(("specs", "functions", "namespace"), TABLES)
def test_every_op_in_the_table_has_a_stand_in(
    specs: dict[str, OpSpec], functions: dict[str, Callable[..., Any]], namespace: str
) -> None:
    # given the op table and the stand-ins, then both list the same functions
    assert sorted(functions) == sorted(specs)


@pytest.mark.parametrize(("specs", "functions", "namespace"), TABLES)
def test_every_parameter_the_table_names_is_one_the_function_takes(
    specs: dict[str, OpSpec], functions: dict[str, Callable[..., Any]], namespace: str
) -> None:
    # given each row of the table and the signature it describes
    for name, spec in specs.items():
        params = inspect.signature(functions[name]).parameters
        # then every role's parameter is one of the function's own
        missing = [p for p in named_params(spec) if p not in params]
        assert not missing, f"{namespace}.{name}: {missing} not in {list(params)}"


@pytest.mark.parametrize(("specs", "functions", "namespace"), TABLES)
def test_stand_in_signatures_are_tensorflows_own(
    specs: dict[str, OpSpec], functions: dict[str, Callable[..., Any]], namespace: str
) -> None:
    tf = pytest.importorskip("tensorflow")
    # given TensorFlow's namespace and the stand-ins hard-coded from TF 2.21
    module = tf.nn if namespace == "nn" else tf.compat.v1.nn
    for name, stand_in in functions.items():
        # when each function's signature is read from TensorFlow itself
        theirs = described(getattr(module, name))
        # then the stand-in has the same parameters, in order, with the same defaults
        assert described(stand_in) == theirs, f"tf.{namespace}.{name} changed its signature"
