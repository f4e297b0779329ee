"""Helpers for testing code that uses convfix.

Sections: events (``capture_events``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from convfix import _sink, events

__all__ = ["capture_events"]

# -- events ---------------------------------------------------------------------------


@contextmanager
def capture_events() -> Iterator[list[dict[str, Any]]]:
    """Collect every event dict convfix writes, instead of writing it, inside the block.

    The dicts are what would have been written: repeats already folded, timestamped,
    values made JSON-safe. Thread-safe and nestable: the innermost block receives the
    events, and leaving it restores the previous sink. structlog's ``capture_logs`` cannot
    see convfix's private logger, hence this.

        with capture_events() as captured:
            tf.nn.conv2d(...)
        assert captured[0]["event"] == "convfix.intervention"
    """
    captured: list[dict[str, Any]] = []
    sink = _sink.CaptureSink(captured)
    events._push_sink(sink)
    try:
        yield captured
    finally:
        events._pop_sink(sink)
