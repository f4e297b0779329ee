"""On a build without oneDNN (TF's default on AMD CPUs) convfix's fast check is leaner:
nothing aborts, so a SAME call goes straight to TensorFlow and its errors are repaired by
recovery. The same repairs must come out, in a fresh interpreter with oneDNN off."""

from __future__ import annotations

import json

import pytest

from tests.subproc import run_python

pytestmark = pytest.mark.subprocess

CHILD = """
import json
import convfix.auto
import numpy as np
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
from convfix.testing import capture_events

k = tf.random.normal([3, 3, 3, 4], seed=1)
x = tf.random.normal([2, 6, 6, 3], seed=2)
plain = tf.nn.conv2d.__convfix_original__
out = {"onednn": bool(_pywrap_util_port.IsMklEnabled())}
with capture_events() as events:
    y = tf.nn.conv2d(x, k, 1, "SAME")
    out["healthy_same"] = bool(np.array_equal(y, plain(x, k, 1, "SAME")))
    out["healthy_events"] = len(events)
    out["dtype"] = tf.nn.conv2d(tf.cast(x, tf.float64), k, 1, "SAME").dtype.name
    out["batch"] = list(tf.nn.conv2d(x[0], k, 1, "SAME").shape)
    out["case"] = bool(np.array_equal(tf.nn.conv2d(x, k, 1, "same"), plain(x, k, 1, "SAME")))
    out["small"] = list(tf.nn.conv2d(x[:, :2, :2], k, 1, "VALID").shape)
    traced = tf.function(lambda v: tf.nn.conv2d(v, k, 1, "SAME"))
    out["traced_batch"] = list(traced(x[0]).shape)
out["reasons"] = sorted({e["reason"] for e in events if e["event"] == "convfix.intervention"})
print("RESULT " + json.dumps(out))
"""


def test_repairs_without_onednn_match_the_onednn_build() -> None:
    done = run_python(CHILD, env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result == {
        "onednn": False,
        "healthy_same": True,
        "healthy_events": 0,
        "dtype": "float32",
        "batch": [6, 6, 4],
        "case": True,
        "small": [2, 1, 1, 4],
        "traced_batch": [6, 6, 4],
        "reasons": [
            "dtype_mismatch",
            "kernel_larger_than_input",
            "missing_batch_dim",
            "padding_case",
        ],
    }, done.stderr[-3000:]
