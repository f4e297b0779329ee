"""The demo's events file: what each child's exit summary counted, and the summary printed
under the table, with repairs, refusals and warnings counted apart."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

VERBS = {
    "convfix.intervention": "repaired",
    "convfix.refused": "refused",
    "convfix.warning": "warned about",
}
_LOGGED = (  # (event, what one line of it is, plural)
    ("convfix.intervention", "repair", "repairs"),
    ("convfix.refused", "refusal", "refusals"),
    ("convfix.warning", "warning", "warnings"),
)

Counted = Mapping[int, list[tuple[str, str]]]
"""A child's pid to what its final summary counted: (event, ``policy/reason``)."""


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event in the JSON-lines file at ``path``; none if it does not exist."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            events.append(json.loads(line))
        except ValueError:  # a child killed mid-line: the other lines still count
            continue
    return events


def counted_by_pid(events: list[dict[str, Any]]) -> Counted:
    """What each process's final ``convfix.summary`` counted."""
    counted: defaultdict[int, list[tuple[str, str]]] = defaultdict(list)
    for event in _finals(events):
        for entry in event["counts"]:
            name = str(entry.get("event") or "convfix.intervention")
            counted[event["pid"]].append((name, f"{entry['policy']}/{entry['reason']}"))
    return counted


def said(counted: list[tuple[str, str]]) -> str:
    """``refused (batch_dim/missing_batch_dim)``, one clause per kind of event."""
    by_verb: defaultdict[str, list[str]] = defaultdict(list)
    for name, what in counted:
        by_verb[VERBS.get(name, name)].append(what)
    return ", ".join(f"{verb} ({', '.join(whats)})" for verb, whats in by_verb.items())


def summarize_events(path: Path, events: list[dict[str, Any]]) -> list[str]:
    """What the children wrote to the events file, counted by kind."""
    names = Counter(str(event["event"]) for event in events)
    lines = [
        f"Events: {path} (one JSON object a line)",
        f"  {names['convfix.patched']} processes patched TensorFlow (convfix.patched), "
        f"{len(list(_finals(events)))} ended cleanly (a final convfix.summary)",
    ]
    for name, one, many in _LOGGED:
        logged = Counter(
            f"{e['policy']}/{e['reason']} ({e['action']})" for e in events if e["event"] == name
        )
        count = sum(logged.values())
        head = f"  {count} {one if count == 1 else many} logged ({name})"
        lines += [
            head + (":" if logged else ""),
            *(f"    {k} x{n}" for k, n in sorted(logged.items())),
        ]
    calls: Counter[str] = Counter()  # the exit summaries count every call, repeats too
    for event in _finals(events):
        for entry in event["counts"]:
            verb = VERBS.get(str(entry.get("event")), str(entry.get("event")))
            calls[f"{verb} {entry['policy']}/{entry['reason']}"] += entry["count"]
    lines.append(
        "  calls counted by the exit summaries (convfix.summary)" + (":" if calls else ": none")
    )
    lines += [f"    {kind} x{n}" for kind, n in sorted(calls.items())]
    if names["convfix.internal_error"]:
        lines.append(f"  and {names['convfix.internal_error']} convfix.internal_error events!")
    return lines


def _finals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "convfix.summary" and e.get("final")]
