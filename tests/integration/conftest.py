"""Integration tests run real TensorFlow with convfix patched in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import convfix
from convfix import events
from convfix.integrations.entry import MARK

tf = pytest.importorskip("tensorflow")


@pytest.fixture(autouse=True, scope="session")
def _patched() -> Iterator[None]:
    convfix.patch()
    yield
    convfix.unpatch()


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    events.reset()
    yield
    events.reset()


@pytest.fixture
def forget_learned() -> Iterator[None]:
    """The test starts with nothing learned: no chunk sizes, devices or repairs."""
    from convfix.testing import reset

    reset()
    yield
    reset()


@pytest.fixture
def simulated_gpu() -> Iterator[None]:
    """The test runs under ``tf.device("/GPU:0")``: on this CPU-only machine ops still run
    (soft placement, on the CPU) while TensorFlow names GPU:0 as their device, so a
    ``small_device`` there is a small GPU (split_batch leaves the CPU's own OOMs alone)."""
    with tf.device("/GPU:0"):
        yield


def unpatched(function: Callable[..., Any]) -> Callable[..., Any]:
    """TensorFlow's own function behind a convfix wrapper."""
    return getattr(function, MARK, function)
