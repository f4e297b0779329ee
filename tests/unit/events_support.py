"""What the events tests share: settings that stand in for EventsConfig, and a clean slate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import pytest

from convfix import events


@dataclass(frozen=True)
class Settings:
    """Stands in for convfix.config.EventsConfig; no periodic summary unless asked."""

    path: str = "stderr"
    format: Literal["json", "console"] = "json"
    sink: Literal["convfix", "logging", "structlog"] = "convfix"
    summary_interval: float = 0.0


@pytest.fixture(autouse=True)
def fresh_events() -> Iterator[None]:
    events.reset()
    yield
    events.configure(Settings())  # closes any file a test opened, stops its timer
    events.reset()
