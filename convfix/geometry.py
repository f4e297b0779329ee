"""Static shape arithmetic for convolutions: what TensorFlow would compute, in Python.

Pure functions on lists of ints (None = unknown). No TensorFlow import: values only need
a ``.shape`` (TensorShape, tuple) or to be nested sequences.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

Shape = list[int | None]


def static_shape(value: Any) -> Shape | None:
    """The statically known shape of a tensor, variable, array or nested list; None if the
    rank itself is unknown."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return _nested_shape(value)
    if getattr(shape, "rank", 0) is None:  # TensorShape of unknown rank
        return None
    return [None if d is None else int(d) for d in shape]


def _nested_shape(value: Any) -> Shape | None:
    shape: Shape = []
    while isinstance(value, (list, tuple)):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape if shape or isinstance(value, (int, float, bool)) else None


def per_spatial(value: Any, spatial: int, channels_last: bool) -> list[int] | None:
    """Strides or dilations as one int per spatial dimension, read the way TensorFlow's
    ``_get_sequence`` reads them; None when the value is not one of those forms."""
    if value is None:
        return [1] * spatial
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * spatial
    if not isinstance(value, Sequence) or isinstance(value, str):
        return None
    items = list(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return None
    if len(items) == 1:
        return items * spatial
    if len(items) == spatial:
        return items
    if len(items) == spatial + 2:
        return items[1:-1] if channels_last else items[2:]
    return None


def explicit_pads(padding: Any, spatial: int, channels_last: bool) -> list[tuple[int, int]] | None:
    """Explicit padding ``[[lo, hi], ...]`` (all dims) as (lo, hi) per spatial dimension."""
    if isinstance(padding, str) or not isinstance(padding, Sequence):
        return None
    pairs = [tuple(p) for p in padding]
    if len(pairs) != spatial + 2 or not all(
        len(p) == 2 and all(isinstance(v, int) for v in p) for p in pairs
    ):
        return None
    chosen = pairs[1:-1] if channels_last else pairs[2:]
    return [(int(lo), int(hi)) for lo, hi in chosen]


def effective_kernel(kernel: Sequence[int | None], dilations: Sequence[int]) -> list[int | None]:
    """Size of a dilated kernel: (k - 1) * d + 1."""
    return [None if k is None else (k - 1) * d + 1 for k, d in zip(kernel, dilations)]


def output_size(
    size: int | None, kernel: int | None, stride: int, padding: str | tuple[int, int]
) -> int | None:
    """One spatial output size as TensorFlow's GetWindowedOutputSize computes it
    (negative means TensorFlow raises "Computed output size would be negative")."""
    if size is None:
        return None
    if padding == "SAME":
        return -(-size // stride)
    if kernel is None:
        return None
    lo, hi = padding if isinstance(padding, tuple) else (0, 0)
    return (size + lo + hi - kernel + stride) // stride


def shown_padding(padding: Any) -> Any:
    """Padding as events and messages show it: a name as is, an explicit list as text."""
    return padding if isinstance(padding, str) else str(padding)


def shape_values(value: Any) -> list[int] | None:
    """A transpose's ``output_shape`` as ints (list, tuple, NumPy, TensorShape, tensor);
    None when it is known only at run time."""
    tf = sys.modules.get("tensorflow")  # a tensor exists only once TensorFlow is imported
    if tf is not None and isinstance(value, tf.Tensor):
        value = tf.get_static_value(value)
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        return None
