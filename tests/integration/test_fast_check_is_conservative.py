"""The hot path's fast checks clear only calls the guard's rules clear.

Every "unsafe on this build" rule lives in guard.rules; the hot path does not consult
them (binding a call alone costs more than its budget). Its two cheaper predicates, the
express lane's quick check (integrations/express.py) and the fast check
(integrations/entry.py), may send any call on to a closer look; what they must never do
is clear a call a rule calls unsafe on that build. A problem TensorFlow answers itself
(hazard "answered": its own error) may be cleared: TensorFlow raises it, on purpose.

Each drawn call is a ``Case`` of plain (or NumPy) values, so a failing example can be
pinned with ``@example(case=Case(...))``; its tensors are built from it. One call per rule
is pinned (``PINNED``), so every rule's boundary is tried on every run. A problem TensorFlow
raises on with an error that does not say why (hazard "unclear": a transpose's impossible
output_shape) may be cleared too: recovery then refuses it in convfix's words, or repairs
it (tests/integration/test_transpose_output_shape.py). Nothing runs a
convolution: only the predicates and the guard are called, for a build with and a build
without oneDNN, whatever this machine's build is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import event, example, given, reject, settings
from hypothesis import strategies as st

from convfix import guard, runtime
from convfix.call import Binder, Call, Problem
from convfix.geometry import per_spatial
from convfix.guard.build import Build
from convfix.integrations import express
from convfix.integrations import tensorflow as tf_integration
from convfix.integrations.entry import Capabilities, FilterShapes, make_fast_check
from convfix.memory import Memory
from convfix.ops import V2_SPECS
from tests.integration.conftest import unpatched

OPS = tuple(V2_SPECS)  # every tf.nn convolution convfix wraps
DTYPES = ("float32", "float16", "bfloat16", "float64", "int32")
LAYOUTS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}
# The rules' builds: oneDNN off and on (TF 2.21), and a version with its own bug (2.17).
BUILDS = (Build((2, 21), False), Build((2, 21), True), Build((2, 17), True))
EXAMPLES = 4000
T = TypeVar("T")


@dataclass
class Case:
    """One call: the op, its tensors' shapes and dtypes, every other argument given (by
    parameter name), and how many leading parameters are passed by position."""

    op: str
    input_shape: tuple[int, ...]
    input_dtype: str
    filter_shape: tuple[int, ...]
    filter_dtype: str
    filter_variable: bool  # a tf.Variable, else a tensor
    options: dict[str, Any] = field(default_factory=dict)
    positional: int = 2
    pointwise_shape: tuple[int, ...] | None = None  # separable_conv2d's second filter

    @property
    def function(self) -> Callable[..., Any]:
        return unpatched(getattr(tf.nn, self.op))

    def arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's positional and keyword arguments, tensors built (never run)."""
        spec = V2_SPECS[self.op]
        f = tf.zeros(self.filter_shape, self.filter_dtype)
        given = {
            spec.input_params[0]: tf.zeros(self.input_shape, self.input_dtype),
            spec.filter_params[0]: tf.Variable(f) if self.filter_variable else f,
            **self.options,
        }
        if self.pointwise_shape is not None and spec.pointwise_param is not None:
            given[spec.pointwise_param] = tf.zeros(self.pointwise_shape, self.filter_dtype)
        args: list[Any] = []
        for name in _parameters(self.function):
            if len(args) == self.positional or name not in given:
                break
            args.append(given.pop(name))
        return tuple(args), given


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def _defaults(function: Callable[..., Any]) -> dict[str, Any]:
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not p.empty}


def _caps(build: Build) -> Capabilities:
    """This process's tensor and variable types, on ``build``."""
    real = tf_integration.caps
    assert real is not None, "convfix is patched for the session (conftest)"
    return Capabilities(
        real.eager, real.symbolic, set(real.filter_types), build, real.direct_filter_types
    )


def _bind(case: Case, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    try:
        return Binder(V2_SPECS[case.op], case.function).bind(args, kwargs)
    except TypeError:
        reject()  # a call Python itself refuses: no predicate ever sees it


def _unsafe(call: Call, build: Build) -> list[Problem]:
    found = guard.inspect(call, build)
    return [problem for problem in found if problem.hazard in ("abort", "garbage")]


# -- the calls ----------------------------------------------------------------------------


def _per_dim(values: st.SearchStrategy[T], spatial: int) -> st.SearchStrategy[list[T]]:
    return st.lists(values, min_size=spatial, max_size=spatial)


def _full_rank(spatial_values: list[int], channels_first: bool) -> list[int]:
    """Per-spatial values as TensorFlow's full-rank form: 1 for batch and channels."""
    return [1, 1, *spatial_values] if channels_first else [1, *spatial_values, 1]


def _steps(
    draw: st.DrawFn, values: st.SearchStrategy[int], spatial: int, channels_first: bool
) -> Any:
    """Strides or dilations: an int, a list per spatial dimension, or a full-rank list
    (in the call's layout, or with any values where batch and channels are)."""
    form = draw(st.sampled_from(["int", "spatial", "full", "full, any"]))
    if form == "int":
        return draw(values)
    per_dim = draw(_per_dim(values, spatial))
    if form == "spatial":
        return per_dim
    if form == "full":
        return _full_rank(per_dim, channels_first)
    return draw(_per_dim(values, spatial + 2))


def _maybe_numpy(draw: st.DrawFn, value: Any) -> Any:
    """``value``, or the NumPy value TensorFlow reads the same way (the rules do too)."""
    if not draw(st.booleans()) or not draw(st.booleans()):
        return value
    return np.int64(value) if isinstance(value, int) else np.array(value)


def _is_default(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A call of any op: input rank right, one short or one long; sizes 0-6, kernels 1-4,
    strides 1-4, dilations 1-2 (also as NumPy values); every padding and layout the op
    takes; grouped channels; any dtype; filters as tensors or variables; arguments by
    position or keyword."""
    op = draw(st.sampled_from(OPS))
    spec = V2_SPECS[op]
    spatial = spec.spatial or draw(st.integers(1, 3))
    channels_first = draw(st.booleans())
    sizes = draw(_per_dim(st.integers(0, 6), spatial))
    kernel = draw(_per_dim(st.integers(1, 4), spatial))
    batch = draw(st.integers(0, 3))
    channels = draw(st.sampled_from([1, 1, 2, 3, 4, 6]))  # one: oneDNN's one-channel rule
    out_channels = draw(st.integers(1, 3))
    x_shape = [batch, channels, *sizes] if channels_first else [batch, *sizes, channels]
    rank_change = draw(st.sampled_from([0, 0, -1, 1]))  # mostly right: most rules need it
    if rank_change == -1:
        x_shape = x_shape[1:]
    elif rank_change == 1:
        x_shape = [draw(st.integers(1, 2)), *x_shape]

    pointwise = None
    if spec.kind == "conv":  # the filter's input channels: all, or one group's
        f_shape = [*kernel, draw(st.sampled_from(_divisors(channels))), out_channels]
    elif spec.kind in ("depthwise", "separable"):
        multiplier = draw(st.integers(1, 3))
        f_shape = [*kernel, channels, multiplier]
        if spec.kind == "separable":
            pointwise = (1, 1, channels * multiplier, out_channels)
    else:  # transpose: [*kernel, output channels, input channels]
        f_shape = [*kernel, out_channels, channels]

    strides = _maybe_numpy(
        draw, _steps(draw, st.sampled_from([1, 1, 2, 3, 4]), spatial, channels_first)
    )
    dilations = (
        None
        if draw(st.booleans())
        else _maybe_numpy(draw, _steps(draw, st.integers(1, 2), spatial, channels_first))
    )
    padding: Any = draw(st.sampled_from(["SAME", "VALID", "SAME", "VALID", "same", "valid"]))
    if op == "conv2d" and draw(st.booleans()):  # the one op taking explicit padding
        pairs = draw(_per_dim(st.tuples(st.integers(0, 2), st.integers(0, 2)), spatial))
        padding = [[0, 0], [0, 0], *([lo, hi] for lo, hi in pairs)]
        if not channels_first:
            padding = [padding[0], *padding[2:], padding[1]]
        padding = _maybe_numpy(draw, padding)
    layouts = LAYOUTS[spatial]
    data_format = layouts[1] if channels_first else draw(st.sampled_from([layouts[0], None]))

    options: dict[str, Any] = {}
    if spec.kind == "transpose":  # around the sizes its padding accepts, 0 included
        steps = per_spatial(strides, spatial, not channels_first) or [1] * spatial
        out_sizes = [max(n * s + draw(st.integers(-4, 2)), 0) for n, s in zip(sizes, steps)]
        out_batch = draw(st.sampled_from([batch, batch, batch, batch + 1, max(batch - 1, 0)]))
        options["output_shape"] = (
            [out_batch, out_channels, *out_sizes]
            if channels_first
            else [out_batch, *out_sizes, out_channels]
        )
    defaults = _defaults(unpatched(getattr(tf.nn, op)))
    drawn = {
        spec.strides_param or "strides": strides,
        spec.padding_param: padding,
        spec.data_format_param: data_format,
        "dilations": dilations,
    }
    for name, value in drawn.items():
        # A value equal to its default may be left out, as callers usually do.
        if name not in defaults or not _is_default(value, defaults[name]) or draw(st.booleans()):
            options[name] = value
    input_dtype = draw(st.sampled_from(DTYPES))
    return Case(
        op,
        tuple(x_shape),
        input_dtype,
        tuple(f_shape),
        draw(st.just(input_dtype) | st.sampled_from(DTYPES)),
        draw(st.booleans()),
        options,
        positional=draw(st.integers(0, 8)),
        pointwise_shape=pointwise,
    )


def _float32(
    op: str, input_shape: tuple[int, ...], filter_shape: tuple[int, ...], **options: Any
) -> Case:
    return Case(op, input_shape, "float32", filter_shape, "float32", False, options)


SAME1 = {"strides": 1, "padding": "SAME"}
# One call each rule calls unsafe (on the oneDNN build; some on both), at its boundary.
PINNED = {
    "missing_batch_dim": _float32("conv2d", (5, 5, 3), (3, 3, 3, 2), **SAME1),
    "bad_input_rank": _float32("depthwise_conv2d", (1, 1, 5, 5, 3), (3, 3, 3, 1), **SAME1),
    "strided_dilation": _float32(
        "depthwise_conv2d", (1, 5, 5, 3), (3, 3, 3, 1), strides=2, padding="SAME", dilations=2
    ),
    "dilated_kernel_past_input": _float32(
        "conv3d", (1, 2, 2, 2, 2), (3, 3, 3, 2, 2), **SAME1, dilations=2
    ),
    "kernel_larger_than_input": _float32(
        "conv2d", (1, 2, 2, 3), (3, 3, 3, 2), strides=1, padding="VALID"
    ),
    "empty_input": _float32("conv2d", (0, 5, 5, 3), (3, 3, 3, 2), **SAME1),
    "negative_same_padding": _float32(
        "conv3d", (1, 6, 6, 6, 2), (1, 1, 1, 2, 2), strides=3, padding="SAME"
    ),
    "single_window_one_channel": _float32(
        "conv2d", (2, 2, 5, 1), (2, 2, 1, 1), strides=2, padding="SAME"
    ),
    # A channel multiplier of 2, stride 1: the one window of height 1 reaches into padding.
    "single_window_one_channel, depthwise": _float32(
        "depthwise_conv2d", (1, 1, 5, 3), (2, 2, 3, 2), **SAME1
    ),
    # oneDNN answers it without an error: VALID, one input position, a size below the kernel.
    "impossible_output_shape": _float32(
        "conv2d_transpose",
        (1, 1, 1, 3),
        (3, 3, 2, 3),
        output_shape=[1, 2, 2, 2],
        strides=2,
        padding="VALID",
    ),
    "output_batch_mismatch": _float32(
        "conv2d_transpose",
        (2, 3, 3, 3),
        (3, 3, 2, 3),
        output_shape=[4, 6, 6, 2],
        strides=2,
        padding="SAME",
    ),
}


def pinned(test: Callable[[Case], None]) -> Callable[[Case], None]:
    """``test`` with every PINNED call tried before the drawn ones."""
    for case in PINNED.values():
        test = example(case=case)(test)
    return test


@pytest.mark.parametrize("reason", PINNED)
def test_each_pinned_call_is_one_its_rule_calls_unsafe(reason: str) -> None:
    # given a pinned call
    case = PINNED[reason]
    call = _bind(case, *case.arguments())
    # when the guard inspects it on the oneDNN build, then its rule finds it unsafe
    assert [(p.reason, p.unsafe) for p in guard.inspect(call, BUILDS[1])] == [
        (reason.split(",")[0], True)
    ]


# -- the property -------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(case=cases())
@pinned
def test_whatever_the_fast_check_clears_the_rules_clear(case: Case) -> None:
    # given a call, bound as the full path would bind it
    args, kwargs = case.arguments()
    call = _bind(case, args, kwargs)
    spec = V2_SPECS[case.op]
    for build in BUILDS:
        caps = _caps(build)
        fast = make_fast_check(spec, case.function, caps, FilterShapes(caps), Memory())
        # when the fast check clears it (one that raises clears nothing: make_general)
        try:
            cleared = fast(args, kwargs)
        except Exception:
            cleared = False
        event(f"fast check, build={build}: {'cleared' if cleared else 'not cleared'}")
        # then no rule calls it unsafe on that build
        if cleared:
            unsafe = _unsafe(call, build)
            assert not unsafe, f"fast check cleared an unsafe call (build={build}): {unsafe}"


@settings(max_examples=EXAMPLES, deadline=None)
@given(case=cases())
@pinned
def test_whatever_the_quick_check_clears_the_rules_clear(case: Case) -> None:
    # given a call, its parameters as the express lane receives them (defaults filled in)
    args, kwargs = case.arguments()
    call = _bind(case, args, kwargs)
    spec = V2_SPECS[case.op]
    for build in BUILDS:
        quick = express.make_quick_check(spec, _caps(build), Memory())
        if quick is None:
            event(f"quick check, build={build}: none for {case.op}")
            continue
        # when the quick check clears it (the lane lets nothing raise: neither may this)
        checked = [call.input, call.filter, call.padding, call.strides]
        if express.reads_output_shape(spec, _caps(build)):
            checked.append(call.arguments["output_shape"])
        cleared = quick(*checked)
        event(f"quick check, build={build}: {'cleared' if cleared else 'not cleared'}")
        # then no rule calls it unsafe on that build
        if cleared:
            unsafe = _unsafe(call, build)
            assert not unsafe, f"quick check cleared an unsafe call (build={build}): {unsafe}"


@pytest.mark.parametrize("build", BUILDS, ids=str)
def test_both_checks_clear_a_healthy_call_so_the_property_is_not_vacuous(build: Build) -> None:
    # given a healthy conv2d call that no rule objects to, with convfix on (the quick
    # check clears nothing while it is off)
    assert runtime.flags.fast or runtime.checking()
    case = _float32("conv2d", (1, 5, 5, 3), (3, 3, 3, 2), **SAME1)
    args, kwargs = case.arguments()
    call = _bind(case, args, kwargs)
    assert guard.inspect(call, build) == []
    caps = _caps(build)
    fast = make_fast_check(V2_SPECS["conv2d"], case.function, caps, FilterShapes(caps), Memory())
    quick = express.make_quick_check(V2_SPECS["conv2d"], caps, Memory())
    # when either check looks at it, then it clears it
    assert fast(args, kwargs)
    assert quick is not None
    assert quick(call.input, call.filter, call.padding, call.strides)


@pytest.mark.parametrize(("wanted", "cleared"), [(4, True), (5, True), (3, False)])
def test_a_one_position_valid_transpose_is_cleared_when_it_asks_for_the_kernel_or_more(
    wanted: int, cleared: bool
) -> None:
    # DCGAN's first layer: a 1x1 input, kernel 4, VALID. With oneDNN a size below the
    # kernel is answered silently (the guard refuses it); the kernel's size or more is
    # TensorFlow's to answer or refuse, and the fast check clears it
    build = BUILDS[1]
    case = _float32(
        "conv2d_transpose", (2, 1, 1, 8), (4, 4, 3, 8),
        output_shape=[2, wanted, wanted, 3], strides=1, padding="VALID",
    )  # fmt: skip
    args, kwargs = case.arguments()
    caps = _caps(build)
    fast = make_fast_check(
        V2_SPECS["conv2d_transpose"], case.function, caps, FilterShapes(caps), Memory()
    )
    assert fast(args, kwargs) is cleared
    if not cleared:
        assert [p.reason for p in _unsafe(_bind(case, args, kwargs), build)] == [
            "impossible_output_shape"
        ]
