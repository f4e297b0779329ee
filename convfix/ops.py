"""Which convolution entry points exist and how their arguments are named.

One row per public function convfix wraps. The table knows nothing of TensorFlow's
objects: integrations/tensorflow.py looks the names up; call.py uses the parameter
names to bind a call; guard/rules.py uses the geometry (spatial rank, kind) to check it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["conv", "depthwise", "separable", "transpose"]


@dataclass(frozen=True, slots=True)
class OpSpec:
    """How one public convolution function takes its arguments."""

    name: str  # stable name used in events: "conv2d", "compat.v1.conv2d", ...
    kind: Kind
    spatial: int | None  # 1, 2, 3; None = read from the filter's rank (tf.nn.convolution)
    filter_params: tuple[str, ...]  # first non-None wins: v1 functions take filter= or filters=
    input_params: tuple[str, ...] = ("input",)  # first non-None wins (v1 conv1d: value=/input=)
    padding_param: str = "padding"
    strides_param: str | None = "strides"
    dilations_params: tuple[str, ...] = ("dilations",)
    data_format_param: str = "data_format"
    extra_batch_dims: bool = False  # TF itself folds leading batch dims (rank > N+2 is valid)
    pointwise_param: str | None = None  # separable_conv2d's second filter
    needs_tensor_input: bool = False  # TF reads input.shape first: a Python list fails


_CONV_V2 = ("filters",)
_CONV_V1 = ("filter", "filters")

# API attribute name -> spec, for tf.nn / tf.compat.v2.nn (the TF2 names).
V2_SPECS: dict[str, OpSpec] = {
    "conv1d": OpSpec("conv1d", "conv", 1, _CONV_V2, strides_param="stride", extra_batch_dims=True),
    "conv2d": OpSpec(
        "conv2d",
        "conv",
        2,
        _CONV_V2,
        extra_batch_dims=True,
        needs_tensor_input=True,
    ),
    "conv3d": OpSpec("conv3d", "conv", 3, _CONV_V2, extra_batch_dims=True, needs_tensor_input=True),
    "convolution": OpSpec("convolution", "conv", None, _CONV_V2, extra_batch_dims=True),
    "depthwise_conv2d": OpSpec("depthwise_conv2d", "depthwise", 2, ("filter",)),
    "separable_conv2d": OpSpec(
        "separable_conv2d",
        "separable",
        2,
        ("depthwise_filter",),
        pointwise_param="pointwise_filter",
    ),
    "conv1d_transpose": OpSpec("conv1d_transpose", "transpose", 1, ("filters",)),
    "conv2d_transpose": OpSpec("conv2d_transpose", "transpose", 2, ("filters",)),
    "conv3d_transpose": OpSpec("conv3d_transpose", "transpose", 3, ("filters",)),
    "conv_transpose": OpSpec("conv_transpose", "transpose", None, ("filters",)),
}

# tf.compat.v1.nn: the TF1 signatures (filter=, value=, rate=, dilation_rate=).
V1_SPECS: dict[str, OpSpec] = {
    "conv2d": OpSpec(
        "compat.v1.conv2d",
        "conv",
        2,
        _CONV_V1,
        extra_batch_dims=True,
        needs_tensor_input=True,
    ),
    "conv1d": OpSpec(
        "compat.v1.conv1d",
        "conv",
        1,
        ("filters",),
        input_params=("value", "input"),
        strides_param="stride",
        extra_batch_dims=True,
    ),
    "conv3d": OpSpec("compat.v1.conv3d", "conv", 3, _CONV_V1),
    "convolution": OpSpec(
        "compat.v1.convolution",
        "conv",
        None,
        _CONV_V1,
        dilations_params=("dilation_rate", "dilations"),
        extra_batch_dims=True,
    ),
    "depthwise_conv2d": OpSpec(
        "compat.v1.depthwise_conv2d",
        "depthwise",
        2,
        ("filter",),
        dilations_params=("rate", "dilations"),
    ),
    "separable_conv2d": OpSpec(
        "compat.v1.separable_conv2d",
        "separable",
        2,
        ("depthwise_filter",),
        dilations_params=("rate", "dilations"),
        pointwise_param="pointwise_filter",
    ),
    # Keras 2's Conv2DTranspose and Conv3DTranspose layers call these.
    "conv2d_transpose": OpSpec(
        "compat.v1.conv2d_transpose",
        "transpose",
        2,
        _CONV_V1,
        input_params=("value", "input"),
    ),
    "conv3d_transpose": OpSpec(
        "compat.v1.conv3d_transpose",
        "transpose",
        3,
        _CONV_V1,
        input_params=("value", "input"),
    ),
}


def default_data_format(spatial: int) -> str:
    """TensorFlow's channels-last format name for a spatial rank."""
    return {1: "NWC", 2: "NHWC", 3: "NDHWC"}[spatial]
