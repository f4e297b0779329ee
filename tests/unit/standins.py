"""TF-free stand-ins for what convfix binds and inspects: tensors and TensorFlow's functions.

``Tensor`` has what the guard reads of a tensor (``.shape``, ``.dtype``); ``StaticShape``
is a TensorShape (``.rank``, iteration, ``None`` for an unknown size or rank). The functions
below have the exact public signatures of TensorFlow 2.21.0's ``tf.nn`` and
``tf.compat.v1.nn`` functions in ``convfix.ops`` (read with ``inspect.signature`` from TF
2.21.0; test_standins.py checks them against TensorFlow wherever it is installed). Called,
they hand back what they were given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from convfix.call import Binder, Call
from convfix.ops import V1_SPECS, V2_SPECS

# The functions mirror TensorFlow's own source: its parameter names, no annotations.


class StaticShape:
    """A TensorShape stand-in: ``rank`` None when even the rank is unknown."""

    def __init__(self, dims: list[int | None] | None) -> None:
        self.dims = dims

    @property
    def rank(self) -> int | None:
        return None if self.dims is None else len(self.dims)

    def __iter__(self) -> Iterator[int | None]:
        if self.dims is None:
            raise ValueError("Cannot iterate over a shape with unknown rank.")
        return iter(self.dims)

    def __len__(self) -> int:
        if self.dims is None:
            raise ValueError("Cannot take the length of shape with unknown rank.")
        return len(self.dims)

    def __repr__(self) -> str:
        return f"StaticShape({self.dims!r})"


@dataclass(frozen=True)
class Tensor:
    """A tensor stand-in: a shape (tuple or StaticShape) and a dtype name."""

    shape: tuple[int | None, ...] | StaticShape
    dtype: str = "float32"


def tensor(*dims: int | None, dtype: str = "float32") -> Tensor:
    """A stand-in tensor of ``dims``; a ``None`` dim makes it a traced tensor's shape."""
    if None in dims:
        return Tensor(StaticShape(list(dims)), dtype)
    return Tensor(tuple(dims), dtype)


def unknown_rank(dtype: str = "float32") -> Tensor:
    """A traced tensor whose rank itself is unknown."""
    return Tensor(StaticShape(None), dtype)


@dataclass(frozen=True)
class Received:
    """What a stand-in function was called with, by parameter name."""

    function: str
    arguments: dict[str, Any] = field(default_factory=dict)


# --- tf.nn (TF 2.21.0) -------------------------------------------------------------------


def conv1d(input, filters, stride, padding, data_format="NWC", dilations=None, name=None):
    return Received("conv1d", dict(locals()))


def conv2d(input, filters, strides, padding, data_format="NHWC", dilations=None, name=None):
    return Received("conv2d", dict(locals()))


def conv3d(input, filters, strides, padding, data_format="NDHWC", dilations=None, name=None):
    return Received("conv3d", dict(locals()))


def convolution(
    input, filters, strides=None, padding="VALID", data_format=None, dilations=None, name=None
):
    return Received("convolution", dict(locals()))


def depthwise_conv2d(input, filter, strides, padding, data_format=None, dilations=None, name=None):
    return Received("depthwise_conv2d", dict(locals()))


def separable_conv2d(
    input,
    depthwise_filter,
    pointwise_filter,
    strides,
    padding,
    data_format=None,
    dilations=None,
    name=None,
):
    return Received("separable_conv2d", dict(locals()))


def conv1d_transpose(
    input,
    filters,
    output_shape,
    strides,
    padding="SAME",
    data_format="NWC",
    dilations=None,
    name=None,
):
    return Received("conv1d_transpose", dict(locals()))


def conv2d_transpose(
    input,
    filters,
    output_shape,
    strides,
    padding="SAME",
    data_format="NHWC",
    dilations=None,
    name=None,
):
    return Received("conv2d_transpose", dict(locals()))


def conv3d_transpose(
    input,
    filters,
    output_shape,
    strides,
    padding="SAME",
    data_format="NDHWC",
    dilations=None,
    name=None,
):
    return Received("conv3d_transpose", dict(locals()))


def conv_transpose(
    input,
    filters,
    output_shape,
    strides,
    padding="SAME",
    data_format=None,
    dilations=None,
    name=None,
):
    return Received("conv_transpose", dict(locals()))


# --- tf.compat.v1.nn (TF 2.21.0); the list defaults are TensorFlow's own -----------------


def v1_conv2d(
    input,
    filter=None,
    strides=None,
    padding=None,
    use_cudnn_on_gpu=True,
    data_format="NHWC",
    dilations=[1, 1, 1, 1],  # noqa: B006
    name=None,
    filters=None,
):
    return Received("compat.v1.conv2d", dict(locals()))


def v1_conv1d(
    value=None,
    filters=None,
    stride=None,
    padding=None,
    use_cudnn_on_gpu=None,
    data_format=None,
    name=None,
    input=None,
    dilations=None,
):
    return Received("compat.v1.conv1d", dict(locals()))


def v1_conv3d(
    input,
    filter=None,
    strides=None,
    padding=None,
    data_format="NDHWC",
    dilations=[1, 1, 1, 1, 1],  # noqa: B006
    name=None,
    filters=None,
):
    return Received("compat.v1.conv3d", dict(locals()))


def v1_convolution(
    input,
    filter,
    padding,
    strides=None,
    dilation_rate=None,
    name=None,
    data_format=None,
    filters=None,
    dilations=None,
):
    return Received("compat.v1.convolution", dict(locals()))


def v1_depthwise_conv2d(
    input, filter, strides, padding, rate=None, name=None, data_format=None, dilations=None
):
    return Received("compat.v1.depthwise_conv2d", dict(locals()))


def v1_separable_conv2d(
    input,
    depthwise_filter,
    pointwise_filter,
    strides,
    padding,
    rate=None,
    name=None,
    data_format=None,
    dilations=None,
):
    return Received("compat.v1.separable_conv2d", dict(locals()))


def v1_conv2d_transpose(
    value=None,
    filter=None,
    output_shape=None,
    strides=None,
    padding="SAME",
    data_format="NHWC",
    name=None,
    input=None,
    filters=None,
    dilations=None,
):
    return Received("compat.v1.conv2d_transpose", dict(locals()))


def v1_conv3d_transpose(
    value,
    filter=None,
    output_shape=None,
    strides=None,
    padding="SAME",
    data_format="NDHWC",
    name=None,
    input=None,
    filters=None,
    dilations=None,
):
    return Received("compat.v1.conv3d_transpose", dict(locals()))


# Keyed as convfix.ops keys its tables (the attribute name in tf.nn / tf.compat.v1.nn).
V2_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "conv1d": conv1d,
    "conv2d": conv2d,
    "conv3d": conv3d,
    "convolution": convolution,
    "depthwise_conv2d": depthwise_conv2d,
    "separable_conv2d": separable_conv2d,
    "conv1d_transpose": conv1d_transpose,
    "conv2d_transpose": conv2d_transpose,
    "conv3d_transpose": conv3d_transpose,
    "conv_transpose": conv_transpose,
}

V1_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "conv2d": v1_conv2d,
    "conv1d": v1_conv1d,
    "conv3d": v1_conv3d,
    "convolution": v1_convolution,
    "depthwise_conv2d": v1_depthwise_conv2d,
    "separable_conv2d": v1_separable_conv2d,
    "conv2d_transpose": v1_conv2d_transpose,
    "conv3d_transpose": v1_conv3d_transpose,
}


def binder(name: str, v1: bool = False) -> Binder:
    """The Binder convfix would make for ``tf.nn.<name>`` (``tf.compat.v1.nn`` if ``v1``)."""
    specs, functions = (V1_SPECS, V1_FUNCTIONS) if v1 else (V2_SPECS, V2_FUNCTIONS)
    return Binder(specs[name], functions[name])


def bind(name: str, *args: Any, v1: bool = False, graph: bool = False, **kwargs: Any) -> Call:
    """A call of ``tf.nn.<name>(*args, **kwargs)`` bound as convfix binds it."""
    return replace(binder(name, v1).bind(args, kwargs), graph=graph)
