"""What does convfix cost on a healthy eager tf.nn.conv2d call, counted in CPU instructions?

Wall-clock ratios on this shared 2-core VM have an IQR of about +-6%: they cannot show a 1% goal.
Instruction counts do not depend on what else the machine runs. Segments of N calls of the
patched ``tf.nn.conv2d`` and of TensorFlow's own ``conv2d_v2`` (``gen_nn_ops.conv2d`` restored
too, as in bench_healthy_path.py) alternate ABBA on the same inputs, oneDNN off and on; import
and warm-up are never counted.

Each call gets a new input tensor, made before counting starts, as in a real pipeline.

Counted: every thread, the pool that runs the conv kernel included. ``perf stat`` counts between
control-FIFO enable and disable. Without hardware counters, callgrind: instrumentation starts by
client request after warm-up, and each segment is dumped per thread. The calling thread's count
repeats within ~100 instructions a call (~1000 when it waits on the pool); the pool's varies by
percents, its spin-waits following valgrind's serialized scheduling. So the ratio takes the
calling thread's diff, where all of convfix's code runs, over the all-thread unpatched count.

Caveat: instructions are not time. Cache misses, pool wake-ups and spinning cost time no count
shows, and other threads' instructions overlap the calling thread's. But the wrapper's own
Python code is all instructions on the calling thread.

Run: ``python benchmarks/bench_instructions.py [--quick]`` (about 3 minutes under valgrind).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import glob
import json
import math
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

SHAPES = {"tiny": ((1, 8, 8, 3), (3, 3, 3, 4)), "typical": ((8, 32, 32, 16), (3, 3, 16, 16))}
GOALS = {"tiny": 1.03, "typical": 1.01}
SIDES = ("patched", "unpatched")
WARMUP = 20
# An x86-64 valgrind client request as valgrind.h's VALGRIND_DO_CLIENT_REQUEST_EXPR: rax = &args,
# four rotations of rdi (a no-op natively), xchg rbx,rbx; returns rdx (0 natively).
CLIENT_REQUEST = bytes.fromhex("4889f831d248c1c70348c1c70d48c1c73d48c1c7334887db4889d0c3")
CALLGRIND = 0x43540000  # VG_USERREQ_TOOL_BASE('C','T'); + 1 zero, + 3 dump at, + 4 start
Segment = tuple[str, str, int]  # shape, side, calls
Count = tuple[float, float]  # instructions per call: all threads, calling thread


def child(counter: str, segments: list[Segment], ctl: list[str], depth: int = 0) -> None:
    """The measured process: set up, warm up, then count each segment, ``depth`` Python
    frames down (a program's stack: TF reads up to a fixed number of frames per op)."""
    if depth > 0:
        child(counter, segments, ctl, depth - 1)
        return
    from _setup import BACKSTOP_CONV2D, original, prepare, unpatched

    tf = prepare()
    tf.random.set_seed(0)
    functions = {"patched": tf.nn.conv2d, "unpatched": original(tf.nn.conv2d)}
    if functions["patched"] is functions["unpatched"]:
        sys.exit("convfix.patch() did not wrap tf.nn.conv2d")
    inputs = {name: [tf.random.normal(s) for s in SHAPES[name]] for name, _, _ in segments}
    for name, side in dict.fromkeys(tuple(s[:2]) for s in segments):  # warm-up, each kind once
        with unpatched(BACKSTOP_CONV2D) if side == "unpatched" else contextlib.nullcontext():
            for _ in range(WARMUP):
                functions[side](*inputs[name], 1, "SAME")
    gc.collect()
    gc.freeze()  # TensorFlow's heap: a collection before each segment stays cheap
    mark = marker(counter, ctl)
    for i, (name, side, n) in enumerate(segments):
        fn, (x, k) = functions[side], inputs[name]
        # A new input tensor each call, as in a real pipeline (and as bench_healthy_path
        # times it), made before counting starts.
        xs = [x + 0.0 for _ in range(n)]
        with unpatched(BACKSTOP_CONV2D) if side == "unpatched" else contextlib.nullcontext():
            gc.collect()  # every segment starts from the same collector state
            mark("")
            for x_i in xs:
                fn(x_i, k, 1, "SAME")
            mark(f"seg{i}")
        del xs


def marker(counter: str, ctl: list[str]) -> Callable[[str], None]:
    """``mark("")`` starts counting a segment, ``mark(label)`` ends it."""
    if counter == "perf":
        fifo, ack = open(ctl[0], "w"), open(ctl[1])  # noqa: SIM115 (perf holds both open)

        def perf_mark(label: str) -> None:
            fifo.write("disable\n" if label else "enable\n")
            fifo.flush()
            ack.readline()

        return perf_mark
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(CLIENT_REQUEST)
    call = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)(
        ctypes.addressof(ctypes.c_char.from_buffer(page))
    )

    def request(code: int, arg: int = 0) -> None:
        args = (ctypes.c_uint64 * 6)(code, arg, 0, 0, 0, 0)  # alive until the call returns
        call(ctypes.addressof(args))

    def vgdb(*command: str) -> None:
        subprocess.run(["vgdb", f"--pid={os.getpid()}", *command], check=True, capture_output=True)

    def callgrind_mark(label: str) -> None:
        if not label:
            vgdb("dump", "start")  # zero every thread
            request(CALLGRIND + 1)  # and the calling thread again, after vgdb's spawn
            return
        text = ctypes.create_string_buffer(label.encode())
        request(CALLGRIND + 3, ctypes.addressof(text))  # the calling thread, exactly
        vgdb("dump", label)  # every thread; the calling one's part (vgdb's spawn) is unused

    request(CALLGRIND + 4)  # start instrumenting: import and set-up ran at native speed
    callgrind_mark.page = page  # type: ignore[attr-defined]  # the code must outlive the mark
    return callgrind_mark


def measure(counter: str, onednn: str, segments: list[Segment], depth: int = 0) -> list[Count]:
    """Instructions per call of each segment that makes calls."""
    with tempfile.TemporaryDirectory(prefix="convfix-instr-") as tmp:
        ctl, out = [os.path.join(tmp, "ctl"), os.path.join(tmp, "ack")], os.path.join(tmp, "cg")
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            json.dumps([counter, segments, ctl, depth]),
        ]
        if counter == "callgrind":
            tool = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes"]
            command = [*tool, f"--callgrind-out-file={out}", *command]
        else:
            for fifo in ctl:
                os.mkfifo(fifo)
            perf = ["perf", "stat", "-x,", "-e", "instructions", "--delay=-1"]
            command = [*perf, f"--control=fifo:{ctl[0]},{ctl[1]}", *command]
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{counter} child failed:\n{run.stderr[-3000:]}")
        if counter == "perf":
            rows = [s.split(",") for s in run.stderr.splitlines() if s.count(",") > 2]
            value = [r[0] for r in rows if r[2].startswith("instructions")][-1]
            return [(int(value) / segments[0][2], math.nan)]
        totals = callgrind_totals(out)
    mark = totals["seg0"][0]  # seg0 makes no call: it counts the marks themselves
    cells = [(totals[f"seg{i}"], n) for i, (_, _, n) in enumerate(segments) if n]
    return [((main - mark + pool) / n, (main - mark) / n) for (main, pool), n in cells]


def callgrind_totals(out: str) -> dict[str, list[int]]:
    """label -> [calling thread (client request dump), other threads (vgdb dump)]."""
    totals: dict[str, list[int]] = {}
    for path in glob.glob(out + ".*"):
        with open(path) as file:
            lines = file.read(4000).splitlines()
        head = dict(line.split(": ", 1) for line in lines if line.startswith(("thread", "summ")))
        desc = next(line for line in lines if line.startswith("desc: Trigger: "))
        cell = totals.setdefault(desc.rsplit(" ", 1)[-1], [0, 0])  # "Request: seg3", "dump seg3"
        by_request = "Client Request" in desc
        if by_request or head.get("thread", "1") != "1":
            cell[not by_request] += int(head["summary"])
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats")
    parser.add_argument(
        "--depth",
        type=int,
        default=0,
        help="make the calls this many Python frames deep (a real program's stack)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*json.loads(args.child))
        return 0
    probe = shutil.which("perf") and subprocess.run(
        ["perf", "stat", "-x,", "-e", "instructions", "true"], capture_output=True, text=True
    )
    if probe and probe.stderr.split(",")[0].strip().isdigit():
        counter = "perf"
    elif shutil.which("valgrind") and shutil.which("vgdb") and platform.machine() == "x86_64":
        counter = "callgrind"
    else:
        print("SKIPPED: no hardware instruction counter (perf stat) and no valgrind/vgdb.")
        return 0
    reps = 2 if args.quick else 3
    calls = {"tiny": 50, "typical": 5} if args.quick else {"tiny": 100, "typical": 10}
    calls = {k: v * 20 for k, v in calls.items()} if counter == "perf" else calls  # native
    order = [
        (name, side, calls[name])
        for rep in range(reps)
        for name in SHAPES
        for side in (SIDES if rep % 2 == 0 else SIDES[::-1])  # ABBA: a drift cancels
    ]
    if counter == "perf":  # perf adds up every enabled stretch: one segment a process
        jobs = [(dnn, [segment]) for dnn in ("0", "1") for segment in order]
    else:  # one process per oneDNN setting, its seg0 making no call
        jobs = [(dnn, [("tiny", "patched", 0), *order]) for dnn in ("0", "1")]
    print(
        f"counter: {counter}; repeats {reps}; calls per segment {calls}; depth {args.depth}",
        flush=True,
    )
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda job: measure(counter, job[0], job[1], args.depth), jobs))
    counts: dict[tuple[str, str, str], list[Count]] = {}
    for (dnn, segments), values in zip(jobs, done):
        for (name, side, _), value in zip([s for s in segments if s[2]], values):
            counts.setdefault((dnn, name, side), []).append(value)
    print(report(counts, per_thread=counter == "callgrind"))
    print(f"\ntotal run time {time.monotonic() - start:.0f} s")
    return 0


def report(counts: dict[tuple[str, str, str], list[Count]], per_thread: bool) -> str:
    lines = [
        "| question | patched instr/call | unpatched instr/call | of which calling thread "
        "| diff/call | ratio | goal | result | per repeat: all-thread ratio; calling-thread diff |",
        "|" + "---|" * 9,
    ]
    for name in SHAPES:
        for dnn in ("0", "1"):
            p, u = counts[(dnn, name, "patched")], counts[(dnn, name, "unpatched")]
            pm, um = (statistics.median(v[0] for v in side) for side in (p, u))
            main = [a[1] - b[1] for a, b in zip(p, u)]
            diff = statistics.median(main) if per_thread else pm - um
            ratio, goal = 1 + diff / um, GOALS[name]
            reps = " ".join(f"{a[0] / b[0]:.4f}" for a, b in zip(p, u))
            reps += "; " + " ".join(f"{d:+,.0f}" for d in main) if per_thread else ""
            cells = [f"conv2d {name}, oneDNN {'on' if dnn == '1' else 'off'}", f"{pm:,.0f}"]
            calling = f"{statistics.median(v[1] for v in u):,.0f}" if per_thread else "-"
            cells += [f"{um:,.0f}", calling, f"{diff:+,.0f}", f"{ratio:.4f}", f"<= {goal:.2f}"]
            cells += ["ok" if ratio <= goal else "MISSED", reps]
            lines.append("| " + " | ".join(cells) + " |")
    how = "the calling thread's (convfix runs there)" if per_thread else "all threads'"
    lines.append(f"\ninstr/call: all threads, median; diff/call: {how}; ratio: 1 + diff/unpatched")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
