"""Properties of convfix against real TensorFlow (oneDNN on) and the NumPy reference.

(a) a call TensorFlow answers correctly is answered bit for bit as TensorFlow answers it,
    and nothing is logged;
(b) a repaired call matches the float64 reference of its documented repair, computed from
    the repaired operands;
(c) any other call raises ConvFixError or TensorFlow's own error, or answers with the shape
    (and the values) the reference gives: never an abort (run with ``-n 2``: an abort shows
    as a lost worker), never a wrongly shaped result.

Each drawn call is a ``Case``: its repr is Python, so a failing example can be pinned with
``@example(case=Case(...))``. Operand values come from ``Case.seed``.

Example counts come from the hypothesis profile ``CONVFIX_PROPERTIES_PROFILE`` (default
"ci"; "thorough" for a long run, "smoke" for a quick one); each test takes a share of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, event, example, given, note, settings
from hypothesis import strategies as st

import convfix
from convfix import events
from convfix.integrations.tensorflow import onednn_enabled
from convfix.sweep import reference as ref
from convfix.testing import capture_events
from tests.integration.conftest import unpatched

# TF warns, then answers garbage, for depthwise strides with dilations: (c) pins that below.
pytestmark = pytest.mark.filterwarnings("ignore:When dilation rate is greater than 1")

# -- profiles -----------------------------------------------------------------------------

settings.register_profile(
    "ci",
    max_examples=1500,  # 4,125 examples over the module (see the shares below)
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile("thorough", settings.get_profile("ci"), max_examples=10_000)
settings.register_profile("smoke", settings.get_profile("ci"), max_examples=40)
PROFILE = settings.get_profile(os.environ.get("CONVFIX_PROPERTIES_PROFILE", "ci"))


def share(fraction: float) -> settings:
    """This test's part of the profile's example budget."""
    return settings(PROFILE, max_examples=max(1, round(PROFILE.max_examples * fraction)))


# -- the ops ------------------------------------------------------------------------------

KIND = {
    "conv1d": "conv",
    "conv2d": "conv",
    "conv3d": "conv",
    "convolution": "conv",
    "depthwise_conv2d": "depthwise",
    "separable_conv2d": "separable",
    "conv2d_transpose": "transpose",
}
SPATIAL = {"conv1d": 1, "conv3d": 3, "convolution": None}  # None: 1 to 3; others 2
OPS = tuple(KIND)
FORWARD_OPS = tuple(op for op in OPS if KIND[op] != "transpose")
# Strides with dilations: tf.nn.convolution refuses them; depthwise and separable warn and
# answer garbage (measured). The other ops' kernels take them.
NO_STRIDED_DILATION = ("convolution", "depthwise_conv2d", "separable_conv2d")
CHANNELS_FIRST = {1: "NCW", 2: "NCHW", 3: "NCDHW"}
FLOATS = ("float16", "bfloat16", "float32", "float64")
DTYPES = (*FLOATS, "uint8", "int32")
NONEMPTY_BATCH = st.integers(1, 3)
TOLERANCE = {"float16": 1e-2, "bfloat16": 1e-2, "float32": 1e-4, "float64": 1e-10, "int32": 0}
# TensorFlow's own ways of rejecting a call (ConvFixError is a ValueError).
TF_ERRORS = (tf.errors.OpError, ValueError, TypeError)
ONEDNN = onednn_enabled()  # the build convfix guards for in this process


@dataclass(frozen=True)
class Case:
    """One convolution call, by shapes: the operands are drawn from ``seed``."""

    op: str
    x_shape: tuple[int, ...]  # the input (a transpose's: the gradient-side input)
    f_shape: tuple[int, ...]
    strides: tuple[int, ...] = ()  # one per spatial dimension; () = all 1
    dilation: int = 1
    padding: str | tuple[tuple[int, int], ...] = "SAME"  # explicit: (lo, hi) per spatial dim
    x_dtype: str = "float32"
    f_dtype: str = "float32"
    data_format: str | None = None  # None: the op's channels-last default
    out_shape: tuple[int, ...] | None = None  # conv2d_transpose's output_shape
    p_shape: tuple[int, ...] | None = None  # separable_conv2d's pointwise filter
    seed: int = 0

    @property
    def kind(self) -> str:
        return KIND[self.op]

    @property
    def spatial(self) -> int:
        return len(self.f_shape) - 2

    @property
    def last(self) -> bool:
        return ref.channels_last(self.data_format)

    @property
    def stride_list(self) -> list[int]:
        return list(self.strides) or [1] * self.spatial

    def tf_padding(self) -> Any:
        """The padding argument as TensorFlow takes it (explicit: every dimension)."""
        if isinstance(self.padding, str):
            return self.padding
        pairs = [list(p) for p in self.padding]
        return [[0, 0], *pairs, [0, 0]] if self.last else [[0, 0], [0, 0], *pairs]


def operands(case: Case) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """Input, filter and (separable) pointwise filter, drawn from the case's seed."""
    rng = np.random.default_rng(case.seed)

    def draw(shape: tuple[int, ...], dtype: str) -> tf.Tensor:
        if dtype == "uint8":
            values = rng.integers(0, 4, shape)
        elif dtype == "int32":
            values = rng.integers(-3, 4, shape)
        else:
            values = rng.standard_normal(shape)
        return tf.cast(tf.constant(values), dtype)

    x = draw(case.x_shape, case.x_dtype)
    f = draw(case.f_shape, case.f_dtype)
    w = None if case.p_shape is None else draw(case.p_shape, case.f_dtype)
    return x, f, w


def function(op: str) -> Callable[..., Any]:
    """The public function, looked up now: convfix patches tf.nn at session start."""
    return getattr(tf.nn, op)  # type: ignore[no-any-return]


def invoke(fn: Callable[..., Any], case: Case, x: Any, f: Any, w: Any = None, **over: Any) -> Any:
    """Call ``fn`` (a tf.nn function or its original) the way a user would for ``case``."""
    s, d, n = case.stride_list, case.dilation, case.spatial
    padding = over.get("padding", case.tf_padding())
    fmt = {"data_format": case.data_format} if case.data_format else {}
    full = [1, *s, 1] if case.last else [1, 1, *s]  # per-dimension lists, format order
    full_d = [1, *[d] * n, 1] if case.last else [1, 1, *[d] * n]
    if case.op == "conv1d":
        return fn(x, f, stride=s[0], padding=padding, dilations=d, **fmt)
    if case.op == "conv2d":
        return fn(x, f, strides=s, padding=padding, dilations=[d] * n, **fmt)
    if case.op == "conv3d":
        return fn(x, f, strides=full, padding=padding, dilations=full_d, **fmt)
    if case.op == "convolution":
        return fn(x, f, strides=s, padding=padding, dilations=[d] * n, **fmt)
    if case.op == "depthwise_conv2d":
        return fn(x, f, strides=full, padding=padding, dilations=[d] * n, **fmt)
    if case.op == "separable_conv2d":
        return fn(x, f, w, strides=full, padding=padding, dilations=[d] * n, **fmt)
    out_shape = over.get("output_shape", case.out_shape)
    return fn(x, f, list(out_shape or ()), strides=s, padding=padding, dilations=d, **fmt)


@contextmanager
def tensorflow_alone() -> Iterator[None]:
    """TensorFlow without convfix (for calls known to be safe to make unguarded)."""
    with convfix.override(mode="off"):
        yield


def as_f64(value: Any) -> np.ndarray:
    return np.asarray(tf.cast(value, tf.float64).numpy())


def relative_error(y: np.ndarray, expected: np.ndarray, magnitude: np.ndarray) -> float:
    """‖y - ref‖ / ‖|x| * |f|‖: the error against the reference, scaled by the reference of
    the operands' magnitudes (the scale of a convolution's rounding error). Scaling by ‖ref‖
    instead fails TensorFlow's correct 16-bit answers whenever the sum cancels (measured:
    1.5% on a two-element bfloat16 depthwise result); a wrong answer is off by O(1) on
    either scale."""
    scale = float(np.linalg.norm(magnitude))
    diff = float(np.linalg.norm(y - expected))
    return diff / scale if scale else diff


# -- what convfix documents: the repair model ---------------------------------------------


# README: target "policy" casts to Keras' compute dtype; these calls are made outside any
# layer, under Keras' default global policy.
POLICY_DTYPE = "float32"


def promote(a: str, b: str) -> str:
    """README: the wider floating type; integers count as float32; float16 with bfloat16
    gives float32."""
    a, b = (t if t in FLOATS else "float32" for t in (a, b))
    if a == b:
        return a
    if {a, b} == {"float16", "bfloat16"}:
        return "float32"
    return max(a, b, key=lambda t: (tf.as_dtype(t).size, t == "float32"))


def has_kernel(case: Case, dtype: str) -> bool:
    """TF 2.21 CPU kernels: floats everywhere, int32 only for 1-d and 2-d conv/transpose."""
    if dtype in FLOATS:
        return True
    return dtype == "int32" and case.kind in ("conv", "transpose") and case.spatial < 3


def cpu_runs(case: Case, dtype: str) -> bool:
    """Does TF 2.21's CPU build run ``case`` in ``dtype``? Measured: oneDNN (float32) takes
    channels-first, dilated Conv3D and transposed convolutions, and unequal depthwise
    strides; the other kernels do not; tf.nn.convolution refuses strides with dilations."""
    if not has_kernel(case, dtype):
        return False
    if case.op == "convolution" and case.dilation > 1 and max(case.stride_list) > 1:
        return False
    if dtype == "float32":
        return True
    if case.kind in ("depthwise", "separable") and len(set(case.stride_list)) > 1:
        return False
    # tf.nn.convolution dilates by space-to-batch, any dtype; the ops' own dilation is oneDNN's
    dilated = case.dilation > 1 and case.op in ("conv3d", "conv2d_transpose")
    return case.last and not dilated


@dataclass(frozen=True)
class Plan:
    """The call as convfix's documented repairs (fix mode) leave it, and what it gives."""

    case: Case  # the repaired call, as shapes
    dtype: str  # the dtype it computes in
    add_batch: bool = False  # op(x[None])[0]
    pad_input: tuple[tuple[int, int], ...] | None = None  # zeros added per spatial dim
    refuse: str | None = None  # documented: ConvFixError
    runs: bool = True  # TensorFlow's CPU kernels run the repaired call (else TF's error)
    repairs: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = field(default=None)  # None: no valid result
    # TF 2.21's oneDNN transpose answers an empty input with output_shape, unchecked
    lenient_shape: tuple[int, ...] | None = None

    @property
    def empty(self) -> bool:
        return 0 in self.case.x_shape


def plan(case: Case, strategy: str = "pad", target: str = "policy") -> Plan:
    """Apply the documented repairs to ``case`` in convfix's order: padding case, batch,
    padding fit, dtype; then the output shape the reference gives (empty inputs included).
    ``strategy`` and ``target``: the padding and dtype policies' settings (the defaults')."""
    repairs: list[str] = []
    refuse = None
    padding = case.padding
    if isinstance(padding, str) and padding in ("same", "valid"):
        padding, repairs = padding.upper(), [*repairs, "padding_case"]
    x_shape, out_shape = list(case.x_shape), case.out_shape
    add_batch = len(x_shape) == case.spatial + 1
    if add_batch:
        repairs.append("batch_dim")
        if case.kind == "transpose":
            refuse = "a transpose's output_shape names the batch too"
        elif case.f_shape[-2] == 1 and case.last and x_shape[-1] > 1:
            refuse = "missing its batch or its channel dimension: ambiguous"
        x_shape = [1, *x_shape]
        out_shape = None if out_shape is None else (1, *out_shape)
    pad_input = None
    if case.kind != "transpose" and padding != "SAME":
        sizes = x_shape[1:-1] if case.last else x_shape[2:]
        pads = [(0, 0)] * case.spatial if padding == "VALID" else list(padding)
        kernel = [ref.dilated(k, case.dilation) for k in case.f_shape[:-2]]
        short = [k - (n + lo + hi) for n, k, (lo, hi) in zip(sizes, kernel, pads)]
        if any(0 < n + lo + hi < k for n, k, (lo, hi) in zip(sizes, kernel, pads)):
            repairs.append("padding_fit")
            if strategy == "same":
                padding = "SAME"
            else:
                pad_input = tuple((max(t, 0) // 2, max(t, 0) - max(t, 0) // 2) for t in short)
                grown = [n + lo + hi for n, (lo, hi) in zip(sizes, pad_input)]
                x_shape = [x_shape[0], *grown, x_shape[-1]] if case.last else [*x_shape[:2], *grown]
    dtype = case.x_dtype
    if target == "policy" and needs_dtype_repair((case.x_dtype, case.f_dtype), case):
        dtype = POLICY_DTYPE
    if target == "promote" and case.x_dtype != case.f_dtype:
        dtype = promote(case.x_dtype, case.f_dtype)
    if not has_kernel(case, dtype):
        dtype = promote(dtype, dtype)
    if dtype != case.x_dtype or dtype != case.f_dtype:
        repairs.append("dtype")
    fixed = replace(
        case,
        x_shape=tuple(x_shape),
        padding=padding,
        x_dtype=dtype,
        f_dtype=dtype,
        out_shape=out_shape,
    )
    shape = reference_shape(fixed)
    if shape is not None and add_batch:
        shape = shape[1:]
    lenient = None
    if 0 in x_shape and shape is None:
        if case.kind == "transpose":  # convfix leaves transposes to TensorFlow
            lenient = case.out_shape
        else:
            refuse = refuse or "empty input without a valid output shape"
    if misanswered_windows(fixed):
        repairs.append("strided_window")  # exact: the reference of the call as made
    if dilated_past_input(fixed):
        refuse = refuse or "oneDNN's conv3d corrupts memory on windows holding no input"
    runs = cpu_runs(fixed, dtype)
    return Plan(fixed, dtype, add_batch, pad_input, refuse, runs, tuple(repairs), shape, lenient)


def dilated_past_input(case: Case) -> bool:
    """README: with oneDNN, conv3d SAME with a dilated kernel longer than the input is
    refused (TF 2.21 corrupts memory there)."""
    if not ONEDNN or case.op != "conv3d" or case.padding != "SAME" or case.dilation < 2:
        return False
    sizes = case.x_shape[-4:-1] if case.last else case.x_shape[-3:]
    return any(ref.dilated(k, case.dilation) > n for k, n in zip(case.f_shape[:3], sizes))


def misanswered_windows(case: Case) -> bool:
    """README, "Strided windows": geometries TF 2.21 answers with wrong values, which
    convfix runs another, exact way: SAME Conv3D windows leaving 2 or more input positions
    past the last one; with oneDNN, one input channel per group (a one-channel input; a
    depthwise multiplier of 2 or more) and a dimension whose single output window (kernel
    2 or more) is strided or reaches into padding (depthwise: the other strides 1); with
    oneDNN and bfloat16, a last dimension whose single window is strided."""
    n = case.spatial
    if case.kind == "transpose" or 0 in case.x_shape or len(case.x_shape) != n + 2:
        return False
    sizes = list(case.x_shape[1:-1] if case.last else case.x_shape[2:])
    kernel = [ref.dilated(k, case.dilation) for k in case.f_shape[:n]]
    strides = case.stride_list
    try:
        pads = ref.spatial_pads(case.padding, sizes, list(case.f_shape[:n]), strides,
                                [case.dilation] * n)  # fmt: skip
    except ValueError:
        return False
    outs = [(m + lo + hi - k) // s + 1 for m, k, s, (lo, hi) in zip(sizes, kernel, strides, pads)]
    if case.kind == "conv" and n == 3 and case.padding == "SAME":
        reads = [(o - 1) * s + k for o, s, k in zip(outs, strides, kernel)]
        if any(m - r >= 2 for m, r in zip(sizes, reads)):
            return True
    if not ONEDNN or case.kind not in ("conv", "depthwise", "separable"):
        return False
    # bfloat16, any channel count: the last dimension a single strided window (kernel 2 or
    # more), another with several outputs (README; not depthwise)
    bf16 = case.x_dtype == "bfloat16" and case.kind != "depthwise" and n >= 2
    if bf16 and outs[-1] == 1 and kernel[-1] >= 2 and strides[-1] >= 2 and max(outs[:-1]) > 1:
        return True
    channels = case.x_shape[-1] if case.last else case.x_shape[1]
    if (channels != 1) if case.kind == "conv" else case.f_shape[-1] < 2:
        return False
    cut = [
        o == 1 and k >= 2 and (s >= 2 or lo + hi > 0)
        for o, k, s, (lo, hi) in zip(outs, kernel, strides, pads)
    ]
    if case.kind != "conv" and any(s != 1 for s, c in zip(strides, cut) if not c):
        return False
    return any(cut)


def reference_shape(case: Case) -> tuple[int, ...] | None:
    try:
        return tuple(
            ref.output_shape(
                case.x_shape,
                case.f_shape,
                strides=case.stride_list,
                padding=case.padding,
                dilations=case.dilation,
                data_format=case.data_format,
                kind=case.kind,
                pointwise_shape=case.p_shape,
                out_shape=case.out_shape,
            )
        )
    except ValueError:
        return None


def reference(p: Plan, x: Any, f: Any, w: Any, magnitude: bool = False) -> np.ndarray:
    """The float64 reference of the repaired call, from the repaired operands: cast to
    the compute dtype, batch added, zero-padded, then convolved by the definition (convfix
    repairs the strided windows TF 2.21's kernels answer otherwise)."""
    xs = as_f64(tf.cast(x, p.dtype))
    fs = as_f64(tf.cast(f, p.dtype))
    ws = None if w is None else as_f64(tf.cast(w, p.dtype))
    if magnitude:
        xs, fs, ws = np.abs(xs), np.abs(fs), None if ws is None else np.abs(ws)
    case = p.case
    if p.add_batch:
        xs = xs[None]
    if p.pad_input is not None:
        pairs = [(0, 0), *p.pad_input, (0, 0)] if case.last else [(0, 0), (0, 0), *p.pad_input]
        xs = np.pad(xs, pairs)
    y = ref.conv(
        xs,
        fs,
        strides=case.stride_list,
        padding=case.padding,
        dilations=case.dilation,
        data_format=case.data_format,
        kind=case.kind,
        pointwise=ws,
        out_shape=case.out_shape,
    )
    return y[0] if p.add_batch else y


# -- strategies ---------------------------------------------------------------------------


@st.composite
def calls(
    draw: st.DrawFn,
    ops: tuple[str, ...] = OPS,
    fit: str = "fits",  # "fits": the kernel fits a VALID input; "small": it does not; "any"
    batch: st.SearchStrategy[int] = NONEMPTY_BATCH,
    dtypes: st.SearchStrategy[tuple[str, str]] | None = None,
    channels_first: bool = True,
    explicit: bool = True,
    lower_case: bool = False,
    loose: bool = False,  # channels, strides, dilations, layouts as drawn: TF may refuse
) -> Case:
    """A call of one of ``ops``: healthy by default, the flags make it less so."""
    op = draw(st.sampled_from(ops))
    kind = KIND[op]
    n = SPATIAL.get(op, 2) or draw(st.integers(1, 3))
    x_dtype, f_dtype = draw(dtypes) if dtypes is not None else (draw(st.sampled_from(FLOATS)),) * 2
    # TF's CPU kernels take channels-first only through oneDNN, in float32 only
    cpu_layout = loose or (x_dtype, f_dtype) == ("float32", "float32")
    first = channels_first and cpu_layout and draw(st.integers(0, 3)) == 0
    kernel = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    strides = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    if kind in ("depthwise", "separable") and not loose:
        strides = [strides[0]] * n  # only oneDNN's depthwise takes unequal strides
    dilation = draw(st.integers(1, 2))
    if dilation > 1 and max(strides) > 1 and not loose and op in NO_STRIDED_DILATION:
        if draw(st.booleans()):
            dilation = 1
        else:
            strides = [1] * n
    if not loose and x_dtype != "float32" and op in ("conv3d", "conv2d_transpose"):
        dilation = 1  # only oneDNN (float32) dilates these on the CPU
    choices = ["SAME", "VALID"] if fit != "small" else ["VALID"]
    if explicit and op == "conv2d":
        choices.append("explicit")
    how = draw(st.sampled_from(choices))
    pads = [(0, 0)] * n
    if how == "explicit":
        pads = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(n)]
    reach = [ref.dilated(k, dilation) for k in kernel]
    sizes = [draw(st.integers(1, 9)) for _ in range(n)]
    if how != "SAME" and fit == "fits":
        sizes = [max(s, r - lo - hi, 1) for s, r, (lo, hi) in zip(sizes, reach, pads)]
    if how != "SAME" and fit == "small":
        i = draw(st.integers(0, n - 1))
        kernel[i] = max(kernel[i], 2)
        reach[i] = ref.dilated(kernel[i], dilation)
        pads[i] = (min(pads[i][0], (reach[i] - 2) // 2), min(pads[i][1], (reach[i] - 2) // 2))
        sizes[i] = draw(st.integers(1, reach[i] - sum(pads[i]) - 1))
    padding: str | tuple[tuple[int, int], ...] = tuple(pads) if how == "explicit" else how
    if lower_case and isinstance(padding, str):
        padding = padding.lower()
    b = draw(batch)
    fmt = CHANNELS_FIRST[n] if first else None

    def layout(channels: int, spatial_sizes: list[int]) -> tuple[int, ...]:
        return (b, channels, *spatial_sizes) if first else (b, *spatial_sizes, channels)

    p_shape = out_shape = None
    if kind == "conv":
        grouped = n < 3 and draw(st.booleans())
        groups = draw(st.integers(1, 2)) if grouped else 1
        f_in = draw(st.integers(1, 4 // groups))
        f_out = groups * draw(st.integers(1, 4 // groups))
        channels = groups * f_in
        if loose:
            channels, f_in, f_out = (draw(st.integers(1, 4)) for _ in range(3))
        x_shape, f_shape = layout(channels, sizes), (*kernel, f_in, f_out)
    elif kind in ("depthwise", "separable"):
        channels, mult = draw(st.integers(1, 4)), draw(st.integers(1, 2))
        f_shape = (*kernel, draw(st.integers(1, 4)) if loose else channels, mult)
        x_shape = layout(channels, sizes)
        if kind == "separable":
            p_shape = (1, 1, channels * mult, draw(st.integers(1, 4)))
    else:  # transpose: sizes are the forward input's (the output_shape); its output is x
        out_c, in_c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        out_shape = layout(out_c, sizes)
        f_shape = (*kernel, out_c, in_c)
        forward = reference_shape(
            Case("conv2d", out_shape, f_shape, tuple(strides), dilation, padding, data_format=fmt)
        )
        x_shape = forward if forward else layout(in_c, [1] * n)  # no forward: TF refuses
    return Case(
        op=op,
        x_shape=x_shape,
        f_shape=f_shape,
        strides=tuple(strides),
        dilation=dilation,
        padding=padding,
        x_dtype=x_dtype,
        f_dtype=f_dtype,
        data_format=fmt,
        out_shape=out_shape,
        p_shape=p_shape,
        seed=draw(st.integers(0, 2**16)),
    )


def without_batch(case: Case) -> Case:
    """The same call with the batch dimension left off (input and output_shape)."""
    out = None if case.out_shape is None else case.out_shape[1:]
    return replace(case, x_shape=case.x_shape[1:], out_shape=out)


def needs_dtype_repair(pair: tuple[str, str], case: Case) -> bool:
    return pair[0] != pair[1] or not has_kernel(case, pair[0])


DTYPE_PAIRS = st.tuples(st.sampled_from(DTYPES), st.sampled_from(DTYPES))


@st.composite
def anything(draw: st.DrawFn) -> Case:
    """Any call in the drawn space: every defect at once or none."""
    case = draw(
        calls(
            fit="any",
            batch=st.integers(0, 3),
            dtypes=DTYPE_PAIRS,
            lower_case=draw(st.booleans()),
            loose=True,
        )
    )
    return without_batch(case) if draw(st.integers(0, 3)) == 0 else case


# -- checks -------------------------------------------------------------------------------


def patched(op: str) -> Callable[..., Any]:
    """tf.nn's function, checked to be convfix's (unpatched, a bad call aborts the run)."""
    fn = function(op)
    assert unpatched(fn) is not fn, f"tf.nn.{op} is not patched by convfix"
    return fn


def run(case: Case, **over: Any) -> Any:
    """The call through convfix."""
    x, f, w = operands(case)
    return invoke(patched(case.op), case, x, f, w, **over)


def assert_matches_reference(case: Case, y: Any, p: Plan) -> None:
    x, f, w = operands(case)
    assert y.dtype.name == p.dtype, f"result {y.dtype.name}, documented {p.dtype}"
    assert tuple(y.shape) == p.shape, f"result shape {tuple(y.shape)}, reference {p.shape}"
    if p.empty:
        assert not np.any(as_f64(y)), "an empty input's answer holds non-zeros"
        return
    expected = reference(p, x, f, w)
    error = relative_error(as_f64(y), expected, reference(p, x, f, w, magnitude=True))
    assert error <= TOLERANCE[p.dtype], f"relative error {error:.3g} against the reference"


def assert_repaired(case: Case, strategy: str = "pad", target: str = "policy") -> None:
    """(b): the call gives the reference of its documented repair, the documented refusal,
    or TensorFlow's own error where no CPU kernel runs the repaired call."""
    p = plan(case, strategy, target)
    note(f"plan: {p}")
    event(f"repairs: {'+'.join(p.repairs) or 'none'}")
    if p.refuse:
        with pytest.raises(convfix.ConvFixError):
            run(case)
        event("refused")
        return
    expect_result = p.runs and p.shape is not None  # else: no CPU kernel, or invalid
    try:
        y = run(case)
    except TF_ERRORS as error:
        if expect_result:
            raise
        event(f"TensorFlow's {type(error).__name__}")
        return
    if p.empty:
        event("empty")
    if not expect_result:  # only an empty input may be answered without a kernel
        assert p.empty, f"a result of shape {tuple(y.shape)} where TensorFlow has none"
        assert_answer_shape(p, y)
        assert not np.any(as_f64(y)), "an empty input's answer holds non-zeros"
        return
    assert_matches_reference(case, y, p)


def assert_answer_shape(p: Plan, y: Any) -> None:
    shape = tuple(y.shape)
    if p.shape is None and p.lenient_shape is not None and shape == p.lenient_shape:
        event("TF's unchecked answer to an empty transpose")
        return
    assert p.shape is not None, f"a result of shape {shape} for an invalid call"
    assert shape == p.shape, f"result shape {shape}, reference {p.shape}"


# -- (a) healthy calls: bit for bit, silent -----------------------------------------------


@share(0.7)
@given(case=calls())
def test_healthy_call_is_tensorflows_answer_bit_for_bit_and_silent(case: Case) -> None:
    p = plan(case)
    # The strategy draws healthy calls, but for TF's strided windows and conv3d's windows
    # that hold no input (oneDNN).
    assume(not p.repairs and not p.refuse)
    assert p.shape is not None and p.runs
    x, f, w = operands(case)
    with capture_events() as events:
        y = invoke(patched(case.op), case, x, f, w)
    with tensorflow_alone():
        expected = invoke(unpatched(function(case.op)), case, x, f, w)
    assert events == []
    assert y.dtype == expected.dtype
    assert tuple(y.shape) == tuple(expected.shape)
    assert np.array_equal(as_f64(y), as_f64(expected), equal_nan=True), "convfix changed it"
    # TensorFlow's answer itself, against the reference: a healthy draw TF gets wrong shows
    assert_matches_reference(case, expected, p)
    event(f"op: {case.op}")


# -- (b) repaired calls: the reference of the documented repair ---------------------------


@st.composite
def dtype_repairs(draw: st.DrawFn) -> Case:
    case = draw(calls(dtypes=DTYPE_PAIRS))
    pair = (case.x_dtype, case.f_dtype)
    if not needs_dtype_repair(pair, case):
        pair = (pair[0], draw(st.sampled_from([t for t in DTYPES if t != pair[0]])))
    return replace(case, x_dtype=pair[0], f_dtype=pair[1])


@share(0.15)
@given(case=dtype_repairs())
def test_mismatched_or_unsupported_dtypes_compute_in_the_keras_policy_dtype(case: Case) -> None:
    assert "dtype" in plan(case).repairs
    assert_repaired(case)


@share(0.1)
@given(case=dtype_repairs())
def test_mismatched_or_unsupported_dtypes_compute_in_the_promoted_dtype_with_promote(
    case: Case,
) -> None:
    assert "dtype" in plan(case, target="promote").repairs
    with convfix.override(policies={"dtype": {"target": "promote"}}):
        assert_repaired(case, target="promote")


@share(0.15)
@given(case=calls(lower_case=True, explicit=False))
@example(  # was a convfix bug: the fast path waved transposes through; TF rejects "same"
    case=Case(
        "conv2d_transpose",
        (1, 1, 1, 1),
        (1, 1, 1, 1),
        (1, 1),
        1,
        "same",
        "float16",
        "float16",
        None,
        (1, 1, 1, 1),
    )
)
def test_lower_case_padding_is_tensorflows_upper_case_call(case: Case) -> None:
    assert_repaired(case)
    x, f, w = operands(case)
    upper = str(case.padding).upper()
    with tensorflow_alone():
        expected = invoke(unpatched(function(case.op)), case, x, f, w, padding=upper)
    assert np.array_equal(as_f64(run(case)), as_f64(expected), equal_nan=True)


@share(0.2)
@given(case=calls(ops=FORWARD_OPS, fit="small"))
def test_kernel_larger_than_valid_input_is_zero_padded_by_default(case: Case) -> None:
    assert "padding_fit" in plan(case).repairs
    assert_repaired(case)


@share(0.2)
@given(case=calls(ops=FORWARD_OPS, fit="small", lower_case=False))
def test_kernel_larger_than_valid_input_runs_as_same_with_the_same_strategy(case: Case) -> None:
    assert "padding_fit" in plan(case, strategy="same").repairs
    with convfix.override(policies={"padding": {"strategy": "same"}}):
        assert_repaired(case, strategy="same")


@share(0.2)
@given(case=calls().map(without_batch))
def test_missing_batch_dim_is_added_and_taken_off_again(case: Case) -> None:
    p = plan(case)
    assert_repaired(case)
    if p.refuse:
        return
    x, f, w = operands(case)  # exactly op(x[None])[0]: a healthy call, safe unguarded
    with tensorflow_alone():
        batched = invoke(unpatched(function(case.op)), case, x[None], f, w)
    assert np.array_equal(as_f64(run(case)), as_f64(batched[0]), equal_nan=True)


@share(0.15)
@given(case=calls(batch=st.just(0), dtypes=DTYPE_PAIRS))
def test_empty_batch_answers_zeros_of_the_reference_shape(case: Case) -> None:
    assert_repaired(case)


@st.composite
def several_defects(draw: st.DrawFn) -> Case:
    case = draw(
        calls(
            fit=draw(st.sampled_from(["small", "any"])),
            batch=st.integers(0, 2),
            dtypes=DTYPE_PAIRS,
            lower_case=draw(st.booleans()),
        )
    )
    return without_batch(case) if draw(st.booleans()) else case


@share(0.2)
@given(case=several_defects())
def test_repairs_compose_as_documented(case: Case) -> None:
    assert_repaired(case)


STRIDED_WINDOWS = [  # TF 2.21 answers these with wrong values (README, "Strided windows")
    Case("conv3d", (1, 9, 1, 1, 1), (1, 1, 1, 1, 1), (3, 1, 1), x_dtype="float64",
         f_dtype="float64"),  # SAME windows shifted by one (Conv3D outside oneDNN)
    Case("conv3d", (2, 9, 2, 2, 1), (1, 1, 1, 1, 2), (4, 1, 1), x_dtype="float16",
         f_dtype="float16"),
    Case("convolution", (1, 8, 3, 3, 2), (2, 1, 1, 2, 1), (4, 1, 1), x_dtype="bfloat16",
         f_dtype="bfloat16"),
    Case("conv2d", (2, 2, 1, 1), (1, 2, 1, 1), (1, 2)),  # oneDNN: rows left unwritten
    Case("conv2d", (2, 3, 2, 1), (1, 2, 1, 3), (1, 3), padding="VALID", x_dtype="bfloat16",
         f_dtype="bfloat16"),
    Case("depthwise_conv2d", (2, 4, 1, 1), (1, 2, 1, 2), (1, 2)),
    Case("conv3d", (1, 1, 1, 2, 1), (3, 1, 2, 1, 1), x_dtype="bfloat16",
         f_dtype="bfloat16"),  # oneDNN bfloat16: a padded depth of 1
]  # fmt: skip


@settings(PROFILE, max_examples=4 * len(STRIDED_WINDOWS))
@given(case=st.sampled_from(STRIDED_WINDOWS))
def test_strided_windows_tensorflow_answers_wrongly_get_the_definitions_answer(
    case: Case,
) -> None:
    assume(misanswered_windows(case))  # the oneDNN ones only where oneDNN runs
    event(f"{case.op} {case.x_dtype}")
    events.reset()  # each example's first repair is written in full, not folded
    with capture_events() as captured:
        assert_repaired(case)
    assert [e["policy"] for e in captured] == ["padding"]
    assert captured[0]["reason"] in ("negative_same_padding", "single_window_one_channel")


# -- (c) anything else: an error, or the reference's answer ------------------------------


@share(0.7)
@given(case=anything())
@example(  # convfix bug: an empty batch answered though the groups do not divide the output
    case=Case("conv2d", (0, 5, 5, 4), (3, 3, 2, 3), (1, 1), 1, "SAME")
)
@example(  # convfix bug: TF's depthwise garbage with strides and dilations passes the guard
    case=Case("depthwise_conv2d", (1, 5, 5, 1), (1, 1, 1, 1), (3, 3), 2, "SAME")
)
@example(  # the same, where TF's garbage has the right shape and wrong values
    case=Case("depthwise_conv2d", (1, 8, 8, 1), (3, 3, 1, 1), (2, 2), 2, "SAME")
)
def test_any_call_raises_or_answers_as_the_reference(case: Case) -> None:
    p = plan(case)
    note(f"plan: {p}")
    try:
        y = run(case)
    except convfix.ConvFixError:
        event("ConvFixError")
        return
    except TF_ERRORS as error:
        event(f"TensorFlow's {type(error).__name__}")
        return
    event("answered")
    assert_answer_shape(p, y)
    if p.shape is not None:  # a result must be the right one, not just the right shape
        assert_matches_reference(case, y, p)


# -- TensorFlow's own departures the model above relies on ------------------------------


def test_tensorflow_conv3d_same_quirk_is_still_there() -> None:
    # convfix crops such inputs (negative_same_padding); when TensorFlow fixes this, the
    # repair can go.
    x = tf.reshape(tf.range(1.0, 4.0, dtype=tf.float64), [1, 3, 1, 1, 1])
    f = tf.ones([1, 1, 1, 1, 1], tf.float64)
    with tensorflow_alone():
        y = unpatched(tf.nn.conv3d)(x, f, [1, 3, 1, 1, 1], "SAME")
        y32 = unpatched(tf.nn.conv3d)(
            tf.cast(x, tf.float32), tf.cast(f, tf.float32), [1, 3, 1, 1, 1], "SAME"
        )
    assert y.numpy().ravel().tolist() == [2.0]  # TensorFlow's definition says 1.0
    assert y32.numpy().ravel().tolist() == [1.0]  # float32 (oneDNN) agrees with it
