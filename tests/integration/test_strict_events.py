"""Strict mode logs every problem it names: one ``convfix.refused`` event per problem, so
that ``convfix report`` counts each (a call with two problems is two refusals)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf

import convfix
from convfix import ConvFixError, events
from convfix.cli.main import main
from convfix.testing import capture_events

X64 = tf.ones([1, 5, 5, 3], tf.float64)
K32 = tf.ones([3, 3, 3, 2])
TWO_PROBLEMS = ["dtype_mismatch", "padding_case"]


def two_problems(x: Any) -> Any:
    """A float64 input with a float32 filter, and padding in lower case."""
    return tf.nn.conv2d(x, K32, 1, "same")


CALLERS: dict[str, Callable[[Any], Any]] = {
    "eager": two_problems,
    "traced": tf.function(two_problems),
}


def _refused(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in captured if e["event"] == events.REFUSED]


@pytest.mark.parametrize("how", CALLERS)
def test_strict_writes_one_refusal_event_per_problem_it_names(how: str) -> None:
    # given strict mode and a call with two problems
    with (
        convfix.override(mode="strict"),
        capture_events() as captured,
        pytest.raises(ConvFixError) as raised,
    ):
        # when it is made
        CALLERS[how](X64)
    # then one error names both problems, and each has its own refusal event
    assert "2 problem(s)" in str(raised.value)
    refused = sorted(_refused(captured), key=lambda e: e["reason"])
    assert [e["reason"] for e in refused] == TWO_PROBLEMS
    assert [e["policy"] for e in refused] == ["dtype", "padding"]
    assert all(e["reason"] in str(raised.value) for e in refused)
    assert {(e["mode"], e["action"], e["graph"]) for e in refused} == {
        ("strict", "refuse", how == "traced")
    }
    # at the one callsite the error names
    assert {e["callsite"] for e in refused} == {raised.value.callsite}


def test_report_counts_each_problem_of_each_strict_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given the events of three strict refusals of one call with two problems
    with capture_events() as captured, convfix.override(mode="strict"):
        for _ in range(3):
            with pytest.raises(ConvFixError):
                two_problems(X64)
        events.write_summary()
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in captured), encoding="utf-8")
    # when convfix report reads them
    assert main(["report", "--json", str(log)]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    # then each problem is a row of refusals, counted for every call
    counted = sorted((r["reason"], r["event"], r["count"]) for r in rows)
    assert counted == [(reason, events.REFUSED, 3) for reason in TWO_PROBLEMS]
