"""``convfix report FILE...``: what convfix did, from the event files it wrote.

Reads any number of JSON-lines event files (one per worker process with ``{pid}`` in
``events.path``; gzip too; ``-`` for stdin) and prints interventions by policy, op and
callsite with their call counts and time spent, then refusals, warnings, internal errors
and unsupported notices. How repeats and killed processes are counted is in
:mod:`convfix.cli._report_tally`. Lines that are not events are counted and named, never
fatal; lines convfix wrote with ``events.format = "console"`` are recognised and named as
such, since only JSON lines can be counted reliably (console lines are for people, and
their values are Python reprs). Exit status: 0 when at least one file was read, 1 when none
could be opened, 2 for usage errors (an unknown ``--policy`` or ``--event`` name among
them, see :mod:`convfix.cli._report_filters`). Never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from convfix.cli import _output
from convfix.cli._report_filters import unknown_filter
from convfix.cli._report_read import Reading, read_files
from convfix.cli._report_tally import FOLDED, Filters, Row, Tally, parse_time, tally

_TITLES = {
    "convfix.intervention": "Interventions",
    "convfix.refused": "Refusals",
    "convfix.warning": "Warnings",
    "convfix.internal_error": "Internal errors",
    "convfix.unsupported": "Unsupported notices",
}
_SHOWN_BAD = 10  # unreadable lines named one by one; the rest are counted


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``convfix report``."""
    parser = subparsers.add_parser(
        "report",
        help="summarise convfix event files (JSON lines, .gz, - for stdin)",
        description="Summarise convfix event files: interventions by policy, op and callsite "
        "with call counts and time spent, then refusals, warnings, internal errors and "
        "unsupported notices. Counts come from each process's last convfix.summary, plus one "
        "call per intervention line of a process killed before it wrote one. Reads JSON lines "
        '(events.format = "json"). Exit status: 0 when a file was read, 1 when none could be '
        "opened, 2 for usage errors, among them a --policy or --event name that is neither "
        "known nor seen in the files.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="event file; - reads stdin")
    parser.add_argument("--json", action="store_true", help="one JSON document for machines")
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="NAME",
        help="only this policy (repeat): a known one or one named in the files; leaves out "
        "events without one",
    )
    parser.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="NAME",
        type=_event_name,
        help="only this event, e.g. intervention or convfix.refused (repeat)",
    )
    parser.add_argument(
        "--since", type=_since, metavar="ISO8601", help="only events at or after this time (UTC)"
    )
    # A bad filter name is only known to be bad once the files are read, after argparse.
    parser.set_defaults(report_usage=parser.format_usage())


def main(args: argparse.Namespace) -> int:
    """Run ``convfix report``; returns the exit status."""
    reading = read_files(args.files)
    for name, reason in reading.failed:
        _output.error("report", f"cannot read {name}: {reason}")
    wrong = unknown_filter(args.policy, args.event, reading.events)
    if wrong is not None:
        sys.stderr.write(getattr(args, "report_usage", ""))
        _output.error("report", wrong)
        return 2
    if not reading.read:
        return 1
    filters = Filters(policies=set(args.policy), events=set(args.event), since=args.since)
    result = tally(reading.events, filters)
    if args.json:
        json.dump(as_json(reading, result), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        colour = _output.use_colour(sys.stdout)
        print("\n".join(as_text(reading, result, filters, colour)))
    return 0


def as_text(reading: Reading, result: Tally, filters: Filters, colour: bool) -> list[str]:
    """The report for people: a table per kind of folded event that occurred, the notices,
    one line naming the kinds that did not occur, then the lines that could not be read."""
    lines = [
        f"Read {_plural(len(reading.read), 'file')}: {_plural(result.events, 'event')}; "
        f"{_plural(result.patched, 'process', 'processes')} patched TensorFlow, "
        f"{result.ended} ended cleanly (wrote a final convfix.summary)"
        + (
            f"; {result.patched - result.ended} did not (killed, or still running)."
            if result.patched > result.ended
            else "."
        )
    ]
    if not result.events:
        return [*lines, "no events", *_problems(reading)]
    if not result.rows and not result.notices and _filtered(filters):
        return [*lines, "no events match the filters", *_problems(reading)]
    absent = []
    for name in FOLDED:
        rows = [row for row in result.rows if row.key[0] == name]
        if rows:
            lines += ["", *_section(name, rows, colour)]
        else:
            absent.append(_TITLES[name].lower())
    for name in ("convfix.internal_error", "convfix.unsupported"):
        notices = [n for n in result.notices if n.event == name]
        if notices:
            title = f"{_TITLES[name]} ({name}): {sum(n.count for n in notices)}"
            lines += ["", _output.paint(title, "bold", colour)]
            lines += [f"  {n.count} x {n.text} ({_places(n.where)})" for n in notices]
        else:
            absent.append(_TITLES[name].lower())
    others = [n for n in result.notices if n.event not in _TITLES]
    if others:
        lines += ["", "Other events:"]
        lines += [f"  {n.count} x {n.event}: {n.text} ({_places(n.where)})" for n in others]
    if absent:
        listed = ", ".join(absent[:-1]) + " or " + absent[-1] if len(absent) > 1 else absent[0]
        lines += ["", f"No {listed}."]
    return [*lines, *_problems(reading)]


def _section(name: str, rows: list[Row], colour: bool) -> list[str]:
    title = f"{_TITLES[name]} ({name}): {_plural(sum(row.count for row in rows), 'call')}"
    header = ("policy", "reason", "action", "op", "callsite", "calls", "time")
    body = [
        (
            row.key[1],
            row.key[2],
            ", ".join(sorted(row.actions)),
            row.key[3],
            row.key[4] + (f" [{row.key[5]}]" if row.key[5] != "-" else ""),
            str(row.count),
            _time(row.elapsed_ms),
        )
        for row in rows
    ]
    table = _output.table(header, body, colour=colour, right=(5, 6))
    return [_output.paint(title, "bold", colour), *table]


def _problems(reading: Reading) -> list[str]:
    lines = []
    bad = reading.unreadable
    if bad:
        shown = ", ".join(bad[:_SHOWN_BAD]) + (
            f", ... ({len(bad) - _SHOWN_BAD} more)" if len(bad) > _SHOWN_BAD else ""
        )
        count = len(bad)
        lines.append(f"{count} line{'s' * (count != 1)} could not be read: {shown}")
    lines += [f"{name}: {reason}" for name, reason in reading.truncated]
    lines += [
        f'{name}: {_plural(n, "line")} in console format (events.format = "console"), not '
        'counted: convfix report reads JSON lines (events.format = "json")'
        for name, n in reading.console.items()
    ]
    return ["", *lines] if lines else []


def as_json(reading: Reading, result: Tally) -> dict[str, object]:
    """The report for machines: the same numbers, keyed by name."""
    return {
        "files": reading.read,
        "failed": [{"file": name, "error": reason} for name, reason in reading.failed],
        "truncated": [{"file": name, "error": reason} for name, reason in reading.truncated],
        "unreadable_lines": {"count": len(reading.unreadable), "where": reading.unreadable},
        "console_format_lines": dict(reading.console),
        "events": result.events,
        "processes": result.processes,
        "ended_cleanly": result.ended,
        "patched": result.patched,
        "rows": [
            {
                "event": row.key[0],
                "policy": row.key[1],
                "reason": row.key[2],
                "actions": sorted(row.actions),
                "op": row.key[3],
                "callsite": None if row.key[4] == "-" else row.key[4],
                "layer": None if row.key[5] == "-" else row.key[5],
                "count": row.count,
                "elapsed_ms": row.elapsed_ms,
            }
            for row in result.rows
        ],
        "notices": [
            {"event": n.event, "text": n.text, "count": n.count, "where": n.where}
            for n in result.notices
        ],
    }


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def _places(where: list[str]) -> str:
    return ", ".join(where[:3]) + (f", ... ({len(where) - 3} more)" if len(where) > 3 else "")


def _time(elapsed_ms: float | None) -> str:
    if elapsed_ms is None:
        return "-"
    return f"{elapsed_ms:.1f} ms" if elapsed_ms < 10_000 else f"{elapsed_ms / 1000:.1f} s"


def _filtered(filters: Filters) -> bool:
    return bool(filters.policies or filters.events or filters.since)


def _event_name(text: str) -> str:
    name = text.strip()
    if not name:
        raise argparse.ArgumentTypeError("expected an event name, e.g. intervention")
    return name if "." in name else f"convfix.{name}"


def _since(text: str) -> datetime:
    stamp = parse_time(text)
    if stamp is None:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-11-25T07:00:00Z, got {text!r}"
        )
    return stamp
