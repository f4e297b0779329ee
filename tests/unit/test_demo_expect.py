"""The demo's expectations follow the configuration's modes, and its events summary counts
repairs and refusals apart (issue 16, item 4). No TensorFlow: outcomes are made by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from convfix.cli.demo.cases import CASES, DemoCase, Outcome
from convfix.cli.demo.events_file import counted_by_pid, said, summarize_events
from convfix.cli.demo.expect import REFUSED, REPAIRED, TENSORFLOW, expected, mismatch
from convfix.config import Config, resolve_config

PRESETS = Path(__file__).resolve().parents[2] / "convfix" / "presets"
REFUSAL = Outcome("error", "ConvFixError", message="convfix (strict) stopped conv2d", pid=7)


def preset(name: str) -> Config:
    return resolve_config(PRESETS / f"{name}.toml", env={}).config


def case(name: str) -> DemoCase:
    return next(c for c in CASES if c.name == name)


@pytest.mark.parametrize("found", CASES, ids=lambda c: c.name)
def test_under_strict_every_bad_call_is_expected_to_be_refused(found: DemoCase) -> None:
    want = expected(found, preset("strict"))

    assert want.outcome == (TENSORFLOW if found.owner is None else REFUSED)


def test_a_refusal_under_strict_is_as_expected_and_a_repair_is_not() -> None:
    dtype = case("dtype mismatch")
    without = Outcome("error", "InvalidArgumentError", message="cannot compute Conv2D")
    want = expected(dtype, preset("strict"))

    assert mismatch(dtype, want, without, REFUSAL) is None
    repaired = Outcome("ok", "float32", (1, 8, 8, 4), digest="d")
    assert mismatch(dtype, want, without, repaired) == (
        "expected a refusal (dtype runs in strict mode), got ok float32"
    )


def test_observe_expects_tensorflows_own_error_where_tensorflow_answers_safely() -> None:
    without = Outcome("error", "InvalidArgumentError", message="cannot compute Conv2D")
    dtype = case("dtype mismatch")
    want = expected(dtype, preset("observe"))

    assert want.outcome == TENSORFLOW
    assert mismatch(dtype, want, without, without) is None
    assert expected(case("missing batch dimension"), preset("observe")).outcome == REFUSED


def test_fix_mode_expectations_follow_the_policies_settings(tmp_path: Path) -> None:
    # given the default settings, and ones that promote dtypes and pad by switching to SAME
    default = preset("default")
    toml = '[policies.dtype]\ntarget = "promote"\n[policies.padding]\nstrategy = "same"\n'
    (tmp_path / "convfix.toml").write_text(toml, encoding="utf-8")
    other = resolve_config(tmp_path / "convfix.toml", env={}).config
    dtype, padding = case("dtype mismatch"), case("input smaller than kernel")
    # then the repaired dtype and shape follow them
    assert (expected(dtype, other).outcome, expected(dtype, other).detail) == (REPAIRED, "float64")
    assert expected(padding, other).shape == (1, 2, 2, 4)
    assert expected(padding, default).shape == (
        (1, 2, 2, 4) if default.policies.padding.strategy == "same" else (1, 1, 1, 4)
    )


def test_the_summary_counts_repairs_and_refusals_apart(tmp_path: Path) -> None:
    # given one child that repaired a batch_dim call and one that refused another
    events = [
        _line("convfix.intervention", 1, "missing_batch_dim", action="add_batch_dim"),
        _final(1, "convfix.intervention"),
        _line("convfix.refused", 2, "missing_batch_dim", action="refuse"),
        _final(2, "convfix.refused"),
    ]
    # when they are summarised
    lines = summarize_events(tmp_path / "ev.jsonl", events)
    counted = counted_by_pid(events)
    # then each is called what it was
    assert "  1 repair logged (convfix.intervention):" in lines
    assert "  1 refusal logged (convfix.refused):" in lines
    assert "    repaired batch_dim/missing_batch_dim x1" in lines
    assert "    refused batch_dim/missing_batch_dim x1" in lines
    assert said(counted[2]) == "refused (batch_dim/missing_batch_dim)"


def _line(event: str, pid: int, reason: str, **extra: Any) -> dict[str, Any]:
    return {"event": event, "pid": pid, "policy": "batch_dim", "reason": reason, **extra}


def _final(pid: int, event: str) -> dict[str, Any]:
    entry = {"event": event, "policy": "batch_dim", "reason": "missing_batch_dim", "count": 1}
    return {"event": "convfix.summary", "pid": pid, "final": True, "counts": [entry]}
