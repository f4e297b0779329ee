"""The express lane: a wrapper generated with the wrapped function's own signature.

Why generate code: on a tiny convolution every bytecode of the wrapper's own frame before
its call to TensorFlow costs twice. Once to run it, and once more inside TensorFlow, which
records the Python stack of every eager op and finds each frame's line number by scanning
the frame's line table up to the instruction running there. Measured in CPU instructions
per call on the tiny conv2d, same input each call (TF 2.21, oneDNN off; callgrind):

- a ``*args, **kwargs`` closure passing straight through: +2,200
- the same closure with 20 trivial statements before the call: +4,800 (+4,300 when the
  statements are skipped by a branch: the scan, not the running, is most of it)
- the generic check of entry.py (arguments looked up by position or keyword): +8,700
- this lane: +3,200 (oneDNN on: +5,600, the input's shape read)

With the exact signature, arguments arrive in local variables (no tuple, no dict, no
lookup); the check is a small closure chosen for the function's kind and the build, whose
frame is gone by the time TensorFlow records the stack; TensorFlow's call follows it at
once. Everything the check does not clear goes to the fast check (entry.py), which
decides exactly as before; nothing here decides that a call is unhealthy.

The original is called with every parameter given positionally (defaults filled in), so
the lane is only generated for functions where that is the same call: TensorFlow's
traceback and dispatch wrappers directly around a plain function. Anything else (a
deprecation decorator that notices which arguments were passed, ``*args``) gets the
general entry: slower, never different. One visible difference: Python binds the call
before TensorFlow sees it, so a call missing an argument raises Python's TypeError
(naming the function and the argument) rather than TensorFlow's.
"""

from __future__ import annotations

import inspect
import itertools
import linecache
from collections.abc import Callable
from typing import Any

from convfix import runtime
from convfix.integrations.entry import Capabilities, unit_strides
from convfix.memory import Memory
from convfix.ops import OpSpec, default_data_format

General = Callable[[tuple[Any, ...], dict[str, Any]], Any]
Quick = Callable[..., bool]  # (x, f, padding, strides[, data_format]) -> cleared
Recover = Callable[[tuple[Any, ...], dict[str, Any], Exception], Any]

_TEMPLATE = """\
def {name}({parameters}):
    if quick({x}, {f}, {padding}, {strides}{data_format}{output_shape}):
        try:
            return original({arguments})
        except Exception as error:
            return recover(({arguments},), {{}}, error)
    return general(({arguments},), {{}})
"""
_counter = itertools.count()
# TensorFlow's wrappers around every public op, which pass each argument on as given
# (traceback filtering, type-based dispatch), by code name -> the closure cell holding the
# wrapped function. A deprecation wrapper notices which arguments were passed: not here.
_PASS_THROUGH = {"error_handler": "fn", "op_dispatch_handler": "dispatch_target"}
_VARIADIC = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS
# Globals and builtins the generated code reads, and its one local: no parameter may be
# named like them.
_RESERVED = frozenset({"quick", "original", "general", "recover", "Exception", "error"})


def build(
    original: Callable[..., Any],
    spec: OpSpec,
    caps: Capabilities,
    memory: Memory,
    general: General,
    recover: Recover,
) -> Callable[..., Any] | None:
    """The express wrapper for ``original``, or None where it cannot be the same call."""
    parameters = _plain_parameters(original)
    if parameters is None:
        return None
    names = [p.name for p in parameters]
    x, f, padding = spec.input_params[0], spec.filter_params[0], spec.padding_param
    strides = spec.strides_param or ""
    data_format = spec.data_format_param if reads_format(caps) else ""
    wanted = {x, f, padding, strides, data_format} - {""}
    if not wanted <= set(names) or _RESERVED.intersection(names):
        return None  # not the signature the table describes, or a name the template reads
    quick = make_quick_check(spec, caps, memory)
    if quick is None or (reads_output_shape(spec, caps) and "output_shape" not in names):
        return None
    defaults = {f"_default_{p.name}": p.default for p in parameters if p.default is not p.empty}
    source = _TEMPLATE.format(
        name=original.__name__,
        parameters=", ".join(
            p.name if p.default is p.empty else f"{p.name}=_default_{p.name}" for p in parameters
        ),
        arguments=", ".join(names),
        x=x,
        f=f,
        padding=padding,
        strides=strides,
        output_shape=", output_shape" if reads_output_shape(spec, caps) else "",
        data_format=f", {data_format}" if data_format else "",
    )
    namespace: dict[str, Any] = {
        # callsite.py classifies frames by their module's name: this one is convfix's.
        "__name__": __name__,
        "quick": quick,
        "original": original,
        "general": general,
        "recover": recover,
        **defaults,
    }
    filename = f"<convfix express {spec.name} {next(_counter)}>"
    exec(compile(source, filename, "exec"), namespace)
    # Tracebacks through the lane show its source, as they do for dataclasses' methods.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    function: Callable[..., Any] = namespace[original.__name__]
    return function


def _plain_parameters(original: Callable[..., Any]) -> list[inspect.Parameter] | None:
    """The parameters of the function behind TensorFlow's own pass-through wrappers, if
    they are all plain (positional or keyword) and nothing else wraps it."""
    function = original
    for _ in range(len(_PASS_THROUGH) + 1):
        code = getattr(function, "__code__", None)
        inner = _PASS_THROUGH.get(code.co_name) if code is not None else None
        if inner is None:
            break
        cells = dict(zip(code.co_freevars, function.__closure__ or ()))  # type: ignore[union-attr]
        if inner not in cells:
            return None
        function = cells[inner].cell_contents
    code = getattr(function, "__code__", None)
    if function is original or code is None or code.co_flags & _VARIADIC:
        return None  # not TensorFlow's op, or a decorator we do not know (*args, **kwargs)
    try:
        parameters = list(inspect.signature(function, follow_wrapped=False).parameters.values())
    except (TypeError, ValueError):
        return None
    if not all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters):
        return None
    return parameters


def reads_format(caps: Capabilities) -> bool:
    """Does the quick check take the call's data_format too? Only where an eager
    channels-first call runs on a CPU without kernels for it (no GPU visible, oneDNN off:
    guard/rules.py); elsewhere the lane's call stays as it was."""
    return caps.build.has("no_channels_first_cpu_kernels") and not caps.build.gpu


def reads_output_shape(spec: OpSpec, caps: Capabilities) -> bool:
    """Does the quick check take a transpose's output_shape too? Only with oneDNN, which
    answers some impossible ones without an error (guard/output_shape.py)."""
    return spec.kind == "transpose" and caps.onednn


def make_quick_check(spec: OpSpec, caps: Capabilities, memory: Memory) -> Quick | None:
    """A check of the input, the filter and the padding (and the data_format where
    ``reads_format``), true only for calls the general path's fast check would also clear;
    None where no cheap check exists for ``spec``."""
    if spec.kind in ("depthwise", "separable") or caps.eager not in caps.direct_filter_types:
        return None  # their dilations need checking; or shapes are not read directly here
    flags, checking = runtime.flags, runtime.checking
    eager: Any = caps.eager  # Any: `type(x) is eager` must not narrow x for mypy
    flagged, routed = memory.flagged, memory.routed
    # Strided windows some kernel answers wrongly (guard/rules.py) need the fast
    # check's closer look: Conv3D outside oneDNN, oneDNN's convolutions.
    strided_risk = spec.kind != "transpose" and (
        caps.onednn or (spec.kind == "conv" and spec.spatial in (3, None))
    )
    # Each check spells out the same first clauses (on; a tensor input; nothing learned
    # about this filter or input shape) rather than calling a shared helper: one call
    # more costs as much as the rest of the check.
    # TensorFlow's own default (the same interned string Keras passes): one identity test
    # clears a channels-last call; the rest is for formats spelled otherwise.
    last = default_data_format(spec.spatial) if spec.spatial is not None else None
    if not caps.onednn and spec.kind == "transpose" and spec.spatial in (3, None):
        # A 3-D transpose of an empty input crashes TF's kernel (rules.py): look at dims.

        def lean_transpose(x: Any, f: Any, padding: Any, strides: Any, fmt: Any = None) -> bool:
            return (
                (flags.fast or checking())
                and type(x) is eager
                and (not flagged or id(f) not in flagged)
                and 0 not in (dims := x.shape._dims)
                and (not routed or dims[1:] not in routed)
                and type(padding) is str
                and padding == "SAME"
                and (fmt is last or fmt is None or not (type(fmt) is str and fmt.startswith("NC")))
            )

        return lean_transpose
    if not caps.onednn:  # nothing aborts and no SAME call comes back wrongly shaped

        def lean(x: Any, f: Any, padding: Any, strides: Any, fmt: Any = None) -> bool:
            return (
                (flags.fast or checking())
                and type(x) is eager
                and (not flagged or id(f) not in flagged)
                and (not routed or x.shape._dims[1:] not in routed)
                and type(padding) is str
                and padding == "SAME"
                and (not strided_risk or unit_strides(strides))
                and (fmt is last or fmt is None or not (type(fmt) is str and fmt.startswith("NC")))
            )

        return lean
    if spec.spatial is None:
        return None  # the rank comes from the filter: the fast check reads it
    if spec.kind == "conv" and spec.spatial == 3:
        return None  # oneDNN's Conv3D needs its dilations checked: the fast check does
    rank = spec.spatial + 2
    if spec.kind == "transpose":  # TensorFlow checks output_shape itself, but see below
        is_int = int.__instancecheck__

        def transpose(x: Any, f: Any, padding: Any, strides: Any, out: Any) -> bool:
            # oneDNN answers some impossible output shapes without an error: a size of 0,
            # and VALID with an input size of 1 (guard/output_shape.py). The rest make
            # TensorFlow raise, and recovery says what is wrong (or repairs a batch).
            return (
                (flags.fast or checking())
                and type(x) is eager
                and (not flagged or id(f) not in flagged)
                and len(dims := x.shape._dims) == rank
                and 0 not in dims
                and (not routed or dims[1:] not in routed)
                and ((kind := type(out)) is list or kind is tuple)
                # ints only (~0.2 us): `0 in` on an array element would raise, here where
                # nothing may (TensorFlow's own error is the answer to such a call)
                and all(map(is_int, out))
                and 0 not in out
                and ((type(padding) is str and padding == "SAME") or 1 not in dims[1:])
            )

        return transpose

    def onednn(x: Any, f: Any, padding: Any, strides: Any) -> bool:
        # oneDNN aborts on a wrong rank, answers an empty input wrongly, and may answer a
        # one-channel input wrongly, or a strided bfloat16 one (guard/rules.py): a
        # dimension of 1 where channels are, in either layout, or a stride, goes to the
        # fast check.
        return (
            (flags.fast or checking())
            and type(x) is eager
            and (not flagged or id(f) not in flagged)
            and type(padding) is str
            and padding == "SAME"
            and (strides == 1 if type(strides) is int else unit_strides(strides))
            and len(dims := x.shape._dims) == rank
            and 0 not in dims
            and dims[-1] != 1
            and dims[1] != 1
            and (not routed or dims[1:] not in routed)
        )

    return onednn
