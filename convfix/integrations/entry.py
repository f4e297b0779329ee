"""The wrapper installed in place of each convolution function, and its fast check.

The hot path is a plain function, not a wrapt FunctionWrapper: tf-facts measured a wrapt
wrapper at +2 us a call against +0.2 us for a closure, which alone would spend most of the
1% budget on a typical layer. wrapt still does the import hooks (_bootstrap.py). Where it
can, the function installed is the express lane (express.py), generated with the wrapped
function's signature; it hands everything it does not clear to the fast check here.

A call the fast check clears goes straight to TensorFlow with its arguments untouched;
if TensorFlow raises, pipeline.recover decides whether a policy repairs it (dtype
mismatches are found this way: reading dtypes on every call cost more than the rest of the
check, measured in front of a real op). Anything else goes to pipeline.handle first.

The routes a call takes (README, "Architecture", uses the same words):

=============  =======================================  ===============================
route          taken when                               what runs
=============  =======================================  ===============================
off            convfix is off here (mode, override)     TensorFlow's function, as made
express lane   the lane's quick check clears the call   TensorFlow's function, as made
fast check     no lane, or the quick check did not      TensorFlow's function, as made
               clear it, and this check does
replay         memory holds a plan for the signature    the remembered repairs
full path      anything else                            bind, guard, policies, dispatch
=============  =======================================  ===============================

On the first three, an error TensorFlow raises goes to pipeline.recover (a policy may
claim it, or recovery from out of memory); on the last two, pipeline.recovery sees the
dispatch. The quick and fast checks are conservative: they clear only calls the guard's
rules (guard/rules.py) clear, which tests/integration/test_fast_check_is_conservative.py
holds them to.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any

from convfix import runtime
from convfix.geometry import effective_kernel, per_spatial, windows_of
from convfix.guard.build import Build
from convfix.guard.rules import dtype_name, misanswered
from convfix.integrations.tracebacks import trimmed
from convfix.memory import Memory
from convfix.ops import OpSpec

FastCheck = Callable[[tuple[Any, ...], dict[str, Any]], bool]
Recover = Callable[[tuple[Any, ...], dict[str, Any], Exception], Any]
MARK = "__convfix_original__"


class Capabilities:
    """Types and facts the fast check relies on, probed once when TensorFlow is patched.
    Mutable: the Keras hook adds Keras' variable type when Keras is imported."""

    __slots__ = ("build", "direct_filter_types", "eager", "filter_types", "onednn", "symbolic")

    def __init__(
        self,
        eager: type,
        symbolic: type,
        filter_types: set[type],
        build: Build,
        direct_filter_types: frozenset[type] = frozenset(),
    ) -> None:
        self.eager = eager
        self.symbolic = symbolic
        self.filter_types = filter_types
        self.build = build
        # The fast checks treat "oneDNN answers" as one risk (every oneDNN bug at once):
        # coarser than the rules, so they clear nothing the rules would object to.
        self.onednn = build.onednn
        # Filters whose .shape is a cheap cached TensorShape, read directly every call.
        self.direct_filter_types = direct_filter_types


class FilterShapes:
    """Static shapes of the filters seen recently, by identity.

    A filter is usually the same variable call after call, and reading a shape costs more
    than the rest of the check (a Keras variable's shape: ~2.6 us). A weak reference tells
    a live filter from a new object that reuses a dead one's id. Filters whose shape can
    change (unknown dimensions) are not remembered.
    """

    __slots__ = ("_caps", "_entries")
    limit = 512

    def __init__(self, caps: Capabilities) -> None:
        self._caps = caps
        self._entries: dict[int, tuple[weakref.ref[Any], tuple[int, ...]]] = {}

    @property
    def entries(self) -> dict[int, tuple[weakref.ref[Any], tuple[int, ...]]]:
        return self._entries

    def learn(self, value: Any) -> tuple[int, ...] | None:
        if type(value) not in self._caps.filter_types:
            return None
        shape = getattr(value, "shape", None)
        dims = None if shape is None or getattr(shape, "rank", 0) is None else tuple(shape)
        if dims is None or None in dims:
            return None
        if len(self._entries) >= self.limit:
            self._entries.clear()
        self._entries[id(value)] = (weakref.ref(value), dims)
        return dims


def make_fast_check(
    spec: OpSpec,
    function: Callable[..., Any],
    caps: Capabilities,
    filters: FilterShapes,
    memory: Memory,
) -> FastCheck:
    """A check that returns True only for calls TensorFlow certainly answers by itself,
    rightly or with its own error: a tensor input of the exact rank, a filter of known
    shape, no empty or unknown dimension where oneDNN mishandles it, padding "SAME", or
    "VALID" with a kernel that fits. What it leaves out on purpose (dtypes, channels,
    padding case) makes TensorFlow raise, and recovery repairs it then: a healthy call
    pays for none of those checks. False means "look closer", never "bad"."""
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
    s_name = spec.strides_param or ""
    s_pos = at.get(s_name, len(params))
    s_default = inspect.signature(function).parameters[s_name].default if s_name in at else None
    spatial = spec.spatial
    transpose = spec.kind == "transpose"
    # depthwise and separable give garbage for strides and dilations together, and oneDNN's
    # conv3d may corrupt memory for a SAME dilated kernel longer than the input: any
    # dilation sends them to the full check, whatever the padding.
    dilation_checked_always = spec.kind in ("depthwise", "separable") or (
        caps.onednn and spec.kind == "conv" and spatial == 3
    )
    # Every name the check reads is a closure variable: on a ~70 us call each attribute
    # lookup saved shows in the ratio.
    eager, symbolic, onednn, build = caps.eager, caps.symbolic, caps.onednn, caps.build
    # A traced transpose always takes the full check (once per trace): TensorFlow checks its
    # output_shape only when the graph runs, where no recovery can say what is wrong.
    traced = None if transpose else symbolic
    o_pos = at.get("output_shape", len(params))
    known = filters.entries
    learn = filters.learn
    direct = caps.direct_filter_types
    flagged = memory.flagged
    routed = memory.routed
    # Without oneDNN nothing aborts and a SAME call cannot come back wrongly shaped: a wrong
    # rank, dtype or padding name makes TensorFlow raise, and recovery repairs it then. So
    # a SAME call on that build needs only its input's type checked (and its data_format:
    # a channels-first call is repaired before it runs, format_risk below).
    # A 3-D transpose of an empty input crashes TF's kernel on every build (rules.py).
    empty_risk = transpose and spatial in (3, None)
    lean = not onednn and not dilation_checked_always and not empty_risk
    # Strided windows some kernel answers with wrong values (guard/rules.py): Conv3D
    # outside oneDNN (any build: oneDNN leaves some dtypes to Eigen), and oneDNN's own.
    window_risk = not transpose and (onednn or (spec.kind == "conv" and spatial in (3, None)))
    # No channels-first CPU kernels (oneDNN off): such a call is repaired before it runs
    # (guard/rules.py), since inside tf.function TensorFlow's error comes only when the
    # graph runs. Eagerly, where a GPU is visible, the call runs there, or under a CPU scope
    # TensorFlow's error brings it to recovery: those stay cleared.
    format_risk = build.has("no_channels_first_cpu_kernels")
    eager_format_risk = format_risk and not build.gpu

    def fast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        n = len(args)
        x: Any = args[i_pos] if n > i_pos else kwargs.get(i_name)
        kind = type(x)
        if kind is not eager and kind is not traced:
            return False
        f: Any = args[f_pos] if n > f_pos else kwargs.get(f_name)
        if flagged and id(f) in flagged:
            return False  # repaired before: the replay table knows this call
        if format_risk and (eager_format_risk or kind is symbolic):
            fmt = args[fmt_pos] if n > fmt_pos else kwargs.get(fmt_name)
            if type(fmt) is str and fmt.startswith("NC"):
                return False
        if routed and x.shape._dims[1:] in routed:
            return False  # ran out of memory before: recovery knows its chunk size
        padding = args[p_pos] if n > p_pos else kwargs.get(p_name, p_default)
        strides = args[s_pos] if n > s_pos else kwargs.get(s_name, s_default)
        unit = not window_risk or unit_strides(strides)
        if lean and unit and padding == "SAME":
            return True
        if type(f) in direct:  # a tensor or tf.Variable: its shape is a cached attribute
            f_dims = f.shape._dims
        else:  # a Keras variable's shape costs ~2.6 us: remembered by identity
            entry = known.get(id(f))
            f_dims = entry[1] if entry is not None and entry[0]() is f else learn(f)
        dims = x.shape._dims  # TensorFlow reads input.shape next anyway: cached for it
        if f_dims is None or dims is None:
            return False
        rank = len(f_dims) if spatial is None else spatial + 2
        # With oneDNN an empty dimension is answered wrongly; an unknown one (tracing)
        # may be empty at run time: both go to the full path.
        if len(dims) != rank or (onednn and (0 in dims or None in dims)):
            return False
        # oneDNN: one input channel per group (a channel dim of 1, in either layout; a
        # depthwise multiplier of 2+) may meet its single-window bug at any stride.
        one_per_group = onednn and (
            (dims[-1] == 1 or dims[1] == 1) if spec.kind == "conv" else (f_dims[-1] or 0) >= 2
        )
        if not unit or (window_risk and one_per_group):
            fmt = args[fmt_pos] if n > fmt_pos else kwargs.get(fmt_name)
            rates = (args[at[d]] if n > at[d] else kwargs.get(d) for d in d_names)
            rate = next((r for r in rates if r is not None), None)
            if _misanswered(spec, dims, f_dims, strides, rate, padding, fmt, build, x):
                return False
        if transpose:
            if empty_risk and 0 in dims:
                return False
            if not onednn:
                return True  # TensorFlow raises on every impossible output_shape
            # oneDNN answers some without an error (guard/output_shape.py): a size of 0,
            # VALID with an input size of 1. An odd type raises: make_general catches it.
            out: Any = args[o_pos] if n > o_pos else kwargs.get("output_shape")
            if type(out) is eager:  # an eager tensor: its values, read once
                out = out.numpy()  # type: ignore[attr-defined]
            same = type(padding) is str and padding == "SAME"
            if 0 in out:
                return False
            if same or 1 not in dims[1:]:
                return True
            fmt = args[fmt_pos] if n > fmt_pos else kwargs.get(fmt_name)
            rates = (args[at[d]] if n > at[d] else kwargs.get(d) for d in d_names)
            rate = next((r for r in rates if r is not None), None)
            return _single_positions_fit(dims, f_dims, out, fmt, rate)
        if padding == "SAME" and not dilation_checked_always:
            return True
        if padding != "VALID" and padding != "SAME":
            return False
        for d_name in d_names:
            d = args[at[d_name]] if n > at[d_name] else kwargs.get(d_name)
            if (
                d is not None
                and d != 1
                and not (type(d) in (list, tuple) and all(v == 1 for v in d))
            ):
                return False
        if padding == "SAME":
            return True
        fmt = args[fmt_pos] if n > fmt_pos else kwargs.get(fmt_name)
        first = 2 if type(fmt) is str and fmt.startswith("NC") else 1
        for i in range(rank - 2):
            size, kernel = dims[first + i], f_dims[i]
            if size is None or kernel is None or size < kernel:
                return False
        return True

    return fast


def unit_strides(strides: Any) -> bool:
    """Strides of 1 everywhere, in any form TensorFlow takes (None: the default, 1)."""
    if strides is None or (type(strides) is int and strides == 1):
        return True
    # Plain ints only: it runs in the express lane, where nothing may raise (an array's
    # `== 1` would); anything else just takes the fast check.
    return type(strides) in (list, tuple) and all(type(v) is int and v == 1 for v in strides)


def _misanswered(
    spec: OpSpec,
    dims: tuple[int | None, ...],
    f_dims: tuple[int | None, ...],
    strides: Any,
    dilations: Any,
    padding: Any,
    fmt: Any,
    build: Build,
    x: Any,
) -> bool:
    """Would a strided call be answered wrongly (or can this not tell)? The guard's rule
    (guard/rules.py), from raw arguments."""
    last = not (type(fmt) is str and fmt.startswith("NC"))
    spatial = len(dims) - 2
    sizes = dims[1:-1] if last else dims[2:]
    found = windows_of(sizes, f_dims[:spatial], strides, dilations, padding, spatial, last)
    if found is None:
        return True
    channels = dims[-1] if last else dims[1]
    # read only here (strided or one-channel calls), and only where a dtype matters
    dtype = dtype_name(x) if build.has("single_window_bfloat16") else None
    reason = misanswered(spec.kind, spatial, padding, channels, f_dims[-1], found, build, dtype)
    return reason is not None


def _single_positions_fit(
    dims: tuple[int | None, ...], f_dims: tuple[int | None, ...], out: Any, fmt: Any, rate: Any
) -> bool:
    """A transpose's spatial dimensions with one input position ask for at least the
    dilated kernel (oneDNN answers a smaller one with no error: guard/output_shape.py).
    False where something is not known: the full path looks closer."""
    last = not (type(fmt) is str and fmt.startswith("NC"))
    spatial = len(dims) - 2
    sizes = dims[1:-1] if last else dims[2:]
    wanted = list(out)[1:-1] if last else list(out)[2:]
    rates = per_spatial(rate, spatial, last)
    if rates is None or len(wanted) != spatial:
        return False
    kernel = effective_kernel(f_dims[:spatial], rates)
    return all(
        size != 1 or (type(w) is int and k is not None and w >= k)
        for size, w, k in zip(sizes, wanted, kernel)
    )


def make_general(
    original: Callable[..., Any],
    fast: FastCheck | None,
    slow: Callable[[tuple[Any, ...], dict[str, Any]], Any],
    recover: Recover,
) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """The fast check route: pass through when off; the fast check, then TensorFlow, with
    recovery from its error; anything the fast check cannot clear goes to pipeline.handle
    (replay or full path)."""

    def general(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not runtime.enabled():
            return original(*args, **kwargs)
        try:
            healthy = not flags.budget and fast is not None and fast(args, kwargs)
        except Exception:  # an odd argument type: let the full path look at it
            healthy = False
        if not healthy:  # (with a budget, every call's bytes are checked against it)
            try:
                return slow(args, kwargs)
            except Exception as error:  # this frame and the entry: all that stays of ours
                raise trimmed(error)  # noqa: B904  (the same error, not a new one)
        try:
            return original(*args, **kwargs)
        except Exception as error:  # zero cost until raised (CPython 3.11+)
            try:
                return recover(args, kwargs, error)
            except Exception as final:
                raise trimmed(final)  # noqa: B904

    flags = runtime.flags
    return general


def make_entry(
    original: Callable[..., Any],
    general: Callable[[tuple[Any, ...], dict[str, Any]], Any],
    express: Callable[..., Any] | None = None,
) -> Callable[..., Any]:
    """The wrapper installed in place of ``original``: the express lane where one was
    generated (integrations/express.py), else a closure handing every call to ``general``."""

    def convfix_entry(*args: Any, **kwargs: Any) -> Any:
        return general(args, kwargs)

    entry = express if express is not None else convfix_entry
    functools.update_wrapper(entry, original)
    setattr(entry, MARK, original)
    return entry
