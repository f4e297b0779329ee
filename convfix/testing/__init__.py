"""Helpers for testing code that uses convfix.

Sections: events (``capture_events``), devices (``small_device``: a simulated small GPU
whose convolutions run out of memory or fail in cuDNN, on a CPU-only machine).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from convfix import events
from convfix.events import sinks as _sink
from convfix.testing.simulated_device import SmallDevice, small_device

__all__ = ["SmallDevice", "capture_events", "reset", "small_device"]

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


# -- devices --------------------------------------------------------------------------
# small_device and SmallDevice live in convfix.testing.simulated_device (imported above), which
# imports TensorFlow only when a block is entered, so this module stays light.


# -- state ----------------------------------------------------------------------------


def reset() -> None:
    """Forget what convfix learned and counted in this process: remembered repairs,
    chunk sizes and fallback devices learned from out-of-memory or cuDNN failures, and
    event counts. The next call of each kind is handled as if it were the first."""
    events.reset()
    if "convfix.memory" not in sys.modules:
        return  # nothing was remembered, and nothing need be imported to say so
    from convfix.memory import MEMORY

    MEMORY.clear()
