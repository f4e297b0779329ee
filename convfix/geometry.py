"""Static shape arithmetic for convolutions: what TensorFlow would compute, in Python.

Spatial sizes, strides and dilations per dimension, output sizes, the windows a call
reads (and where TensorFlow's SAME padding goes negative), padding as shown in events.

Pure functions on lists of ints (None = unknown). No TensorFlow import: values only need
a ``.shape`` (TensorShape, tuple) or to be nested sequences.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
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
    if hasattr(value, "tolist"):  # NumPy scalars and arrays, which TensorFlow takes too
        value = value.tolist()
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
    if hasattr(padding, "tolist"):
        padding = padding.tolist()
    if isinstance(padding, str) or not isinstance(padding, Sequence):
        return None
    if not all(isinstance(p, Sequence) for p in padding):
        return None  # not pairs: TensorFlow refuses it with its own error
    pairs = [tuple(p) for p in padding]
    if len(pairs) != spatial + 2 or not all(
        len(p) == 2 and all(isinstance(v, int) for v in p) for p in pairs
    ):
        return None
    chosen = pairs[1:-1] if channels_last else pairs[2:]
    return [(int(lo), int(hi)) for lo, hi in chosen]


def padding_name(padding: Any) -> str | None:
    """A padding name as TensorFlow reads it in any case ("SAME", "VALID", "EXPLICIT"...),
    upper-cased; None for an explicit list. (TensorFlow itself refuses lower case: the
    padding policy repairs that; the rules judge what the call would mean.)"""
    return padding.upper() if isinstance(padding, str) else None


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


def output_elements(value: Any) -> list[Any] | None:
    """A transpose's ``output_shape`` element by element, as given: the items of a list,
    tuple or array, or the inputs of the ``tf.stack`` a graph tensor was made by (Keras 2
    stacks its output shape); None when its elements cannot be told apart."""
    op = getattr(value, "op", None)  # a graph tensor (an eager one has no op to read)
    if op is not None and getattr(value, "graph", None) is not None:
        return list(op.inputs) if getattr(op, "type", None) == "Pack" else None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def output_dims(value: Any) -> Shape | None:
    """A transpose's ``output_shape`` as ints where known (Python or NumPy ints, tensors of
    known value) and None where known only when the graph runs; None when its length is
    not known either."""
    known = shape_values(value)
    if known is not None:
        return list(known)
    elements = output_elements(value)
    return None if elements is None else [_dim(v) for v in elements]


def _dim(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(value, tf.Tensor):
        value = tf.get_static_value(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def reads_batch_of(value: Any, x: Any) -> bool:
    """Is ``value`` the graph tensor ``tf.shape(x)[0]``, ``x``'s batch size as the graph
    runs? (Keras 3 passes a transpose's output batch so when the batch is unknown.) Read
    from the ops that made it: a StridedSlice taking element 0 of x's Shape."""
    tf = sys.modules.get("tensorflow")
    op = getattr(value, "op", None)
    if tf is None or op is None or getattr(op, "type", None) != "StridedSlice":
        return False
    source = op.inputs[0]
    if source.op.type != "Shape" or source.op.inputs[0].name != getattr(x, "name", None):
        return False
    if source.graph is not getattr(x, "graph", None):
        return False
    masks = [op.get_attr(m) for m in ("shrink_axis_mask", "ellipsis_mask", "new_axis_mask")]
    begin, strides = (tf.get_static_value(t) for t in (op.inputs[1], op.inputs[3]))
    if begin is None or strides is None or list(strides) != [1] or not masks[0] & 1:
        return False
    return masks[1] == 0 and masks[2] == 0 and (list(begin) == [0] or op.get_attr("begin_mask") & 1)


def spatial_sizes(shape: Sequence[int | None], spatial: int, channels_last: bool) -> Shape:
    """The spatial dimensions of an input's shape (any number of leading batch dims)."""
    return list(shape[-spatial - 1 : -1] if channels_last else shape[-spatial:])


@dataclass(frozen=True, slots=True)
class Window:
    """One spatial dimension of a call, all sizes known."""

    size: int
    kernel: int  # dilated
    stride: int
    pads: tuple[int, int]
    out: int


def windows_of(
    sizes: Sequence[int | None],
    kernel: Sequence[int | None],
    strides: Any,
    dilations: Any,
    padding: Any,
    spatial: int,
    last: bool,
) -> list[Window] | None:
    """Per spatial dimension, the window geometry of a call from its raw arguments; None
    where a size, stride or padding is not known."""
    steps = per_spatial(strides, spatial, last)
    rates = per_spatial(dilations, spatial, last)
    if steps is None or rates is None or min(steps + rates) < 1:
        return None
    same = isinstance(padding, str) and padding == "SAME"
    valid = isinstance(padding, str) and padding == "VALID"
    given = explicit_pads(padding, spatial, last)
    if not (same or valid or given):
        return None
    found = []
    for i, (n, k, s) in enumerate(zip(sizes, effective_kernel(kernel, rates), steps)):
        if n is None or k is None:
            return None
        if same:
            out = -(-n // s)
            total = max((out - 1) * s + k - n, 0)
            pads = (total // 2, total - total // 2)
        else:
            pads = given[i] if given else (0, 0)
            out = (n + pads[0] + pads[1] - k) // s + 1
        found.append(Window(n, k, s, pads, out))
    return found


def single_windows(dims: list[Window]) -> list[bool]:
    """Per dimension: one output whose window is strided or reaches into padding."""
    return [w.out == 1 and w.kernel >= 2 and (w.stride >= 2 or w.pads != (0, 0)) for w in dims]


def crop_sizes(dims: list[Window]) -> list[int]:
    """Per dimension, the input positions SAME windows read where TF 2.21's Conv3D outside
    oneDNN would shift them (``total <= -2``), else the whole size."""
    return [w.size - _overshoot(w) if _overshoot(w) >= 2 else w.size for w in dims]


def _overshoot(w: Window) -> int:
    """How far TensorFlow's SAME padding total for ``w`` falls below zero."""
    return max(0, w.size - ((w.out - 1) * w.stride + w.kernel))
