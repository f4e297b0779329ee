"""Answers the guard gives without dispatching: an empty input has a known empty result.

TF 2.21's oneDNN kernels return an empty tensor with the *input's* channel count for an
input with a zero-sized dimension; the right answer is computable from shapes alone.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from convfix.call import Call, spatial_rank
from convfix.geometry import (
    Shape,
    effective_kernel,
    explicit_pads,
    output_size,
    padding_name,
    per_spatial,
    shape_values,
    spatial_sizes,
    static_shape,
)


def output_shape(call: Call, input_shape: Shape | None = None) -> list[int] | None:
    """The shape TensorFlow's reference kernels give this call (an empty one included), for
    the input's static shape or ``input_shape``; None when it cannot be known statically or
    TensorFlow would refuse the call (channel mismatch). A transpose's is its
    ``output_shape``, where that agrees with the input and filter."""
    x_shape = static_shape(call.input) if input_shape is None else input_shape
    f_shape = static_shape(call.filter)
    if x_shape is None or f_shape is None or None in x_shape or None in f_shape:
        return None
    if call.spec.kind == "transpose":
        return _transpose_shape(call, x_shape, f_shape)
    spatial = spatial_rank(call, f_shape, x_shape)
    if spatial is None:
        return None
    channels_last = call.channels_last()
    channels = x_shape[-1] if channels_last else x_shape[-spatial - 1]
    out_channels = _out_channels(call, f_shape, channels)
    strides = per_spatial(call.strides, spatial, channels_last)
    dilations = per_spatial(call.dilations, spatial, channels_last)
    if out_channels is None or strides is None or dilations is None:
        return None
    padding = call.padding
    pads = explicit_pads(padding, spatial, channels_last)
    kernel = effective_kernel(f_shape[:spatial], dilations)
    sizes = spatial_sizes(x_shape, spatial, channels_last)
    out: list[int] = []
    for i, size in enumerate(sizes):
        how = pads[i] if pads else padding_name(padding)
        if how is None:
            return None
        value = output_size(size, kernel[i], strides[i], how)
        if value is None or value < 0:
            return None
        out.append(value)
    batch = [d for d in x_shape[: len(x_shape) - spatial - 1] if d is not None]
    return [*batch, *out, out_channels] if channels_last else [*batch, out_channels, *out]


def _transpose_shape(call: Call, x_shape: Shape, f_shape: Shape) -> list[int] | None:
    """``output_shape`` as given, if it agrees with the input's batch and the filter's
    channels (filter ``[k..., out_c, in_c]``) as TensorFlow requires; else None."""
    wanted = shape_values(call.arguments.get("output_shape"))
    if wanted is None or len(wanted) != len(x_shape) or len(f_shape) != len(x_shape):
        return None
    last = call.channels_last()
    channels = x_shape[-1] if last else x_shape[1]
    out_channels = wanted[-1] if last else wanted[1]
    if wanted[0] != x_shape[0] or channels != f_shape[-1] or out_channels != f_shape[-2]:
        return None
    # The input must be what the forward convolution of output_shape gives, as TF checks.
    spatial = len(x_shape) - 2
    strides = per_spatial(call.strides, spatial, last)
    dilations = per_spatial(call.dilations, spatial, last)
    if strides is None or dilations is None:
        return None
    pads = explicit_pads(call.padding, spatial, last)
    kernel = effective_kernel(f_shape[:spatial], dilations)
    sizes = spatial_sizes(wanted, spatial, last)
    for i, (size, k, stride) in enumerate(zip(sizes, kernel, strides)):
        how = pads[i] if pads else padding_name(call.padding)
        if (
            how is None
            or output_size(size, k, stride, how) != spatial_sizes(x_shape, spatial, last)[i]
        ):
            return None
    return wanted


def _out_channels(call: Call, f_shape: list[int | None], channels: int | None) -> int | None:
    f_in, f_out = f_shape[-2], f_shape[-1]
    if channels is None or f_in is None or f_out is None or f_in == 0:
        return None
    if call.spec.kind == "conv":
        groups, rest = divmod(channels, f_in)
        if rest or groups == 0 or f_out % groups:
            return None  # TensorFlow refuses these groupings for any batch size
        if groups > 1 and len(f_shape) == 5:
            return None  # TF 2.21's CPU Conv3D has no grouped kernel at all
        return f_out
    if channels != f_in:
        return None
    if call.spec.kind == "depthwise":
        return f_in * f_out
    pointwise = static_shape(call.pointwise_filter)
    return None if not pointwise or pointwise[-1] is None else int(pointwise[-1])


def empty_result(call: Call, shape: list[int]) -> Any:
    """Zeros of ``shape``, still connected to input and filter so gradients are zeros
    rather than None (an optimizer expects a gradient for every variable it trains)."""
    x = tf.convert_to_tensor(call.input)
    link = tf.reduce_sum(x) * 0 + tf.reduce_sum(tf.cast(call.filter, x.dtype)) * 0
    return tf.zeros(shape, x.dtype) + link
