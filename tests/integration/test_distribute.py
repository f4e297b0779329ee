"""tf.distribute: repairs inside strategy.run, and events that name their worker and replica.

Every test runs in fresh interpreters: logical devices and the multi-worker cluster must be
set up before TensorFlow initialises its devices, once per process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.subproc import run_python

pytestmark = pytest.mark.subprocess

TIMEOUT = 120.0  # seconds, per interpreter: TensorFlow's import alone takes several
IMPORT_AUTO = "import convfix.auto\n"

# Two logical CPU devices; must run before anything initialises TensorFlow's devices.
TWO_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""

# A step under MirroredStrategy: float64 shards, a float32 filter variable made in scope.
MIRRORED_STEP = """
import json
import numpy as np
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    k = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]))
shards = [tf.random.stateless_normal([2, 8, 8, 3], seed=[3, i], dtype=tf.float64)
          for i in range(2)]
x = strategy.experimental_distribute_values_from_function(
    lambda ctx: shards[ctx.replica_id_in_sync_group])

def conv(xr):
    return tf.nn.conv2d(xr, k, 1, "SAME")

step = tf.function(lambda x: strategy.run(conv, args=(x,))) if GRAPH else (
    lambda x: strategy.run(conv, args=(x,)))
for _ in range(3):
    out = step(x)
results = strategy.experimental_local_results(out)
by_hand = [tf.nn.conv2d(tf.cast(s, tf.float32), k, 1, "SAME") for s in shards]
print("RESULT", json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "dtypes": [r.dtype.name for r in results],
    "equal": [bool(np.array_equal(r.numpy(), h.numpy())) for r, h in zip(results, by_hand)],
}))
"""

# The strategy must be made before TensorFlow initialises its devices (it configures the
# collective ops then); the cluster comes from TF_CONFIG.
MULTI_WORKER = """
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
"""

# One worker of a two-worker job: one SGD step through the repaired convolution, with
# gradients summed over the workers; each worker feeds a different batch.
WORKER_STEP = """
import json, os
import numpy as np
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
with strategy.scope():
    k = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]))
k0 = tf.constant(k.numpy())
batches = [tf.random.stateless_normal([2, 8, 8, 3], seed=[5, i], dtype=tf.float64)
           for i in range(2)]

@tf.function
def train_step(x):
    def replica_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME") ** 2)
        grad = tape.gradient(loss, k)
        total = tf.distribute.get_replica_context().all_reduce("sum", grad)
        k.assign_sub(0.01 * total)
    strategy.run(replica_step)

train_step(batches[index])

def grad_by_hand(x):
    with tf.GradientTape() as tape:
        tape.watch(k0)
        loss = tf.reduce_sum(tf.nn.conv2d(x, tf.cast(k0, tf.float64), 1, "SAME") ** 2)
    return tf.cast(tape.gradient(loss, k0), tf.float32)

expected = k0 - 0.01 * (grad_by_hand(batches[0]) + grad_by_hand(batches[1]))
print("RESULT", json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "close": bool(np.allclose(k.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)),
}))
"""


def result_of(stdout: str) -> dict[str, Any]:
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    parsed: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return parsed


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def interventions(path: Path) -> list[dict[str, Any]]:
    return [e for e in read_events(path) if e["event"] == "convfix.intervention"]


def free_loopback_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on 127.0.0.1 (held together so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_together(code: str, envs: list[dict[str, str]], logs: Path) -> list[tuple[int, str]]:
    """Run ``code`` once per env at the same time; (exit code, output) of each.

    A worker that fails leaves its peer waiting for it in a collective, so the first
    failure (or the shared deadline) ends them all rather than each running to its own
    timeout.
    """
    base = {k: v for k, v in os.environ.items() if k != "CONVFIX_CONFIG"}
    outputs = [logs / f"worker-{i}.out" for i in range(len(envs))]
    processes = []
    for env, output in zip(envs, outputs):
        with output.open("w") as sink:  # the child keeps its own descriptor
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", textwrap.dedent(code)],
                    env={**base, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    cwd=logs,
                )
            )
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.poll() is None for p in processes):
            failed = any(p.poll() not in (None, 0) for p in processes)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    return [(p.returncode, out.read_text()) for p, out in zip(processes, outputs)]


# What `import convfix.auto` first does to both strategies today; the second order works.

# -- MirroredStrategy, one process, two logical CPUs ----------------------------------


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(IMPORT_AUTO + TWO_CPUS, id="auto_first"),
        pytest.param(TWO_CPUS + IMPORT_AUTO, id="auto_after_device_setup"),
    ],
)
def test_mirrored_step_is_repaired_on_both_replicas_and_each_replica_is_logged(
    setup: str, tmp_path: Path
) -> None:
    # given a tf.function step under MirroredStrategy whose conv2d gets float64 shards and a
    # float32 filter variable, run three times
    events_path = tmp_path / "events.jsonl"
    code = setup + "GRAPH = True\n" + MIRRORED_STEP
    # when it runs with convfix
    out = run_python(code, env={"CONVFIX_EVENTS_PATH": str(events_path)}, timeout=TIMEOUT)
    # then both replicas computed exactly the hand-repaired convolution, in float32
    assert out.returncode == 0, out.stderr[-3000:]
    assert result_of(out.stdout) == {
        "replicas": 2,
        "dtypes": ["float32", "float32"],
        "equal": [True, True],
    }
    # and each replica traced the call once: one line each, named by replica, no worker
    lines = interventions(events_path)
    assert sorted(e["replica"] for e in lines) == [0, 1]
    for event in lines:
        assert (event["policy"], event["reason"], event["action"]) == (
            "dtype",
            "dtype_mismatch",
            "cast_input",
        )
        assert event["graph"] is True
        assert event["worker"] is None
    # and the final summary counts one trace per replica, not one per step
    summary = read_events(events_path)[-1]
    assert summary["event"] == "convfix.summary"
    assert sorted((c["replica"], c["count"]) for c in summary["counts"]) == [(0, 1), (1, 1)]


def test_eager_strategy_run_logs_each_replica_once_and_counts_every_call(
    tmp_path: Path,
) -> None:
    # given the same step run eagerly: MirroredStrategy runs each replica in its own thread
    events_path = tmp_path / "events.jsonl"
    code = TWO_CPUS + IMPORT_AUTO + "GRAPH = False\n" + MIRRORED_STEP
    out = run_python(code, env={"CONVFIX_EVENTS_PATH": str(events_path)}, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert result_of(out.stdout)["equal"] == [True, True]
    # then the first call of each replica is a line, and all three calls of each are counted
    lines = interventions(events_path)
    assert sorted(e["replica"] for e in lines) == [0, 1]
    assert all(e["graph"] is False for e in lines)
    summary = read_events(events_path)[-1]
    assert sorted((c["replica"], c["count"]) for c in summary["counts"]) == [(0, 3), (1, 3)]


# -- MultiWorkerMirroredStrategy, two processes on loopback ---------------------------


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(IMPORT_AUTO + MULTI_WORKER, id="auto_first"),
        pytest.param(MULTI_WORKER + IMPORT_AUTO, id="auto_after_strategy"),
    ],
)
def test_multi_worker_step_is_repaired_on_each_worker_and_logged_to_its_own_file(
    setup: str, tmp_path: Path
) -> None:
    # given a two-worker cluster on loopback, each worker writing events-{task}.jsonl
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_loopback_ports(2)]}
    envs = [
        {
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
            "CONVFIX_EVENTS_PATH": str(tmp_path / "events-{task}.jsonl"),
        }
        for i in range(2)
    ]
    # when both run one training step through the float64/float32 convolution
    finished = run_together(setup + WORKER_STEP, envs, tmp_path)
    # then both finished, and each applied the update a hand-repaired step would
    for returncode, output in finished:
        assert returncode == 0, output[-3000:]
        assert result_of(output) == {"replicas": 2, "close": True}
    # and each worker logged its repair in its own file, under its own name
    for index in range(2):
        (event,) = interventions(tmp_path / f"events-{index}.jsonl")
        assert event["worker"] == f"worker:{index}"
        assert event["reason"] == "dtype_mismatch"
        # one device per worker: the replica id is global, so it equals the task index
        assert event["replica"] == index
