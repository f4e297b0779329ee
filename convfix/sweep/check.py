"""One case, run and judged inside a sweep child: bare, or with convfix active.

Bare, the result is compared with the float64 reference of the op's definition
(``reference.py``): the shape exactly, the values by norm-relative error with a tolerance
for the dtype. With convfix, a result is right when it is the reference of the call as
made, or of the call as convfix documents its repair (read from the intervention events:
a batch dimension added, SAME padding, zero padding, a cast); the exact repairs (a
window cropped or cut, an empty answer, a split batch) must give the reference of the
call as made.

Imports TensorFlow and NumPy: only the sweep's children import this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import tensorflow as tf

from convfix.errors import ConvFixError
from convfix.sweep import reference as ref
from convfix.sweep.grid import Case

Array = np.ndarray[Any, np.dtype[np.float64]]

# Norm-relative error allowed per dtype. The operands are small integers, exact in every
# dtype, and so are float32 sums of their products: only 16-bit results round (bfloat16
# keeps 8 significant bits, float16 11). A wrong answer is off by O(1).
TOLERANCE = {"float64": 1e-9, "float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2, "int32": 0.0}
# Repairs that keep the call's meaning: the answer is the reference of the call as made.
EXACT = frozenset(
    {
        "crop_input",
        "one_window",
        "pad_explicitly",
        "answer_empty",
        "split_batch",
        "uppercase_padding",
    }
)


def operands(case: Case) -> list[Any]:
    """The case's tensors, built exactly as ``Case.repro`` builds them."""
    made = []
    for number, (_, shape) in enumerate(case.operand_shapes()):
        values = tf.random.stateless_uniform(list(shape), [case.seed, number], 1, 4, tf.int32)
        made.append(values if case.dtype == "int32" else tf.cast(values, case.dtype))
    return made


def invoke(case: Case, tensors: Sequence[Any]) -> Any:
    """Call ``tf.nn.<op>`` as looked up now (convfix's wrapper when it is patched)."""
    return getattr(tf.nn, case.op)(*tensors, **case.arguments())


def as_float64(value: Any) -> Array:
    return np.asarray(tf.cast(value, tf.float64).numpy(), np.float64)


def reference(case: Case, arrays: Sequence[Array]) -> Array | None:
    """The definition's answer to ``case`` on ``arrays``; None where the definition has
    no answer (a wrong rank, channels that do not match, no window fits)."""
    try:
        return ref.conv(
            arrays[0],
            arrays[1],
            strides=list(case.strides),
            padding=case.padding if isinstance(case.padding, str) else list(case.padding),
            dilations=list(case.dilations),
            data_format=case.data_format,
            kind=case.kind,
            pointwise=arrays[2] if len(arrays) > 2 else None,
            out_shape=case.out_shape,
        )
    except ValueError:
        return None


@dataclass(frozen=True)
class Verdict:
    """How a result compares with a reference."""

    outcome: str  # right, wrong_shape, wrong_values
    detail: str = ""


def no_window_shape(case: Case) -> tuple[int, ...] | None:
    """The empty answer to a call whose windows do not fit the (padded) input at all: the
    definition has no answer there, and TensorFlow's own kernels may refuse it or answer
    with no output positions in that dimension (README: "an empty result or its own
    error"), which is no wrong value. None unless that is why the definition refuses."""
    if case.kind == "transpose" or case.rank_short:
        return None
    n, first = case.spatial, case.channels_first
    sizes = list(case.x_shape[2:] if first else case.x_shape[1:-1])
    kernel = list(case.f_shape[:n])
    try:
        pads = ref.spatial_pads(
            case.padding, sizes, kernel, list(case.strides), list(case.dilations)
        )
        # The call's batch and channels, checked, on an input every window fits.
        roomy = [ref.dilated(k, d) for k, d in zip(kernel, case.dilations)]
        shape = ref.output_shape(
            (*case.x_shape[:2], *roomy) if first else (case.x_shape[0], *roomy, case.x_shape[-1]),
            case.f_shape,
            padding="VALID",
            dilations=list(case.dilations),
            data_format=case.data_format,
            kind=case.kind,
            pointwise_shape=case.p_shape,
        )
    except ValueError:
        return None
    out = [
        (m + lo + hi - ref.dilated(k, d)) // s + 1
        for m, k, d, s, (lo, hi) in zip(sizes, kernel, case.dilations, case.strides, pads)
    ]
    if min(out) >= 0:
        return None
    out = [max(o, 0) for o in out]
    return (shape[0], shape[1], *out) if first else (shape[0], *out, shape[-1])


def judge(y: Any, case: Case, arrays: Sequence[Array], dtypes: Sequence[str]) -> Verdict:
    """Compare the tensor ``y`` with the reference of ``case`` on ``arrays``."""
    expected = reference(case, arrays)
    got = tuple(int(d) for d in y.shape)
    if expected is None:
        if got == no_window_shape(case):
            return Verdict("right")
        return Verdict("wrong_shape", f"answered shape {list(got)}; the call has no answer")
    if got != expected.shape:
        return Verdict("wrong_shape", f"shape {list(got)}, expected {list(expected.shape)}")
    tolerance = max(TOLERANCE.get(d, 1e-2) for d in dtypes)
    values = as_float64(y)
    difference = float(np.linalg.norm(values - expected))
    scale = float(np.linalg.norm(expected))
    if difference <= tolerance * scale:
        return Verdict("right")
    # A cancelling sum is small next to its rounding: scale by the magnitudes' answer.
    magnitude = reference(case, [np.abs(a) for a in arrays])
    scale = float(np.linalg.norm(magnitude)) if magnitude is not None else scale
    if difference <= tolerance * scale:
        return Verdict("right")
    error = difference / scale if scale else float("inf")
    return Verdict("wrong_values", f"norm-relative error {error:.3g} (tolerance {tolerance:g})")


def bare(case: Case) -> dict[str, Any]:
    """Run ``case`` on TensorFlow alone: right, error, wrong_shape or wrong_values."""
    tensors = operands(case)
    try:
        y = invoke(case, tensors)
    except Exception as error:
        return {"outcome": "error", "detail": _error_text(error)}
    verdict = judge(y, case, [as_float64(t) for t in tensors], [case.dtype])
    return {"outcome": verdict.outcome, "detail": verdict.detail}


def guarded(case: Case) -> dict[str, Any]:
    """Run ``case`` with convfix patched in: refused, error, right, repaired (guarded) or
    wrong_shape, wrong_values (unguarded)."""
    from convfix.events import INTERVENTION
    from convfix.testing import capture_events, reset

    reset()  # each case on its own: nothing replayed, every event written in full
    tensors = operands(case)
    with capture_events() as captured:
        try:
            y = invoke(case, tensors)
        except ConvFixError as error:
            return _with("refused", True, _error_text(error), captured)
        except Exception as error:
            return _with("error", True, _error_text(error), captured)
    interventions = [e for e in captured if e.get("event") == INTERVENTION]
    arrays = [as_float64(t) for t in tensors]
    as_made = judge(y, case, arrays, [case.dtype, y.dtype.name])
    if as_made.outcome == "right":
        return _with("right", True, "", captured)
    repaired = _repaired(case, tensors, interventions)
    if repaired is None:  # nothing changed the call's meaning: it had to be as made
        return _with(as_made.outcome, False, as_made.detail, captured)
    call, operand_arrays, unbatch, dtypes, unknown = repaired
    verdict = _judge_repaired(y, call, operand_arrays, unbatch, [*dtypes, y.dtype.name])
    if verdict.outcome == "right":
        return _with("repaired", True, "", captured)
    detail = verdict.detail + (f" (repair not modelled: {', '.join(unknown)})" if unknown else "")
    return _with(verdict.outcome, False, detail, captured)


Repaired = tuple[Case, list[Array], bool, list[str], list[str]]


def _repaired(
    case: Case, tensors: Sequence[Any], interventions: list[dict[str, Any]]
) -> Repaired | None:
    """The call as convfix's interventions changed it, its operands, whether the batch
    dimension it added comes off the answer, the dtypes it computed in and the actions
    this model does not know; None when no intervention changed the call's meaning."""
    call, values = case, list(tensors)
    unbatch, changed = False, False
    dtypes = [case.dtype]
    unknown = []
    moved = False  # data_format ran the call channels-last: later shapes are in that order
    for event in interventions:
        action, after = event.get("action", ""), event.get("after") or {}
        if event.get("outcome") == "fix_failed":
            continue  # not done: TensorFlow refused the repaired call
        if action == "transpose_to_channels_last":
            moved = True  # exact: the same call, its answer transposed back
            continue
        if action in EXACT:
            continue  # the same meaning
        changed = True
        if action == "add_batch_dim":
            unbatch = True
            values[0] = values[0][None]
            out = None if call.out_shape is None else (1, *call.out_shape)
            call = replace(call, x_shape=(1, *call.x_shape), out_shape=out)
        elif action == "use_same_padding":
            call = replace(call, padding="SAME")
        elif action == "zero_pad_input" and after.get("input_shape"):
            padded = list(after["input_shape"])
            if moved:  # back to the call's own channels-first order
                padded = [padded[0], padded[-1], *padded[1:-1]]
            values[0], call = _zero_pad(call, values[0], padded)
        elif action == "use_input_batch" and call.out_shape is not None:
            call = replace(call, out_shape=(call.x_shape[0], *call.out_shape[1:]))
        elif action.startswith("cast_"):
            for position, key in enumerate(("input", "filter", "pointwise")):
                if key in after and position < len(values):
                    values[position] = tf.cast(values[position], after[key])
                    dtypes.append(str(after[key]))
        else:
            unknown.append(action)
    if not changed:
        return None
    return call, [as_float64(v) for v in values], unbatch, dtypes, unknown


def _zero_pad(case: Case, x: Any, padded: list[int]) -> tuple[Any, Case]:
    """The input zero-padded to ``padded`` as the padding policy pads (SAME's split)."""
    pairs = []
    for before, after in zip(case.x_shape, padded):
        total = int(after) - before
        pairs.append([total // 2, total - total // 2])
    return tf.pad(x, pairs), replace(case, x_shape=tuple(int(d) for d in padded))


def _judge_repaired(
    y: Any, case: Case, arrays: list[Array], unbatch: bool, dtypes: list[str]
) -> Verdict:
    if not unbatch:
        return judge(y, case, arrays, dtypes)
    # The batch dimension convfix added comes off the answer: compare with a batch of one.
    return judge(tf.expand_dims(y, 0), case, arrays, dtypes)


def _with(outcome: str, safe: bool, detail: str, captured: list[dict[str, Any]]) -> dict[str, Any]:
    actions = sorted(
        {
            f"{e.get('policy')}:{e.get('action')}"
            + (" (failed)" if e.get("outcome") == "fix_failed" else "")
            for e in captured
            if e.get("action")
        }
    )
    return {"outcome": outcome, "guarded": safe, "detail": detail, "actions": actions}


def _error_text(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    if first.startswith("{{function_node"):  # TensorFlow names its wrapped kernel first
        first = first.split("}}", 1)[-1].strip()
    return f"{type(error).__name__}: {first}"[:240]


def aftershock() -> None:
    """Allocate, free and walk the heap after a case run alone: heap corruption the case
    caused is then caught (glibc aborts) in the case's own process, not in a later one.
    (No gc.collect: with TensorFlow loaded a full collection costs ~0.3 s.)"""
    for _ in range(3):
        tf.nn.conv2d(tf.ones([2, 5, 5, 2]), tf.ones([3, 3, 2, 3]), 1, "SAME").numpy()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)  # glibc: consolidates, checking every free chunk
    except (OSError, AttributeError):  # not glibc
        pass
