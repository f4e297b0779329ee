"""Properties of split_batch against real TensorFlow and the float64 NumPy reference.

For any healthy call of any op in test_properties' drawn space (layouts, strides,
dilations, explicit padding, grouped convolutions, transposes), run on a simulated device
too small for its batch: the split result has the whole call's shape, is within 1e-6
(relative) of TensorFlow's whole-batch answer in float32, and matches the reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, note
from hypothesis import strategies as st

from convfix.testing import capture_events, reset, small_device
from tests.integration.test_properties import (
    Case,
    assert_matches_reference,
    calls,
    invoke,
    operands,
    patched,
    plan,
    share,
    tensorflow_alone,
)
from tests.integration.test_properties import function as tf_function

pytestmark = [
    pytest.mark.filterwarnings("ignore:When dilation rate is greater than 1"),
    pytest.mark.usefixtures("simulated_gpu"),
]


def _relative(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm = float(np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return diff / norm if norm else diff


@share(0.08)
@given(
    case=calls(batch=st.integers(2, 7), channels_first=True, explicit=True),
    capacity=st.integers(1, 6),
)
def test_a_split_call_is_the_whole_call(case: Case, capacity: int) -> None:
    p = plan(case)
    batch = case.x_shape[0]
    if not p.runs or p.shape is None or p.repairs or capacity >= batch:
        return  # only healthy calls that TF's CPU kernels run and the device cannot hold
    note(f"plan: {p}")
    x, f, w = operands(case)
    with tensorflow_alone():
        whole = invoke(tf_function(case.op), case, x, f, w)
    reset()
    with capture_events() as captured, small_device(max_batch=capacity) as device:
        try:
            split = invoke(patched(case.op), case, x, f, w)
        except tf.errors.ResourceExhaustedError:
            # Dilated calls reach the kernel through SpaceToBatch, which multiplies the
            # batch: one example may not fit at all. Then TF's error stands, as documented.
            assert min(size for _, size in device.attempts) > capacity
            (failed,) = [e for e in captured if e.get("policy") == "split_batch"]
            assert failed["outcome"] == "fix_failed"
            return
    assert device.ooms >= 1, "the simulated device never refused the whole batch"
    assert tuple(split.shape) == tuple(whole.shape)
    assert split.dtype == whole.dtype
    if case.x_dtype == "float32":
        assert _relative(split, whole) < 1e-6
    assert_matches_reference(case, split, p)
    (event,) = [e for e in captured if e.get("policy") == "split_batch"]
    assert event["after"]["chunk"] <= capacity
    assert all(size <= capacity for _, size in device.attempts[event["attempts"] - 1 :])
    assert isinstance(split, tf.Tensor)
