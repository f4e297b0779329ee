"""Which names ``convfix report --policy`` and ``--event`` accept.

A typo must not read as "nothing happened": a name that is neither one convfix knows nor
one seen in the files being read is a usage error that lists the valid names. Names seen
in the files count, so files written by a newer convfix (a new policy, a new event) still
filter with an older ``convfix report``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from convfix.cli._report_read import Event
from convfix.cli._report_tally import FOLDED, PATCHED, SUMMARY
from convfix.config import POLICY_NAMES

KNOWN_POLICIES = (*POLICY_NAMES, "guard")
"""Every owner an event can name: the policies, and the guard (its own answers)."""
KNOWN_EVENTS = (*FOLDED, "convfix.internal_error", "convfix.unsupported")
"""Events the report shows as rows or notices. Summaries and patched events are not
filterable: they are what the counts and the header line are made of."""
_UNSHOWN = frozenset((SUMMARY, PATCHED))


def unknown_filter(
    policies: Collection[str], names: Collection[str], events: Iterable[Event]
) -> str | None:
    """The usage error for the first unknown name in ``policies`` or ``names`` (``--event``
    values, already given their ``convfix.`` prefix), or None when all are valid."""
    seen_policies: set[str] = set()
    seen_events: set[str] = set()
    for event in events:
        seen_events.add(event.name)
        _add_policy(seen_policies, event.data.get("policy"))
        if event.name == SUMMARY:
            for entry in event.data["counts"]:
                _add_policy(seen_policies, entry.get("policy"))
    valid_policies = sorted({*KNOWN_POLICIES, *seen_policies})
    for policy in policies:
        if policy not in valid_policies:
            return f"argument --policy: unknown policy {policy!r} " + _choices(valid_policies)
    valid_events = sorted({*KNOWN_EVENTS, *seen_events} - _UNSHOWN)
    for name in names:
        if name not in valid_events:
            return f"argument --event: unknown event {name!r} " + _choices(valid_events)
    return None


def _add_policy(seen: set[str], value: object) -> None:
    if isinstance(value, str) and value:
        seen.add(value)


def _choices(names: list[str]) -> str:
    # Short names where convfix's own: what --event accepts and what people type.
    shown = [name.removeprefix("convfix.") for name in names]
    return f"(choose from {', '.join(shown)})"
