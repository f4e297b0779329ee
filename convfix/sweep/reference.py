"""A float64 NumPy reference for TensorFlow's convolutions, written from their definitions.

No TensorFlow here: the property tests compare TensorFlow (with and without convfix) to
this, so it must not share TensorFlow's code or its bugs. Small shapes only: one
``einsum`` per kernel offset over strided slices of the padded input.

Conventions follow TensorFlow's:

- ``conv``: cross-correlation. Filter ``[k1..kN, in_c / groups, out_c]``; the input's
  channels are ``groups * filter in-channels`` and output channel ``o`` reads group
  ``o // (out_c // groups)``.
- ``depthwise``: filter ``[kh, kw, in_c, mult]``; output channel ``c * mult + m``.
- ``separable``: depthwise (with the strides, padding and dilations), then a 1x1 pointwise
  filter ``[1, 1, in_c * mult, out_c]``.
- ``transpose``: ``conv*_transpose(y, filters [k..., out_c, in_c], output_shape, ...)``, the
  adjoint of ``conv`` on an input of ``output_shape`` (scatter-add, then the forward
  padding cropped off).
- padding ``"SAME"`` (TensorFlow's split: the smaller half before), ``"VALID"``, or explicit
  ``[[lo, hi], ...]`` for every dimension (as tf.nn.conv2d takes it) or for the spatial
  ones only.
- strides and dilations: an int, one per spatial dimension, or one per dimension.
- data_format channels-last (``NWC``, ``NHWC``, ``NDHWC``, the default) or channels-first
  (``NCW``, ``NCHW``, ``NCDHW``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Pads = list[tuple[int, int]]

KINDS = ("conv", "depthwise", "separable", "transpose")


def channels_last(data_format: str | None) -> bool:
    """Is ``data_format`` (None: TensorFlow's default) a channels-last format?"""
    return data_format is None or not data_format.upper().startswith("NC")


def per_spatial(
    value: Any, spatial: int, data_format: str | None = None, name: str = ""
) -> list[int]:
    """Strides or dilations as one int per spatial dimension (TensorFlow's accepted forms)."""
    if value is None:
        return [1] * spatial
    if isinstance(value, (int, np.integer)):
        return [int(value)] * spatial
    items = [int(v) for v in value]
    if len(items) == 1:
        return items * spatial
    if len(items) == spatial:
        return items
    if len(items) == spatial + 2:
        return items[1:-1] if channels_last(data_format) else items[2:]
    raise ValueError(f"{name or 'value'} {value!r} does not fit {spatial} spatial dimensions")


def dilated(kernel: int, dilation: int) -> int:
    """The extent of a dilated kernel: (k - 1) * d + 1."""
    return (kernel - 1) * dilation + 1


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one dimension: (lo, hi), the smaller half first."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilated(kernel, dilation) - size, 0)
    return total // 2, total - total // 2


def spatial_pads(
    padding: Any,
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    data_format: str | None = None,
) -> Pads:
    """(lo, hi) per spatial dimension for a padding string or an explicit list."""
    spatial = len(sizes)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return [(0, 0)] * spatial
        if mode == "SAME":
            return [same_pads(*args) for args in zip(sizes, kernel, strides, dilations)]
        raise ValueError(f"padding {padding!r} is not SAME, VALID or a list")
    pairs = [(int(lo), int(hi)) for lo, hi in padding]
    if len(pairs) == spatial + 2:
        pairs = pairs[1:-1] if channels_last(data_format) else pairs[2:]
    if len(pairs) != spatial or any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"explicit padding {padding!r} does not fit {spatial} spatial dims")
    return pairs


def windowed_size(size: int, kernel: int, stride: int, pads: tuple[int, int]) -> int:
    """One output size: floor((padded - kernel) / stride) + 1, ValueError when negative
    (0 when the window overhangs the padded input by no more than a stride)."""
    out = (size + pads[0] + pads[1] - kernel) // stride + 1
    if out < 0:
        raise ValueError(f"output size would be negative: size {size}, kernel {kernel}")
    return out


def _geometry(
    x_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Any,
    padding: Any,
    dilations: Any,
    data_format: str | None,
) -> tuple[list[int], list[int], Pads, list[int]]:
    spatial = len(kernel)
    s = per_spatial(strides, spatial, data_format, "strides")
    d = per_spatial(dilations, spatial, data_format, "dilations")
    if min(s + d) < 1:
        raise ValueError("strides and dilations must be >= 1")
    sizes = list(x_shape[1:-1]) if channels_last(data_format) else list(x_shape[2:])
    pads = spatial_pads(padding, sizes, kernel, s, d, data_format)
    out = [
        windowed_size(n, dilated(k, di), st, p)
        for n, k, st, di, p in zip(sizes, kernel, s, d, pads)
    ]
    return s, d, pads, out


def output_shape(
    x_shape: Sequence[int],
    f_shape: Sequence[int],
    *,
    strides: Any = 1,
    padding: Any = "VALID",
    dilations: Any = 1,
    data_format: str | None = None,
    kind: str = "conv",
    pointwise_shape: Sequence[int] | None = None,
    out_shape: Sequence[int] | None = None,
) -> list[int]:
    """The shape TensorFlow should answer with; ValueError where it should refuse the call
    (channel mismatch, window larger than the padded input by a stride or more)."""
    spatial = len(f_shape) - 2
    if len(x_shape) != spatial + 2:
        raise ValueError(f"input rank {len(x_shape)} for a {spatial}-d filter")
    last = channels_last(data_format)
    channels = x_shape[-1] if last else x_shape[1]
    f_in, f_out = f_shape[-2], f_shape[-1]
    if kind == "transpose":
        if out_shape is None or len(out_shape) != spatial + 2:
            raise ValueError("transpose needs an output_shape of the input's rank")
        out_channels = out_shape[-1] if last else out_shape[1]
        if out_channels != f_in:
            raise ValueError(f"output_shape {out_shape} vs transpose filter {f_shape}")
        forward = output_shape(
            out_shape,
            f_shape,
            strides=strides,
            padding=padding,
            dilations=dilations,
            data_format=data_format,
        )
        if list(forward) != list(x_shape):
            raise ValueError(f"output_shape {out_shape} does not give input {x_shape}")
        return list(out_shape)
    if kind == "conv":
        if f_in < 1 or channels % f_in or f_out % (channels // f_in):
            raise ValueError(f"input channels {channels} vs filter {f_shape}")
        out_c = f_out
    elif kind in ("depthwise", "separable"):
        if channels != f_in:
            raise ValueError(f"input channels {channels} vs depthwise filter {f_shape}")
        out_c = f_in * f_out
        if kind == "separable":
            if pointwise_shape is None or list(pointwise_shape[:-1]) != [1, 1, out_c]:
                raise ValueError(f"pointwise filter {pointwise_shape} for {out_c} channels")
            out_c = pointwise_shape[-1]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    _, _, _, out = _geometry(x_shape, f_shape[:spatial], strides, padding, dilations, data_format)
    return [x_shape[0], *out, out_c] if last else [x_shape[0], out_c, *out]


def conv(
    x: Any,
    f: Any,
    *,
    strides: Any = 1,
    padding: Any = "VALID",
    dilations: Any = 1,
    data_format: str | None = None,
    kind: str = "conv",
    pointwise: Any = None,
    out_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """TensorFlow's convolution of ``kind`` in float64 (see the module docstring).
    Grouping is read from the shapes. ``out_shape`` is the transpose's output_shape."""
    x = np.asarray(x, np.float64)
    f = np.asarray(f, np.float64)
    spatial = f.ndim - 2
    if spatial not in (1, 2, 3):
        raise ValueError(f"filter rank {f.ndim}: 1 to 3 spatial dimensions")
    last = channels_last(data_format)
    expected = output_shape(
        x.shape,
        f.shape,
        strides=strides,
        padding=padding,
        dilations=dilations,
        data_format=data_format,
        kind=kind,
        pointwise_shape=None if pointwise is None else np.shape(pointwise),
        out_shape=out_shape,
    )
    if not last:  # compute channels-last with per-spatial arguments, hand back channels-first
        to_last = (0, *range(2, spatial + 2), 1)
        kernel = f.shape[:spatial]
        s = per_spatial(strides, spatial, data_format, "strides")
        d = per_spatial(dilations, spatial, data_format, "dilations")
        sizes = list(out_shape or [])[2:] if kind == "transpose" else list(x.shape[2:])
        pads = spatial_pads(padding, sizes, kernel, s, d, data_format)
        result = conv(
            x.transpose(to_last),
            f,
            strides=s,
            padding=padding if isinstance(padding, str) else pads,
            dilations=d,
            kind=kind,
            pointwise=pointwise,
            out_shape=None if out_shape is None else [out_shape[i] for i in to_last],
        )
        return np.transpose(result, (0, spatial + 1, *range(1, spatial + 1)))
    if kind == "transpose":
        result = _transpose(x, f, list(out_shape or []), strides, padding, dilations)
    else:
        result = _forward(x, f, strides, padding, dilations, depthwise=kind != "conv")
        if kind == "separable":
            result = _forward(result, np.asarray(pointwise, np.float64), 1, "VALID", 1)
    assert list(result.shape) == expected, (result.shape, expected)
    return result


def conv_transpose(
    y: Any,
    f: Any,
    out_shape: Sequence[int],
    *,
    strides: Any = 1,
    padding: Any = "SAME",
    dilations: Any = 1,
    data_format: str | None = None,
) -> np.ndarray:
    """``conv(..., kind="transpose")`` with TensorFlow's argument order."""
    return conv(
        y,
        f,
        strides=strides,
        padding=padding,
        dilations=dilations,
        data_format=data_format,
        kind="transpose",
        out_shape=out_shape,
    )


def _offsets(kernel: Sequence[int]) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in idx) for idx in np.ndindex(*kernel)]


def _window(
    offset: tuple[int, ...], dilations: Sequence[int], strides: Sequence[int], out: Sequence[int]
) -> tuple[slice, ...]:
    """The slice of the padded input that kernel tap ``offset`` reads for every output."""
    return (
        slice(None),
        *(
            slice(o * d, o * d + (n - 1) * s + 1 if n else o * d, s)
            for o, d, s, n in zip(offset, dilations, strides, out)
        ),
        slice(None),
    )


def _forward(
    x: np.ndarray,
    f: np.ndarray,
    strides: Any,
    padding: Any,
    dilations: Any,
    depthwise: bool = False,
) -> np.ndarray:
    spatial = f.ndim - 2
    kernel = f.shape[:spatial]
    s, d, pads, out = _geometry(x.shape, kernel, strides, padding, dilations, None)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    batch, channels = x.shape[0], x.shape[-1]
    f_in, f_out = f.shape[-2], f.shape[-1]
    if depthwise:
        result = np.zeros([batch, *out, channels, f_out])
        for offset in _offsets(kernel):
            patch = xp[_window(offset, d, s, out)]
            result += np.einsum("...c,cm->...cm", patch, f[offset])
        return result.reshape([batch, *out, channels * f_out])
    groups = channels // f_in
    result = np.zeros([batch, *out, groups, f_out // groups])
    for offset in _offsets(kernel):
        patch = xp[_window(offset, d, s, out)].reshape([batch, *out, groups, f_in])
        tap = f[offset].reshape(f_in, groups, f_out // groups)
        result += np.einsum("...gc,cgo->...go", patch, tap)
    return result.reshape([batch, *out, f_out])


def _transpose(
    y: np.ndarray,
    f: np.ndarray,
    out_shape: list[int],
    strides: Any,
    padding: Any,
    dilations: Any,
) -> np.ndarray:
    spatial = f.ndim - 2
    kernel = f.shape[:spatial]
    s, d, pads, out = _geometry(out_shape, kernel, strides, padding, dilations, None)
    sizes = out_shape[1:-1]
    padded = np.zeros(
        [out_shape[0], *(n + lo + hi for n, (lo, hi) in zip(sizes, pads)), f.shape[-2]]
    )
    for offset in _offsets(kernel):
        padded[_window(offset, d, s, out)] += np.einsum("...i,oi->...o", y, f[offset])
    crop = (slice(None), *(slice(lo, lo + n) for n, (lo, _) in zip(sizes, pads)), slice(None))
    return padded[crop]
