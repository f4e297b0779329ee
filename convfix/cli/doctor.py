"""``convfix doctor``: can "Failed to get convolution algorithm" happen here, and why?

That error (an UnknownError from cuDNN) has three known causes: TensorFlow pre-allocating
the GPU's memory so cuDNN cannot start (cure: memory growth), CUDA/cuDNN libraries that do
not match the versions TensorFlow was built for, and another process holding the GPU. The
doctor checks each, plus what shapes convfix's own behaviour (oneDNN, the config file),
and runs one tiny convolution in a fresh process (an abort cannot take the doctor down).
Each finding is ok, warn, fail or info, with a remedy where it is not ok. Exit status 0
unless a check failed.

``convfix doctor --sweep`` instead runs the hazard sweep (``convfix.sweep``): a bounded grid
of small convolutions on this TensorFlow and device, each bare in a child process and, when
TensorFlow alone was not right, again with convfix, judged against a float64 reference.
Exit status 1 if convfix left any hazard unguarded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from dataclasses import asdict
from importlib.util import find_spec

from convfix.cli import _output
from convfix.cli._doctor_checks import Finding, examine
from convfix.cli._doctor_probe import find_libraries, run_probe
from convfix.sweep import DEFAULT_BUDGET, HAZARDS, OUTCOMES, SweepError, SweepResult
from convfix.sweep import run as sweep

_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red", "info": "blue"}
_WIDTH = 100
_SWEEP_ONLY = ("budget", "seed", "cases", "device")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``convfix doctor``."""
    parser = subparsers.add_parser(
        "doctor",
        help='diagnose this environment for "Failed to get convolution algorithm"; '
        "--sweep: which convolutions this TensorFlow gets wrong",
        description='Check what causes TensorFlow\'s "Failed to get convolution algorithm" '
        "(GPU memory pre-allocation, CUDA/cuDNN versions that do not match TensorFlow's "
        "build, another process on the GPU) and the settings that shape convfix (oneDNN, its "
        "config), then run one tiny convolution in a fresh process. Exit status 1 if a check "
        "failed.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document for machines")
    group = parser.add_argument_group(
        "sweep",
        "--sweep runs a grid of small convolutions (every tf.nn convolution; sizes 1-6, "
        "kernels 1-4, strides 1-4, dilations 1-2; SAME, VALID and explicit padding; both "
        "layouts; grouped, one-channel and empty inputs, inputs a rank or two short; "
        "float32, float16, bfloat16, float64, int32), each in a child process without "
        "convfix and, where TensorFlow alone is not right, again with convfix; every answer "
        "is compared with a float64 NumPy reference of the op's definition. Exit status 1 "
        "if convfix leaves an abort, a hang, a wrong shape or wrong values unguarded.",
    )
    group.add_argument("--sweep", action="store_true", help="run the hazard sweep")
    group.add_argument(
        "--budget",
        type=_budget,
        metavar="SECONDS",
        help=f"stop drawing cases in time to finish within SECONDS, TensorFlow's import "
        f"included (default {DEFAULT_BUDGET:.0f})",
    )
    group.add_argument(
        "--seed", type=int, metavar="N", help="which cases: the same seed, the same cases (0)"
    )
    group.add_argument(
        "--cases", type=_count, metavar="N", help="at most N cases (default: as many as fit)"
    )
    group.add_argument(
        "--device",
        metavar="DEVICE",
        help="run every case under tf.device(DEVICE), e.g. /GPU:0 (default: TensorFlow's own "
        "placement). Without a GPU, try it with /CPU:0; a device TensorFlow does not have is "
        "replaced by the CPU (soft placement), and the report says so",
    )


def _budget(text: str) -> float:
    value = float(text)
    if not value >= 10:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 10 or more; got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of cases, got {text}")
    return value


def main(args: argparse.Namespace) -> int:
    """Run every check, or the sweep; print the findings; 1 if any failed."""
    if getattr(args, "sweep", False):  # (getattr: callers may build a bare Namespace)
        return sweep_main(args)
    given = [f"--{k}" for k in _SWEEP_ONLY if getattr(args, k, None) is not None]
    if given:
        _output.error("doctor", f"{', '.join(given)}: only with --sweep")
        return 2
    findings = diagnose()
    if args.json:
        failed = sum(f.status == "fail" for f in findings)
        document = {"findings": [asdict(f) for f in findings], "failed": failed}
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(as_text(findings, _output.use_colour(sys.stdout))))
    return 1 if any(f.status == "fail" for f in findings) else 0


def sweep_main(args: argparse.Namespace) -> int:
    """``--sweep``: run it with a progress bar on a terminal; 1 if anything is unguarded."""
    if find_spec("tensorflow") is None:
        _output.error("doctor", "--sweep needs TensorFlow, and this Python has none")
        return 1
    budget = DEFAULT_BUDGET if args.budget is None else args.budget
    progress = _output.Progress()

    def show(cases: int, seconds: float) -> None:
        bar = "#" * round(min(1.0, seconds / budget) * 30)
        doing = f"{cases} cases" if cases else "importing TensorFlow"
        progress.update(
            f"convfix doctor --sweep [{bar:<30}] {doing}, {seconds:.0f} of {budget:.0f} s"
        )

    try:
        result = sweep(
            seed=args.seed or 0,
            budget=budget,
            device=args.device,
            cases=args.cases,
            progress=show,
        )
    except SweepError as failed:
        progress.clear()
        _output.error("doctor", f"the sweep could not run: {failed}")
        return 1
    progress.clear()
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(sweep_text(result, _output.use_colour(sys.stdout))))
    return 1 if result.unguarded() or not result.cases else 0


def sweep_text(result: SweepResult, colour: bool) -> list[str]:
    """Where it ran, counts by op and outcome, each unguarded case as a one-line repro."""
    rate = result.cases / max(result.seconds, 1e-9) * 60
    lines = [
        f"convfix doctor --sweep: {result.build_text}",
        f"{result.cases} cases in {result.seconds:.0f} s ({rate:.0f} a minute; seed "
        f"{result.seed}, budget {result.budget:.0f} s, {result.runner} runner); each bare in "
        "a child process, then with convfix where not right",
        "",
    ]
    header = ["op", "cases", *OUTCOMES, "unguarded"]
    by_op = result.by_op()
    rows = [[op, str(sum(row[o] for o in OUTCOMES)), *_counts(row)] for op, row in by_op.items()]
    total = {k: sum(row[k] for row in by_op.values()) for k in [*OUTCOMES, "unguarded"]}
    rows.append(["all", str(result.cases), *_counts(total)])
    lines += _output.table(header, rows, colour=colour, right=range(1, len(header)))
    hazards = [r for r in result.results if r.outcome in HAZARDS]
    guarded = sum(r.guarded is True for r in hazards)
    mode = result.convfix_mode or "its configured"
    lines += [
        "",
        f"TensorFlow alone: {len(hazards)} cases aborted, hung or answered wrongly; with "
        f"convfix ({mode} mode) {guarded} of them were refused or answered rightly.",
    ]
    unguarded = result.unguarded()
    if unguarded:
        head = f"Unguarded: {len(unguarded)} (each pasteable as one line of Python)"
        lines += ["", _output.paint(head, "red", colour)]
        for r in unguarded:
            lines.append(f"{r.repro(result.build_text)}; with convfix: {r.convfix}")
    elif result.cases:
        lines += ["", _output.paint("Unguarded: none.", "green", colour)]
    else:
        lines += ["", _output.paint("No case finished within the budget.", "red", colour)]
    if result.unfinished:
        lines.append(f"{result.unfinished} cases drawn but cut off by the budget, not counted.")
    lines += [f"note: {note}" for note in result.notes]
    return lines


def _counts(row: dict[str, int]) -> list[str]:
    return [str(row[k]) if row[k] else "." for k in [*OUTCOMES, "unguarded"]]


def diagnose() -> list[Finding]:
    """Every finding, in the order a reader should meet them."""
    env = dict(os.environ)
    libraries = find_libraries(env)
    if find_spec("tensorflow") is None:
        return examine(None, libraries, env)
    progress = _output.Progress()
    try:
        probe = run_probe(
            lambda s: progress.update(
                f"convfix doctor: importing TensorFlow and running one convolution in a "
                f"fresh Python process... {s:.0f} s"
            )
        )
    finally:
        progress.clear()
    return examine(probe, libraries, env)


def as_text(findings: list[Finding], colour: bool) -> list[str]:
    """One block per finding: status, check and what was found; the remedy indented below."""
    lines = ['convfix doctor: can "Failed to get convolution algorithm" happen here?', ""]
    for finding in findings:
        tag = _output.paint(f"{finding.status:<4}", _COLOURS[finding.status], colour)
        wrapped = _wrap(f"{finding.check}: {finding.found}", "", "  ", _WIDTH - 6)
        lines.append(f"{tag}  {wrapped[0]}")
        lines += [f"      {more}" for more in wrapped[1:]]
        if finding.remedy:
            lines += _wrap(f"remedy: {finding.remedy}", " " * 6, " " * 8, _WIDTH)
    counts = {s: sum(f.status == s for f in findings) for s in ("fail", "warn")}
    verdict = f"{counts['fail']} failed, {counts['warn']} warnings."
    lines += ["", _output.paint(verdict, "red" if counts["fail"] else "bold", colour)]
    return lines


def _wrap(text: str, first: str, rest: str, width: int) -> list[str]:
    # Paths and flags (CPU-only, TF_FORCE_GPU_ALLOW_GROWTH=true) must stay whole to be copied.
    return textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
