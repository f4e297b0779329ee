"""``python -m convfix.demo``: bad convolution calls, without and with convfix, side by side.

Every call runs in a fresh interpreter, so a TensorFlow abort is shown, not suffered. The
demo reads no config file of the user's: it writes its own to a temporary directory, next to
the events file it then summarises. Exit status 0 means every call with convfix ended as
its case declares; 1 names the case that did not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from convfix._demo_cases import CASES, MARKER, DemoCase, child_code, config_text

_TIMEOUT = 180.0  # seconds per child; importing TensorFlow takes a few
_CELL = 40  # widest table cell, in characters
_TF_MESSAGE = 100  # TensorFlow's messages are cut here; convfix's are shown whole
_WIDTH = 96  # the details are wrapped to this many columns
_CRASHES = {"SIGABRT": "process aborted", "SIGSEGV": "process crashed"}


@dataclass(frozen=True)
class Outcome:
    """How one child ended: ``ok`` (a result), ``error`` (an exception) or ``crash``."""

    kind: str
    detail: str  # dtype, exception type, or how the process died
    shape: tuple[int, ...] = ()
    message: str = ""
    digest: str = ""


Outcomes = dict[tuple[int, bool], Outcome]
"""Keyed by (index of the case, with convfix)."""


def run_child(case: DemoCase, with_convfix: bool, env: dict[str, str]) -> Outcome:
    """Run one side of ``case`` in a fresh interpreter and read its outcome line."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", child_code(case, with_convfix)],
            env={**env, **case.env},
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return Outcome("crash", f"timed out after {_TIMEOUT:.0f} s")
    if done.returncode < 0:  # killed by a signal: subprocess reports minus its number
        name = signal.Signals(-done.returncode).name
        why = next((ln for ln in done.stderr.splitlines() if "Check failed" in ln), "")
        what = f"{_CRASHES.get(name, 'process killed')} ({name}, exit {128 - done.returncode})"
        return Outcome("crash", what, message=why[why.find("Check failed") :].strip())
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARKER):
            fields = json.loads(line[len(MARKER) :])
            if fields["kind"] == "ok":
                shape = tuple(fields["shape"])
                return Outcome("ok", fields["dtype"], shape, digest=fields["digest"])
            return Outcome("error", fields["type"], message=fields["message"])
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return Outcome("crash", f"exited with code {done.returncode}", message=last)


def child_env(config_path: Path) -> dict[str, str]:
    """The parent's environment without convfix overrides, pointing at the demo's config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVFIX_")}
    env.update(CONVFIX_CONFIG=str(config_path), TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="3")
    return env


def run_all(
    cases: Sequence[DemoCase], env: dict[str, str], progress: Callable[[int, int], None]
) -> Outcomes:
    """Both sides of every case, two children at a time, keyed by (case index, with)."""
    jobs = [(i, side) for i in range(len(cases)) for side in (False, True)]
    outcomes: Outcomes = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {pool.submit(run_child, cases[i], side, env): (i, side) for i, side in jobs}
        progress(0, len(jobs))
        for future in as_completed(futures):
            outcomes[futures[future]] = future.result()
            progress(len(outcomes), len(jobs))
    return outcomes


def sound(outcome: Outcome, case: DemoCase) -> bool:
    """A result, of the shape a correct answer has."""
    right_shape = case.correct_shape is None or outcome.shape == case.correct_shape
    return outcome.kind == "ok" and right_shape


def describe(outcome: Outcome, case: DemoCase) -> str:
    """The table cell for one outcome."""
    if outcome.kind != "ok":
        return outcome.detail
    return f"{outcome.shape} {outcome.detail}" + ("" if sound(outcome, case) else " WRONG SHAPE")


def mismatch(case: DemoCase, without: Outcome, with_: Outcome) -> str | None:
    """Why the outcome with convfix is not the one ``case`` declares, or None."""
    kind, detail = case.expect_with
    if (with_.kind, with_.detail) != (kind, detail):
        return f"expected {kind} {detail}, got {with_.kind} {with_.detail}"
    if kind == "ok" and case.correct_shape is not None and with_.shape != case.correct_shape:
        return f"expected shape {case.correct_shape}, got {with_.shape}"
    if case.same_as_without and with_ != without:
        return "expected the very result TensorFlow gives without convfix"
    return None


def _paint(text: str, colour: str, enabled: bool) -> str:
    codes = {"red": "31", "green": "32", "dim": "2", "bold": "1"}
    return f"\033[{codes[colour]}m{text}\033[0m" if enabled else text


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def table(cases: Sequence[DemoCase], outcomes: Outcomes, colour: bool) -> list[str]:
    """class | without convfix | with convfix, one row per case."""
    rows = [("class", "without convfix", "with convfix")]
    colours = []  # (without, with) per case: red marks what went wrong
    for i, case in enumerate(cases):
        without, with_ = outcomes[i, False], outcomes[i, True]
        wrong = mismatch(case, without, with_) is not None
        right = (
            "same result" if case.same_as_without and with_ == without else describe(with_, case)
        )
        right += " <- NOT AS EXPECTED" if wrong else ""
        rows.append((case.name, _cut(describe(without, case), _CELL), right))
        colours.append(("dim" if sound(without, case) else "red", "red" if wrong else "green"))
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    head = "  ".join(h.ljust(w) for h, w in zip(rows[0], widths)).rstrip()
    lines = [_paint(head, "bold", colour), "  ".join("-" * w for w in widths)]
    for (name, left, right), (left_colour, right_colour) in zip(rows[1:], colours):
        left = _paint(left.ljust(widths[1]), left_colour, colour)
        lines.append(f"{name.ljust(widths[0])}  {left}  {_paint(right, right_colour, colour)}")
    return lines


def details(cases: Sequence[DemoCase], outcomes: Outcomes) -> list[str]:
    """Each call in words, with the messages behind the table's short cells."""
    lines = ["Each call, and what the table's cells stand for:"]
    for i, case in enumerate(cases):
        lines.append(f"  {i + 1}. {case.name}: {case.what}")
        for label, outcome in (("without", outcomes[i, False]), ("with", outcomes[i, True])):
            if outcome.kind == "ok" and not sound(outcome, case):
                text = f"returned {outcome.shape}; a correct result has shape {case.correct_shape}"
            elif outcome.message:
                text = f"{outcome.detail}: {outcome.message}"
                if outcome.detail != "ConvFixError":  # TensorFlow's: the gist is enough
                    text = _cut(text, _TF_MESSAGE)
            else:
                continue
            wrapped = textwrap.wrap(text, _WIDTH - 14)
            lines += [f"     {label + ':':<9}{wrapped[0]}", *(" " * 14 + w for w in wrapped[1:])]
    return lines


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            events.append(json.loads(line))
        except ValueError:  # a child killed mid-line: the other lines still count
            continue
    return events


def summarize_events(path: Path) -> list[str]:
    """What the children wrote to the events file: interventions, by policy and reason."""
    names: Counter[str] = Counter()
    logged: Counter[str] = Counter()  # intervention lines: the first of each kind per process
    counted: Counter[str] = Counter()  # the exit summaries' counts: every call
    for event in _read_events(path):
        names[event["event"]] += 1
        if event["event"] == "convfix.intervention":
            logged[f"{event['policy']}/{event['reason']} ({event['action']})"] += 1
        if event["event"] == "convfix.summary" and event.get("final"):
            for entry in event["counts"]:
                counted[f"{entry['policy']}/{entry['reason']}"] += entry["count"]
    lines = [
        f"Events: {path} (one JSON object a line)",
        f"  {names['convfix.patched']} processes patched TensorFlow (convfix.patched)",
        f"  {names['convfix.intervention']} repairs logged (convfix.intervention)"
        + (":" if logged else ""),
        *(f"    {kind} x{n}" for kind, n in sorted(logged.items())),
        "  calls counted by the exit summaries (convfix.summary)" + (":" if counted else ": none"),
        *(f"    {kind} x{n}" for kind, n in sorted(counted.items())),
    ]
    if names["convfix.internal_error"]:
        lines.append(f"  and {names['convfix.internal_error']} convfix.internal_error events!")
    return lines


def _tf_version() -> str:
    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly"):
        try:
            return f"TensorFlow {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "TensorFlow (version unknown)"


def _progress(enabled: bool) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        if enabled:
            line = f"  running {total} Python processes, 2 at a time: {done}/{total}"
            end = "\r" + " " * len(line) + "\r" if done == total else ""
            sys.stderr.write(f"\r{line}{end}")
            sys.stderr.flush()

    return show


def main() -> int:
    """Run the demo; print the table and the events summary; 0 if convfix did its part."""
    if find_spec("tensorflow") is None:
        print("convfix demo: TensorFlow is not installed (pip install 'convfix[tensorflow-cpu]')")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="convfix-demo-"))
    config, events = workdir / "convfix.toml", workdir / "events.jsonl"
    config.write_text(config_text(str(events)), encoding="utf-8")
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print(
        f"convfix demo: {len(CASES)} kinds of bad convolution call, each run without and with "
        f"convfix\n  {_tf_version()}, Python {sys.version.split()[0]}; each call runs in its own "
        "Python process.\n  TF_ENABLE_ONEDNN_OPTS=1: TensorFlow's oneDNN kernels, its default "
        "on Intel x86-64 CPUs,\n  where these calls abort the process or return wrong shapes.\n"
        f"  'with convfix' = `import convfix.auto` first, config {config}\n"
        "  (the demo's own: ./convfix.toml and CONVFIX_* variables are ignored)\n",
        flush=True,
    )
    outcomes = run_all(CASES, child_env(config), _progress(sys.stderr.isatty()))
    report = [*table(CASES, outcomes, colour), "", *details(CASES, outcomes), ""]
    print("\n".join([*report, *summarize_events(events), ""]))
    wrong = [
        f"{case.name}: {why}"
        for i, case in enumerate(CASES)
        if (why := mismatch(case, outcomes[i, False], outcomes[i, True])) is not None
    ]
    for line in wrong:
        print(f"NOT AS EXPECTED with convfix: {line}")
    if not wrong:
        print("Every call with convfix ended as expected.")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
