"""dtype: input and filter of different dtypes, or a dtype the op has no kernel for.

Repair: cast to one dtype (``target``), run, and optionally cast the result back to the
input's dtype (``output = "input"``). Exact: a cast of the operands, nothing else.
Arrays and lists are left to TensorFlow's own conversion (it converts them to the other
operand's dtype), so calls TensorFlow already handles stay bit-identical.
"""

from __future__ import annotations

import functools
from typing import Any

import tensorflow as tf

from convfix.call import Call, Problem, Repair
from convfix.config import DtypePolicyConfig

name = "dtype"

_FLOATS = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
# The kernels TF 2.21 registers: Conv2D and Conv2DBackpropInput also take int32 (CPU);
# Conv3D* and DepthwiseConv2dNative take floats only.
_INT32_OK = frozenset({("conv", 1), ("conv", 2), ("transpose", 1), ("transpose", 2)})


def dtype_of(value: Any) -> tf.DType | None:
    """The dtype of a tensor or variable (Keras 3 variables report a string); None for
    arrays and lists, whose dtype TensorFlow picks when it converts them."""
    if not isinstance(value, (tf.Tensor, tf.Variable)) and not hasattr(value, "_value"):
        return None
    dtype = getattr(value, "dtype", None)
    return None if dtype is None else tf.as_dtype(dtype)


def supported(call: Call, dtype: tf.DType, spatial: int | None) -> bool:
    if dtype in _FLOATS:
        return True
    return dtype == tf.int32 and (call.spec.kind, spatial) in _INT32_OK


def promote(a: tf.DType, b: tf.DType) -> tf.DType:
    """The wider floating type of the two; integers count as float32; float16 with
    bfloat16 gives float32 (neither holds the other)."""
    a, b = (t if t.is_floating else tf.float32 for t in (a, b))
    if a == b:
        return a
    if {a, b} == {tf.float16, tf.bfloat16}:
        return tf.float32
    return a if a.size > b.size else b


class DtypePolicy:
    """Cast mismatched or unsupported operands to one dtype the op accepts."""

    name = name

    def __init__(self, settings: DtypePolicyConfig) -> None:
        self.settings = settings
        # The dtype chosen for a problem, by the problem's identity: a replayed repair
        # (memory.py) hands the same Problem back call after call.
        self._targets: dict[int, tuple[Problem, tf.DType]] = {}

    def detect(self, call: Call) -> Problem | None:
        if call.spec.needs_tensor_input and isinstance(call.input, (list, tuple)):
            return Problem(
                "input_not_tensor",
                name,
                "answered",
                f"{call.spec.name}: input is a Python {type(call.input).__name__}; "
                "this op needs a tensor or array",
                {"input": type(call.input).__name__},
            )
        x_dtype = dtype_of(call.input)
        operands = {"filter": dtype_of(call.filter)}
        if call.pointwise_filter is not None:
            operands["pointwise_filter"] = dtype_of(call.pointwise_filter)
        if x_dtype is None or any(d is None for d in operands.values()):
            return None
        spatial = call.spec.spatial or _filter_spatial(call)
        before = {"input": x_dtype.name, **{k: v.name for k, v in operands.items() if v}}
        if any(d != x_dtype for d in operands.values()):
            detail = ", ".join(f"{k} is {v}" for k, v in before.items() if k != "input")
            return Problem(
                "dtype_mismatch",
                name,
                "answered",
                f"{call.spec.name}: input is {x_dtype.name} but {detail}; "
                "all operands must have one dtype",
                before,
            )
        if not supported(call, x_dtype, spatial):
            return Problem(
                "unsupported_dtype",
                name,
                "answered",
                f"{call.spec.name}: {x_dtype.name} inputs have no kernel; use one of "
                "float16, bfloat16, float32, float64" + (" or int32" if spatial != 3 else ""),
                before,
            )
        return None

    def target(self, call: Call, problem: Problem) -> tf.DType:
        known = self._targets.get(id(problem))
        if known is not None and known[0] is problem:
            return known[1]
        chosen = self._choose(call, problem)
        if len(self._targets) > 256:
            self._targets.clear()
        self._targets[id(problem)] = (problem, chosen)
        return chosen

    def _choose(self, call: Call, problem: Problem) -> tf.DType:
        dtypes = {k: tf.as_dtype(v) for k, v in problem.before.items()}
        setting = self.settings.target
        if setting == "input":
            chosen = dtypes["input"]
        elif setting == "filter":
            chosen = dtypes["filter"]
        elif setting == "promote":
            chosen = dtypes["input"]
            for other in dtypes.values():
                chosen = promote(chosen, other)
        else:
            chosen = tf.as_dtype(setting)
        spatial = call.spec.spatial or _filter_spatial(call)
        return chosen if supported(call, chosen, spatial) else promote(chosen, chosen)

    def describe(self, call: Call, problem: Problem) -> str:
        if problem.reason == "input_not_tensor":
            return "convert the input to a tensor of the filter's dtype"
        target = self.target(call, problem).name
        casts = [k for k, v in problem.before.items() if v != target]
        back = (
            f", and cast the result back to {problem.before['input']}"
            if self.settings.output == "input" and problem.before["input"] != target
            else ""
        )
        return f"cast {' and '.join(casts)} to {target}{back}"

    def apply(self, call: Call, problem: Problem) -> Repair:
        if problem.reason == "input_not_tensor":
            # As TensorFlow converts list inputs in the ops that accept them: to the filter's
            # dtype when it is floating, else its default for the values.
            f_dtype = dtype_of(call.filter)
            dtype = f_dtype if f_dtype is not None and f_dtype.is_floating else None
            tensor = tf.convert_to_tensor(call.input, dtype=dtype)
            return Repair(call.replace(input=tensor), "convert_input", {"input": tensor.dtype.name})
        target = self.target(call, problem)
        values = {"input": call.input, "filter": call.filter, "pointwise_filter": None}
        params = {"input": call.input_name, "filter": call.filter_name}
        if call.spec.pointwise_param:
            values["pointwise_filter"] = call.pointwise_filter
            params["pointwise_filter"] = call.spec.pointwise_param
        cast = [role for role, dtype in problem.before.items() if dtype != target.name]
        changes = {params[role]: tf.cast(values[role], target) for role in cast}
        rewrites = {params[role]: functools.partial(tf.cast, dtype=target) for role in cast}
        after: dict[str, str] = {role: target.name for role in problem.before}
        x_dtype = tf.as_dtype(problem.before["input"])
        finish = None
        if self.settings.output == "input" and x_dtype != target:
            after["output"] = x_dtype.name

            def finish(result: Any) -> Any:
                return tf.cast(result, x_dtype)

        action = "cast_" + "_".join(cast)
        return Repair(call.replace(**changes), action, after, finish, rewrites)


def _filter_spatial(call: Call) -> int | None:
    shape = getattr(call.filter, "shape", None)
    return None if shape is None or len(shape) < 3 else len(shape) - 2
