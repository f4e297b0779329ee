"""``python -m convfix.cli.demo``: bad convolution calls, without and with convfix, side by side.

Every call runs in a fresh interpreter, so a TensorFlow abort is shown, not suffered. The
demo reads no config file of the user's: it writes its own to a temporary directory, next to
the events file it then summarises. Exit status 0 means every call with convfix ended as
its case declares for the mode the configuration gives its policy (a refusal is what strict
mode should give, see :mod:`convfix.cli.demo.expect`); 1 names the case that did not.
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

from convfix.cli.demo.cases import CASES, DemoCase, Outcome, config_text, run_child
from convfix.cli.demo.events_file import (
    Counted,
    counted_by_pid,
    read_events,
    said,
    summarize_events,
)
from convfix.cli.demo.expect import Expected, expected, mismatch, wrong_values

_CELL = 44  # widest table cell, in characters
_TF_MESSAGE = 100  # TensorFlow's messages are cut here; convfix's are shown whole
_WIDTH = 96  # the details are wrapped to this many columns

Outcomes = dict[tuple[int, bool], Outcome]
"""Keyed by (index of the case, with convfix)."""


def child_env(config_path: Path, events_path: Path) -> dict[str, str]:
    """The parent's environment without convfix overrides, pointing at the config, with
    events in the demo's own file (CONVFIX_EVENTS_* override whatever the config says)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVFIX_")}
    env.update(
        CONVFIX_CONFIG=str(config_path),
        # Braces doubled: events.path is a template ({pid}, {task}, {task_type}).
        CONVFIX_EVENTS_PATH=str(events_path).replace("{", "{{").replace("}", "}}"),
        CONVFIX_EVENTS_FORMAT="json",
        TF_ENABLE_ONEDNN_OPTS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env


def run_all(
    cases: Sequence[DemoCase], env: dict[str, str], progress: Callable[[int, int], None]
) -> Outcomes:
    """Both sides of every case, two children at a time."""
    jobs = [(i, side) for i in range(len(cases)) for side in (False, True)]
    outcomes: Outcomes = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {pool.submit(run_child, cases[i], side, env): (i, side) for i, side in jobs}
        progress(0, len(jobs))
        for future in as_completed(futures):
            outcomes[futures[future]] = future.result()
            progress(len(outcomes), len(jobs))
    return outcomes


def wanted_shape(want: Expected | None, case: DemoCase) -> tuple[int, ...] | None:
    """The shape a result should have: the expected repair's with convfix (``want``),
    else a faithful answer's; None: any."""
    return want.shape if want is not None else case.correct_shape


def misshapen(outcome: Outcome, wanted: tuple[int, ...] | None) -> bool:
    """A result, but not of the wanted shape."""
    return outcome.kind == "ok" and wanted is not None and outcome.shape != wanted


def describe(outcome: Outcome, wanted: tuple[int, ...] | None, case: DemoCase) -> str:
    """The table cell for one outcome."""
    if outcome.kind == "error" and outcome.detail == "ConvFixError":
        return "refused (ConvFixError)"
    if outcome.kind != "ok":
        return outcome.detail
    text = f"{outcome.shape} {outcome.detail}" + (" WRONG SHAPE" * misshapen(outcome, wanted))
    return text + (" WRONG VALUES" * wrong_values(outcome, case))


def _paint(text: str, colour: str, enabled: bool) -> str:
    codes = {"red": "31", "green": "32", "dim": "2", "bold": "1"}
    return f"\033[{codes[colour]}m{text}\033[0m" if enabled else text


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def table(
    cases: Sequence[DemoCase],
    wants: Sequence[Expected],
    outcomes: Outcomes,
    counted: Counted,
    colour: bool,
) -> list[str]:
    """class | without convfix | with convfix, one row per case."""
    rows = [("class", "without convfix", "with convfix")]
    colours = []  # (without, with) per case: red marks what went wrong
    for i, case in enumerate(cases):
        without, with_ = outcomes[i, False], outcomes[i, True]
        left = describe(without, case.correct_shape, case)
        right = describe(with_, wanted_shape(wants[i], case), case)
        if case.same_as_without and with_ == without:
            right = "same result"
        policies = sorted({what.split("/")[0] for _, what in counted.get(with_.pid, [])})
        right += f" [{', '.join(policies)}]" if policies else ""
        wrong = mismatch(case, wants[i], without, with_) is not None
        rows.append((case.name, _cut(left, _CELL), right + (" <- NOT AS EXPECTED" * wrong)))
        bad_left = (
            without.kind != "ok"
            or misshapen(without, case.correct_shape)
            or wrong_values(without, case)
        )
        colours.append(("red" if bad_left else "dim", "red" if wrong else "green"))
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    head = "  ".join(h.ljust(w) for h, w in zip(rows[0], widths)).rstrip()
    lines = [_paint(head, "bold", colour), "  ".join("-" * w for w in widths)]
    for (name, left, right), (left_colour, right_colour) in zip(rows[1:], colours):
        left = _paint(left.ljust(widths[1]), left_colour, colour)
        lines.append(f"{name.ljust(widths[0])}  {left}  {_paint(right, right_colour, colour)}")
    return lines


def details(
    cases: Sequence[DemoCase], wants: Sequence[Expected], outcomes: Outcomes, counted: Counted
) -> list[str]:
    """Each call in words: the messages, shapes, repairs and refusals behind the table's
    cells, and what was expected under the configuration's modes."""
    lines = [
        "What each row shows ([policy] = the convfix policy that repaired, refused or "
        "warned about the call):"
    ]
    for i, case in enumerate(cases):
        lines += textwrap.wrap(
            f"{i + 1}. {case.name}: {case.what}",
            _WIDTH,
            initial_indent="  ",
            subsequent_indent="     ",
        )
        for side, outcome in ((False, outcomes[i, False]), (True, outcomes[i, True])):
            text = said(counted.get(outcome.pid, [])) if side else ""
            text = f"{text}, " if text else ""
            wanted = wanted_shape(wants[i] if side else None, case)
            if misshapen(outcome, wanted):
                should = "expected" if side else "a correct result has shape"
                text += f"returned {outcome.shape}; {should} {wanted}"
            elif wrong_values(outcome, case):
                right = list(case.correct_values or ())
                text += f"returned {list(outcome.values)}; a correct result is {right}"
            elif outcome.kind == "ok" and text:
                text += f"returned {outcome.shape} {outcome.detail}"
            elif outcome.message:
                text += f"{outcome.detail}: {outcome.message}"
                if outcome.detail != "ConvFixError":  # TensorFlow's own: the gist is enough
                    text = _cut(text, _TF_MESSAGE)
            if text:
                lines += _labelled("with:" if side else "without:", text)
        lines += _labelled("expected:", f"{wants[i]}, as {wants[i].why}")
    return lines


def _labelled(label: str, text: str) -> list[str]:
    wrapped = textwrap.wrap(text, _WIDTH - 15)
    return [f"     {label:<10}{wrapped[0]}", *(" " * 15 + w for w in wrapped[1:])]


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


def main(user_config: Path | None = None) -> int:
    """Run the demo; print the table and the events summary; 0 if convfix did its part.

    ``user_config``: run the "with convfix" side under that file instead of the demo's
    embedded defaults; each case then expects what the mode of its policy there gives."""
    if find_spec("tensorflow") is None:
        print("convfix demo: TensorFlow is not installed (pip install 'convfix[tensorflow-cpu]')")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="convfix-demo-"))
    config, events_path = workdir / "convfix.toml", workdir / "events.jsonl"
    config.write_text(config_text(str(events_path)), encoding="utf-8")
    origin = "the demo's own: ./convfix.toml and CONVFIX_* variables are ignored"
    if user_config is not None:
        config, origin = user_config.resolve(), "--config; events still go to the demo's file"
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print(
        f"convfix demo: {len(CASES)} kinds of bad convolution call, each run without and with "
        f"convfix\n  {_tf_version()}, Python {sys.version.split()[0]}; each call runs in its own "
        "Python process.\n  TF_ENABLE_ONEDNN_OPTS=1: TensorFlow's oneDNN kernels, its default "
        "on Linux x86-64 CPUs with\n  AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX, where these calls "
        "abort the process or return\n  wrong shapes or values.\n"
        f"  'with convfix' = `import convfix.auto` first, config {config}\n"
        f"  ({origin})\n",
        flush=True,
    )
    from convfix.config import resolve_config

    # As the children read it: the file alone (CONVFIX_* are not passed on to them).
    wants = [expected(case, resolve_config(config, env={}).config) for case in CASES]
    outcomes = run_all(CASES, child_env(config, events_path), _progress(sys.stderr.isatty()))
    events = read_events(events_path)
    counted = counted_by_pid(events)
    report = [
        *table(CASES, wants, outcomes, counted, colour),
        "",
        *details(CASES, wants, outcomes, counted),
    ]
    print("\n".join([*report, "", *summarize_events(events_path, events), ""]))
    wrong = [
        f"{case.name}: {why}"
        for i, case in enumerate(CASES)
        if (why := mismatch(case, wants[i], outcomes[i, False], outcomes[i, True])) is not None
    ]
    for line in wrong:
        print(f"NOT AS EXPECTED with convfix: {line}")
    if not wrong:
        print("Every call with convfix ended as expected.")
    return 1 if wrong else 0
