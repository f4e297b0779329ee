"""The wrapper installed in place of each convolution function, and its fast check.

The hot path is a plain closure, not a wrapt FunctionWrapper: tf-facts measured a wrapt
wrapper at +2 us a call against +0.2 us for a closure, which alone would spend most of the
1% budget on a typical layer. wrapt still does the import hooks (_bootstrap.py).

A call the fast check proves healthy goes straight to TensorFlow with its arguments
untouched. Anything else goes to pipeline.handle, which binds and checks it in full.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from convfix import state
from convfix.ops import OpSpec

FastCheck = Callable[[tuple[Any, ...], dict[str, Any]], bool]
MARK = "__convfix_original__"


class Capabilities:
    """Types and facts the fast check relies on, probed once when TensorFlow is patched.
    Mutable: the Keras hook adds Keras' variable type when Keras is imported."""

    __slots__ = ("eager", "filter_types", "float_ids", "keras_variable", "onednn", "symbolic")

    def __init__(
        self,
        eager: type,
        symbolic: type,
        filter_types: frozenset[type],
        float_ids: frozenset[int],
        onednn: bool,
    ) -> None:
        self.eager = eager
        self.symbolic = symbolic
        self.filter_types = filter_types
        self.float_ids = float_ids
        self.onednn = onednn
        self.keras_variable: Any = None  # Any: a type only known once Keras is imported


def make_fast_check(spec: OpSpec, function: Callable[..., Any], caps: Capabilities) -> FastCheck:
    """A check that returns True only for calls that are certainly healthy: tensors of one
    floating dtype, the exact rank, channels the filter accepts, no empty or unknown
    dimension where oneDNN mishandles it, padding "SAME", or "VALID" with a kernel that
    fits. False means "look closer", never "bad"."""
    params = list(inspect.signature(function).parameters)
    at = {name: params.index(name) for name in params}
    i_name, f_name = spec.input_params[0], spec.filter_params[0]
    i_pos, f_pos = at[i_name], at[f_name]
    p_name = spec.padding_param
    p_pos = at[p_name]
    p_default = inspect.signature(function).parameters[p_name].default
    d_names = [n for n in spec.dilations_params if n in at]
    fmt_name = spec.data_format_param
    fmt_pos = at.get(fmt_name, len(params))
    w_name = spec.pointwise_param
    w_pos = at[w_name] if w_name else -1
    spatial = spec.spatial
    transpose = spec.kind == "transpose"
    depthwise = spec.kind in ("depthwise", "separable")

    def fast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        n = len(args)
        x: Any = args[i_pos] if n > i_pos else kwargs.get(i_name)
        f: Any = args[f_pos] if n > f_pos else kwargs.get(f_name)
        kind = type(x)
        if kind is not caps.eager and kind is not caps.symbolic:
            return False
        if type(f) is caps.keras_variable:
            f = f._value  # the tf.Variable behind a Keras 3 variable: its dtype is a DType
        if type(f) not in caps.filter_types:
            return False
        dtype = x.dtype
        if dtype is not f.dtype or id(dtype) not in caps.float_ids:
            return False
        if w_name is not None:
            w: Any = args[w_pos] if n > w_pos else kwargs.get(w_name)
            if type(w) is caps.keras_variable:
                w = w._value
            if type(w) not in caps.filter_types or w.dtype is not dtype:
                return False
        dims = x.shape._dims
        f_dims = f.shape._dims
        if dims is None or f_dims is None:
            return False
        rank = len(f_dims) if spatial is None else spatial + 2
        # With oneDNN an empty dimension is answered wrongly; an unknown one (tracing)
        # may be empty at run time: both go to the full path.
        if len(dims) != rank or (caps.onednn and (0 in dims or None in dims)):
            return False
        if transpose:
            return True
        fmt = args[fmt_pos] if n > fmt_pos else kwargs.get(fmt_name)
        first = 2 if type(fmt) is str and fmt.startswith("NC") else 1
        channels, f_in = dims[1 if first == 2 else -1], f_dims[-2]
        if channels is None or f_in is None:
            return False
        if (channels != f_in) if depthwise else (f_in == 0 or channels % f_in):
            return False  # TensorFlow refuses it; the layout policy may have a reading
        padding = args[p_pos] if n > p_pos else kwargs.get(p_name, p_default)
        if padding == "SAME":
            return True
        if padding != "VALID":
            return False
        for d_name in d_names:
            d = args[at[d_name]] if n > at[d_name] else kwargs.get(d_name)
            if (
                d is not None
                and d != 1
                and not (type(d) in (list, tuple) and all(v == 1 for v in d))
            ):
                return False
        for i in range(rank - 2):
            size, kernel = dims[first + i], f_dims[i]
            if size is None or kernel is None or size < kernel:
                return False
        return True

    return fast


def make_entry(
    original: Callable[..., Any],
    fast: FastCheck | None,
    slow: Callable[[tuple[Any, ...], dict[str, Any]], Any],
) -> Callable[..., Any]:
    """The wrapper: pass through when off or nested, fast check, else the slow path."""
    flags = state.flags
    local = state.local

    def convfix_entry(*args: Any, **kwargs: Any) -> Any:
        if local.depth or not (flags.active or flags.overrides):
            return original(*args, **kwargs)
        if flags.overrides and not state.enabled():
            return original(*args, **kwargs)
        local.depth += 1
        try:
            try:
                healthy = fast is not None and fast(args, kwargs)
            except Exception:  # an odd argument type: let the full path look at it
                healthy = False
            if healthy:
                return original(*args, **kwargs)
            return slow(args, kwargs)
        finally:
            local.depth -= 1

    functools.update_wrapper(convfix_entry, original)
    setattr(convfix_entry, MARK, original)
    return convfix_entry
