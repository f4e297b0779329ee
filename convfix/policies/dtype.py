"""dtype: input and filter of different dtypes, or a dtype the op has no kernel for.

Repair: cast to one dtype (``target``), run, and optionally cast the result back to the
input's dtype (``output = "input"``). Exact as documented: the convolution of the operands
as cast, nothing else; a cast to a narrower dtype rounds them (see the default below).
Arrays and lists are left to TensorFlow's own conversion (it converts them to the other
operand's dtype), so calls TensorFlow already handles stay bit-identical.

The default target, ``"policy"``, is the dtype the model computes in, as Keras casts a
layer's inputs: the calling Keras layer's ``compute_dtype``, else Keras' global dtype
policy's compute dtype (so mixed precision gives float16), float32 when no Keras is
loaded. The next op of the network then gets the dtype it expects; the price is that a
float64 operand loses its extra precision (``"promote"`` keeps it, in float64), and under
a global mixed_float16 policy a float32 operand is rounded to float16 too.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
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


# Keras, read through sys.modules (convfix never imports it). Keras 3: the layer being
# called heads a name scope on a stack; the global policy is dtype_policy(). Keras 2 (2.12,
# 2.13-2.15, tf_keras): a per-thread call context, and mixed_precision's global_policy().
_KERAS3_STATE = "keras.src.backend.common.global_state"
_KERAS3_LAYER = "keras.src.layers.layer"
_KERAS3_POLICY = "keras.src.dtype_policies.dtype_policy"
_KERAS2 = (
    ("keras.src.engine.base_layer_utils", "keras.src.mixed_precision.policy"),
    ("keras.engine.base_layer_utils", "keras.mixed_precision.policy"),
    ("tf_keras.src.engine.base_layer_utils", "tf_keras.src.mixed_precision.policy"),
)


def compute_dtype() -> str:
    """The dtype Keras computes in here: the innermost calling layer's ``compute_dtype``,
    else the global dtype policy's (not floatx(), which ignores mixed precision); float32
    when no Keras is loaded or it names none."""
    try:
        found = _layer_dtype() or _global_dtype()
    except Exception:  # a Keras layout this does not know: as without Keras
        found = None
    return found or "float32"


def _layer_dtype() -> str | None:
    state, layers = sys.modules.get(_KERAS3_STATE), sys.modules.get(_KERAS3_LAYER)
    if state is not None and layers is not None:
        stack = state.get_global_attribute("name_scope_stack") or []
        for scope in reversed(stack):
            caller = getattr(scope, "caller", None)
            if isinstance(caller, layers.Layer):
                return _name(caller.compute_dtype)
    for context, _ in _KERAS2:
        utils = sys.modules.get(context)
        layer = None if utils is None else utils.call_context().layer
        if layer is not None:
            return _name(layer.compute_dtype)
    return None


def _global_dtype() -> str | None:
    policies = sys.modules.get(_KERAS3_POLICY)
    if policies is not None:
        return _name(policies.dtype_policy().compute_dtype)
    for _, module in _KERAS2:
        mixed = sys.modules.get(module)
        if mixed is not None:
            return _name(mixed.global_policy().compute_dtype)  # None for TF1's "_infer"
    return None


def _name(dtype: Any) -> str | None:
    return None if dtype is None else tf.as_dtype(dtype).name


class _StalePlan(Exception):
    """A remembered repair chose its dtype in another Keras context: not replayable."""


def _checked(rewrite: Callable[[Any], Any], dtype: str) -> Callable[[Any], Any]:
    """``rewrite``, refusing to replay once the compute dtype it was chosen for changed
    (the global policy was set, or the same call is made in another layer): the replay
    then takes the full path, which chooses again."""

    def replay(value: Any) -> Any:
        if compute_dtype() != dtype:
            raise _StalePlan
        return rewrite(value)

    return replay


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
        if self.settings.target == "policy":  # depends on where the call is made: not cached
            return self._choose(call, problem)
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
        elif setting == "policy":
            chosen = tf.as_dtype(compute_dtype())
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
        rewrites: dict[str, Callable[[Any], Any]] = {
            params[role]: functools.partial(tf.cast, dtype=target) for role in cast
        }
        if self.settings.target == "policy" and rewrites:
            first = next(iter(rewrites))
            rewrites[first] = _checked(rewrites[first], compute_dtype())
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
