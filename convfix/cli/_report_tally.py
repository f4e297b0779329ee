"""Add up convfix events into the rows of ``convfix report``.

How calls are counted
---------------------
convfix writes an intervention, warning or refusal in full only the first time a process
sees its key (callsite, layer, policy, reason); repeats are counted, and every
``convfix.summary`` event carries the *cumulative* count of every key of its process, the
first occurrence included. So, for each key:

1. per process, that is per (file, ``pid`` of the summary), only the **last** summary counts
   (an earlier one is contained in it); those last counts are **summed** over processes and
   files;
2. a process killed before it wrote any summary left only its full lines. Each process
   writes one full line per key, and each process with a summary covers every key it saw,
   so a key's full lines beyond the number of summarised processes that saw it are
   processes without a summary: each adds **one** call (the one we know of).

With ``--since``, a process's last summary before that time is its baseline: the calls
counted are the last count minus the baseline's, and only lines at or after that time
count (an event without a readable timestamp is left out). This is exact for the counts
and approximate only for a killed process whose first line fell before the cut.

Time spent is the sum of an ``elapsed_ms`` field where events carry one (a summary entry's
is cumulative like its count); a row without any shows no time. Other events (internal
errors, unsupported notices, anything unknown) are written every time, so they are counted
line by line, grouped by what they say.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from convfix.cli._report_read import Event

SUMMARY = "convfix.summary"
PATCHED = "convfix.patched"
FOLDED = ("convfix.intervention", "convfix.refused", "convfix.warning")
"""Events written once per key and process, then counted in summaries."""
TIME_FIELD = "elapsed_ms"

Key = tuple[str, str, str, str, str, str, str]
"""(event, policy, reason, op, callsite, layer, replica): what convfix folds by. Rows of the
report merge the replicas of one key (each tf.distribute replica writes its own line)."""


@dataclass(frozen=True)
class Filters:
    """What the user asked to see; empty means everything."""

    policies: Collection[str] = ()
    events: Collection[str] = ()
    since: datetime | None = None


@dataclass
class Row:
    """One key's calls: how many, how long, and which actions repaired them."""

    key: Key
    count: int = 0
    elapsed_ms: float | None = None
    actions: set[str] = field(default_factory=set)

    def add_time(self, value: object) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.elapsed_ms = (self.elapsed_ms or 0.0) + float(value)


@dataclass
class Notice:
    """Identical one-off events (internal errors, unsupported notices), counted."""

    event: str
    text: str
    count: int = 0
    where: list[str] = field(default_factory=list)


@dataclass
class Tally:
    """The whole report, before it is printed as text or JSON."""

    rows: list[Row]
    notices: list[Notice]
    events: int
    processes: int
    """(file, pid) pairs that wrote at least one summary."""
    patched: int
    ended: int = 0
    """Of those, the ones whose last summary is the final one, written at exit: every
    process in which convfix was active writes one, ``total: 0`` included."""


def tally(events: Iterable[Event], filters: Filters | None = None) -> Tally:
    """Count ``events`` (in file order) by the rule in the module docstring."""
    filters = filters or Filters()
    last: dict[tuple[str, int], Event] = {}
    baseline: dict[tuple[str, int], Event] = {}
    lines: dict[Key, list[Event]] = defaultdict(list)
    actions: dict[Key, set[str]] = defaultdict(set)
    notices: dict[tuple[str, str], Notice] = {}
    total = patched = 0
    for event in events:
        total += 1
        name = event.name
        if name == SUMMARY:
            target = last if _after(event, filters.since) else baseline
            target[event.source, event.data["pid"]] = event
        elif name in FOLDED:
            key = _key(name, event.data)
            actions[key].add(str(event.data.get("action") or "-"))
            if _after(event, filters.since):
                lines[key].append(event)
        elif not _after(event, filters.since):
            continue
        elif name == PATCHED:
            patched += 1  # one per process: how many processes the files cover
        else:
            _notice(notices, event)
    rows = _merge_replicas(_rows(last, baseline, lines), actions)
    kept = [row for row in rows.values() if _wanted(row.key[0], row.key[1], filters)]
    kept.sort(key=lambda row: (FOLDED.index(row.key[0]), -row.count, row.key))
    shown = [n for n in notices.values() if _wanted(n.event, None, filters)]
    ended = sum(1 for summary in last.values() if summary.data.get("final") is True)
    return Tally(kept, shown, total, len(last), patched, ended)


def _merge_replicas(rows: Mapping[Key, Row], actions: Mapping[Key, set[str]]) -> dict[Key, Row]:
    merged: dict[Key, Row] = {}
    for key, row in rows.items():
        shown = (*key[:6], "-")
        target = merged.setdefault(shown, Row(shown))
        target.count += row.count
        if row.elapsed_ms is not None:
            target.add_time(row.elapsed_ms)
        target.actions |= actions.get(key, set())
    for row in merged.values():
        row.actions = row.actions or {"-"}
    return merged


def _rows(
    last: Mapping[tuple[str, int], Event],
    baseline: Mapping[tuple[str, int], Event],
    lines: Mapping[Key, list[Event]],
) -> dict[Key, Row]:
    rows: dict[Key, Row] = {}
    summarised: Counter[Key] = Counter()  # processes whose summary first shows the key
    for process, summary in last.items():
        before = _entries(baseline[process]) if process in baseline else {}
        for key, entry in _entries(summary).items():
            row = rows.setdefault(key, Row(key))
            earlier = before.get(key, {})
            row.count += max(0, entry["count"] - earlier.get("count", 0))
            elapsed = entry.get(TIME_FIELD)
            if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool):
                row.add_time(elapsed - _number(earlier.get(TIME_FIELD)))
            if key not in before:
                summarised[key] += 1
    for key, seen in lines.items():
        # Lines beyond the summarised processes are processes that died before a summary.
        for event in seen[summarised[key] :]:
            row = rows.setdefault(key, Row(key))
            row.count += 1
            row.add_time(event.data.get(TIME_FIELD))
    return rows


def _entries(summary: Event) -> dict[Key, dict[str, Any]]:
    entries: dict[Key, dict[str, Any]] = {}
    for entry in summary.data["counts"]:
        name = str(entry.get("event") or "convfix.intervention")
        if name in FOLDED:
            entries[_key(name, entry)] = entry
    return entries


def _key(name: str, data: Mapping[str, Any]) -> Key:
    def text(field: str) -> str:
        value = data.get(field)
        return "-" if value is None else str(value)

    return (
        name,
        text("policy"),
        text("reason"),
        text("op"),
        text("callsite"),
        text("layer"),
        text("replica"),
    )


def _notice(notices: dict[tuple[str, str], Notice], event: Event) -> None:
    data = event.data
    # Group by what the event says, not when: the same failure in 8 workers is one row.
    parts = [str(data[f]) for f in ("component", "stage", "error_type") if data.get(f)]
    message = data.get("message") or data.get("error")
    if message:
        parts.append(str(message))
    text = ", ".join(parts) or "-"
    notice = notices.setdefault((event.name, text), Notice(event.name, text))
    notice.count += 1
    notice.where.append(event.where)


def _wanted(name: str, policy: str | None, filters: Filters) -> bool:
    if filters.events and name not in filters.events:
        return False
    return not filters.policies or policy in filters.policies


def _after(event: Event, since: datetime | None) -> bool:
    if since is None:
        return True
    stamp = parse_time(event.data.get("timestamp"))
    return stamp is not None and stamp >= since


def _number(value: object) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else 0.0  # type: ignore[arg-type]


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime; naive times are taken as UTC."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"  # fromisoformat reads "Z" only from Python 3.11
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.astimezone(timezone.utc)
