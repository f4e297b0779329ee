"""``python -m convfix.cli.demo`` as a first-time user runs it: piped, in a directory whose own
convfix.toml is broken (the demo must not read it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from convfix.cli.demo.cases import CASES

pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def strict_demo(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """``convfix demo --config strict.toml``, the strict preset as a user's file."""
    cwd = tmp_path_factory.mktemp("demo-strict")
    (cwd / "strict.toml").write_text('extends = "strict"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVFIX_")}
    return subprocess.run(
        [sys.executable, "-m", "convfix", "demo", "--config", "strict.toml"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    cwd = tmp_path_factory.mktemp("demo-cwd")
    (cwd / "convfix.toml").write_text('mode = "sometimes"\n[events\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVFIX_")}
    env.pop("NO_COLOR", None)  # no colour must come from the pipe alone
    return subprocess.run(
        [sys.executable, "-m", "convfix.cli.demo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _without_column(stdout: str, case_name: str) -> str:
    lines = stdout.splitlines()
    head = next(line for line in lines if line.startswith("class "))
    row = next(line for line in lines if line.startswith(case_name + " "))
    return row[head.index("without convfix") : head.index("with convfix")]


def test_demo_exits_zero_despite_a_broken_local_config(
    demo: subprocess.CompletedProcess[str],
) -> None:
    assert demo.returncode == 0, demo.stdout + demo.stderr


def test_every_failure_class_has_a_row(demo: subprocess.CompletedProcess[str]) -> None:
    rows = demo.stdout.splitlines()
    for case in CASES:
        assert any(row.startswith(case.name + " ") for row in rows), case.name


def test_missing_batch_dim_without_convfix_shows_the_abort(
    demo: subprocess.CompletedProcess[str],
) -> None:
    assert "aborted" in _without_column(demo.stdout, "missing batch dimension")


def test_piped_output_has_no_ansi_escapes(demo: subprocess.CompletedProcess[str]) -> None:
    assert "\x1b[" not in demo.stdout
    assert "\x1b[" not in demo.stderr


def test_named_events_file_holds_an_intervention(demo: subprocess.CompletedProcess[str]) -> None:
    match = re.search(r"^Events: (.+) \(one JSON object a line\)$", demo.stdout, re.MULTILINE)
    assert match is not None, demo.stdout
    path = Path(match.group(1))
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert any(event["event"] == "convfix.intervention" for event in events)


def test_under_strict_the_refusals_are_what_is_expected(
    strict_demo: subprocess.CompletedProcess[str],
) -> None:
    out = strict_demo.stdout
    assert strict_demo.returncode == 0, out + strict_demo.stderr
    assert "NOT AS EXPECTED" not in out
    for case in CASES:
        row = next(line for line in out.splitlines() if line.startswith(case.name + " "))
        assert ("refused (ConvFixError)" in row) == (case.owner is not None), row


def test_under_strict_a_refusal_is_called_one_and_counted_apart(
    strict_demo: subprocess.CompletedProcess[str],
) -> None:
    out = strict_demo.stdout
    refusing = sum(case.owner is not None for case in CASES)
    assert "repaired (" not in out
    assert "  0 repairs logged (convfix.intervention)" in out
    assert f"  {refusing} refusals logged (convfix.refused):" in out
    assert "    refused batch_dim/missing_batch_dim x2" in out


def test_every_child_that_patched_tensorflow_ended_with_a_final_summary(
    strict_demo: subprocess.CompletedProcess[str],
) -> None:
    # the healthy call's child repaired and refused nothing: it still leaves a final summary
    n = len(CASES)
    assert f"  {n} processes patched TensorFlow (convfix.patched), {n} ended cleanly" in (
        strict_demo.stdout
    )
