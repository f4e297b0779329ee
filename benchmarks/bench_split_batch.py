"""What does split_batch cost: the first out-of-memory, the steady state, the memory peak?

All on the simulated small device (convfix.testing.small_device): a batch of 64 on a device
that holds 16 examples, conv2d x[64,32,32,16] * k[3,3,16,16], SAME. The device runs each
kernel before refusing it (to name the output's shape, as a real OOM does), so a refused
attempt here costs a full kernel, more than a real GPU's failed allocation: the first-OOM
time is an upper bound.

1. First OOM: attempts and time until the call answers, against one whole-batch call.
2. Steady state, grow-back off: the learned call (straight to chunks of 16, one attempt)
   against a hand-written chunked loop with the same chunks, both on the device (goal:
   <= 1.10x, median of interleaved pairs).
3. Peak memory (fresh process each, VmHWM reset through /proc/self/clear_refs, output 64
   MiB): the whole call, convfix's split joined by concatenation (the default) and in
   place (when the concatenation does not fit), and the hand-written loop. The peak of a
   split call is reported in its event too, as an estimate.

Run alone: ``python benchmarks/bench_split_batch.py [--quick] [--pairs N] [--json]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from _report import Options, Result, main, ratio_result
from _setup import prepare
from _timing import Plan, Side, compare

X_SHAPE, K_SHAPE, HOLDS = (64, 32, 32, 16), (3, 3, 16, 16), 16
NO_GROW = {"split_batch": {"grow_back_after": 0}}


def _device_and_inputs() -> tuple[Any, Any, Any]:
    tf = prepare()
    from convfix.testing import reset, small_device

    reset()
    return tf, small_device, (tf.random.normal(X_SHAPE), tf.random.normal(K_SHAPE))


def first_oom(options: Options) -> Result:
    """Attempts and time of the first out-of-memory's recovery, with and without gc."""
    tf, small_device, (x, k) = _device_and_inputs()
    import convfix
    from convfix.testing import capture_events, reset

    whole = _best_of(5, lambda: tf.nn.conv2d(x, k, 1, "SAME"))
    timings: dict[bool, float] = {}
    for collect in (True, False):
        reset()
        settings = {"split_batch": {"grow_back_after": 0, "gc": collect}}
        with (
            convfix.override(policies=settings),
            capture_events() as captured,
            tf.device("/GPU:0"),  # a simulated GPU: the CPU's own OOMs are not split
            small_device(max_batch=HOLDS) as device,
        ):
            started = time.perf_counter()
            tf.nn.conv2d(x, k, 1, "SAME")
            timings[collect] = time.perf_counter() - started
        (event,) = [e for e in captured if e.get("policy") == "split_batch"]
    return Result(
        question=f"first OOM: batch {X_SHAPE[0]} on a device holding {HOLDS}",
        measured=(
            f"{event['attempts']} attempts, {timings[True] * 1000:.0f} ms with gc "
            f"({timings[False] * 1000:.0f} ms gc off; one whole call {whole * 1000:.1f} ms)"
        ),
        goal="reported",
        passed=device.ooms == event["attempts"] - 1,
        note="each refused attempt ran its kernel first (simulation): an upper bound",
    )


def steady_state(options: Options) -> Result:
    """The learned call against a hand-written chunked loop, both on the small device."""
    tf, small_device, (x, k) = _device_and_inputs()
    import convfix

    def by_hand(v: Any) -> Any:
        return tf.concat(
            [tf.nn.conv2d(v[i : i + HOLDS], k, 1, "SAME") for i in range(0, 64, HOLDS)], 0
        )

    plan = Plan(pairs=options.pairs_or(30, 6), calls=10, warmup=2)
    with (
        convfix.override(policies=NO_GROW),
        tf.device("/GPU:0"),  # a simulated GPU: the CPU's own OOMs are not split
        small_device(max_batch=HOLDS) as device,
    ):
        tf.nn.conv2d(x, k, 1, "SAME")  # the first OOM: learns chunk 16
        ooms = device.ooms
        subject = Side("convfix", lambda v: tf.nn.conv2d(v, k, 1, "SAME"))
        base = Side("by hand", by_hand, context=lambda: convfix.override(mode="off"))
        c = compare(subject, base, lambda n: [x + 0.0 for _ in range(n)], plan)
        repeated = device.ooms - ooms
    if repeated:
        raise RuntimeError(f"{repeated} out-of-memory errors after learning: not the steady state")
    note = "1 attempt a call (no OOM after learning); base: tf.concat of 4 hand-made chunks"
    return ratio_result(f"learned split vs hand loop, {HOLDS}/64", 1.10, c, note)


_PEAK_CHILD = """
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import convfix
convfix.patch()
import tensorflow as tf
from convfix.testing import small_device

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

def peak(fn):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    base = status("VmRSS")
    out = fn()
    return status("VmHWM") - base, out

x = tf.random.normal([64, 64, 64, 8]); k = tf.random.normal([3, 3, 8, 64])  # out 64 MiB
tf.nn.conv2d(x[:2], k, 1, "SAME")
how = sys.argv[1]
with convfix.override(policies={"split_batch": {"grow_back_after": 0}}):
    if how == "whole":
        used, _ = peak(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
    elif how == "hand":
        used, _ = peak(lambda: tf.concat([tf.nn.conv2d(x[i:i + 16], k, 1, "SAME")
                                          for i in range(0, 64, 16)], 0))
    elif how.startswith("graph"):  # tf.function, whole or under a budget of 1/4 the call
        # ~2.25 MiB per example (input, output, im2col estimate): chunks of 17
        budget = {"max_batch_bytes": 40 * 2**20} if how == "graph_budget" else {}
        with convfix.override(policies={"split_batch": budget}):
            step = tf.function(lambda v: tf.nn.conv2d(v, k, 1, "SAME"))
            step(x)  # trace
            used, _ = peak(lambda: step(x))
    else:  # "convfix": concatenation fits; "in_place": it does not (join in place)
        join_limit = 2 * 64 * 2**20 - 1 if how == "in_place" else None
        with tf.device("/GPU:0"), small_device(max_batch=16, max_join_bytes=join_limit):
            tf.nn.conv2d(x, k, 1, "SAME")  # learn
            used, _ = peak(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
print(json.dumps(used))
"""


def peak_memory(options: Options) -> Result:
    """Peak extra resident memory of the whole call, convfix's split and the hand loop."""
    if not os.path.exists("/proc/self/clear_refs"):
        return Result("peak memory of a split call", "no /proc (Linux only)", "reported", True)
    ways = ("whole", "convfix", "in_place", "hand", "graph_whole", "graph_budget")
    peaks = {how: _child_peak(how) for how in ways}
    mib = {how: used / 2**20 for how, used in peaks.items()}
    return Result(
        question="peak memory, output 64 MiB in 4 chunks",
        measured=(
            f"whole {mib['whole']:.0f}, split: concat {mib['convfix']:.0f} / in place "
            f"{mib['in_place']:.0f}, hand loop {mib['hand']:.0f}; tf.function: whole "
            f"{mib['graph_whole']:.0f}, max_batch_bytes {mib['graph_budget']:.0f} (MiB)"
        ),
        goal="in place < concat",
        passed=peaks["in_place"] < peaks["convfix"],
        note=(
            "fresh process each, oneDNN off; VmHWM reset via /proc/self/clear_refs; in "
            "place: the device refuses the concatenation (max_join_bytes)"
        ),
    )


def _child_peak(how: str) -> int:
    # oneDNN off in the children: with it on, TensorFlow's CPU allocator pools freed memory,
    # so a call after the learning one shows no new peak at all (measured: 0 MiB).
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CONVFIX_EVENTS_PATH": os.devnull,
        "TF_ENABLE_ONEDNN_OPTS": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD, how],
        capture_output=True, text=True, env=env, timeout=600, check=True,
    )  # fmt: skip
    return int(json.loads(done.stdout.strip().splitlines()[-1]))


def _best_of(n: int, fn: Any) -> float:
    fn()
    best = float("inf")
    for _ in range(n):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


if __name__ == "__main__":
    sys.exit(main([first_oom, steady_state, peak_memory], __doc__ or ""))
