"""``convfix doctor``: can "Failed to get convolution algorithm" happen here, and why?

That error (an UnknownError from cuDNN) has three known causes: TensorFlow pre-allocating
the GPU's memory so cuDNN cannot start (cure: memory growth), CUDA/cuDNN libraries that do
not match the versions TensorFlow was built for, and another process holding the GPU. The
doctor checks each, plus what shapes convfix's own behaviour (oneDNN, the config file),
and runs one tiny convolution in a fresh process (an abort cannot take the doctor down).
Each finding is ok, warn, fail or info, with a remedy where it is not ok. Exit status 0
unless a check failed.
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

_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red", "info": "blue"}
_WIDTH = 100


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``convfix doctor``."""
    subparsers.add_parser(
        "doctor",
        help='diagnose this environment for "Failed to get convolution algorithm"',
        description='Check what causes TensorFlow\'s "Failed to get convolution algorithm" '
        "(GPU memory pre-allocation, CUDA/cuDNN versions that do not match TensorFlow's "
        "build, another process on the GPU) and the settings that shape convfix (oneDNN, its "
        "config), then run one tiny convolution in a fresh process. Exit status 1 if a check "
        "failed.",
    ).add_argument("--json", action="store_true", help="one JSON document for machines")


def main(args: argparse.Namespace) -> int:
    """Run every check; print the findings; 1 if any failed."""
    findings = diagnose()
    if args.json:
        failed = sum(f.status == "fail" for f in findings)
        document = {"findings": [asdict(f) for f in findings], "failed": failed}
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(as_text(findings, _output.use_colour(sys.stdout))))
    return 1 if any(f.status == "fail" for f in findings) else 0


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
