"""``convfix report`` where a new user trips: filter typos, console-format logs, and telling
a clean run from one that died (issue 16). No TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from convfix import events
from convfix.cli.main import main
from tests.unit.events_support import Settings, fresh_events  # noqa: F401
from tests.unit.test_report import intervention, summary, write

PATCHED = {"timestamp": "2026-11-25T07:00:00Z", "event": "convfix.patched", "mode": "fix"}


def final(pid: int, count: int = 0) -> dict[str, Any]:
    """The summary a process writes at exit; ``count`` 0: nothing was counted."""
    done = {**summary(pid, count), "total": count, "final": True}
    return {**done, "counts": done["counts"] if count else []}


def test_an_unknown_policy_is_a_usage_error_listing_the_valid_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a file of dtype repairs
    path = write(tmp_path / "ev.jsonl", intervention(), summary(1, 3))
    # when the policy name is mistyped
    status = main(["report", "--policy", "dtpye", path])
    # then it is a usage error naming the typo and every valid policy, and no report
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err.startswith("usage: convfix report")
    assert "argument --policy: unknown policy 'dtpye' (choose from batch_dim, " in err
    assert "dtype, guard, layout, padding, split_batch)" in err


def test_an_unknown_event_is_a_usage_error_listing_the_valid_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "ev.jsonl", intervention())

    status = main(["report", "--event", "bogus", path])

    err = capsys.readouterr().err
    assert status == 2
    assert "argument --event: unknown event 'convfix.bogus' (choose from internal_error, " in err
    assert "intervention, refused, unsupported, warning)" in err


def test_names_seen_in_the_files_filter_though_this_convfix_does_not_know_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a file from a newer convfix: a policy and an event this one has never heard of
    newer = {"timestamp": "2026-11-25T07:00:00Z", "event": "convfix.rehearsal", "message": "x"}
    tiling = (intervention(policy="tiling"), summary(1, 2, policy="tiling"))
    path = write(tmp_path / "ev.jsonl", *tiling, newer)
    # when filtering by them
    by_policy = main(["report", "--policy", "tiling", path])
    by_event = main(["report", "--event", "rehearsal", path])
    # then both are accepted and show what they name
    out = capsys.readouterr().out
    assert (by_policy, by_event) == (0, 0)
    assert "tiling" in out
    assert "1 x convfix.rehearsal: x" in out


def test_a_console_format_file_is_named_as_such_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a file convfix wrote with events.format = "console"
    path = tmp_path / "ev.log"
    events.configure(Settings(path=str(path), format="console"))
    for _ in range(2):
        events.record(events.INTERVENTION, policy="dtype", op="conv2d", action="cast_filter",
                      mode="fix", reason="dtype_mismatch", before={"input": "float64"},
                      after={"input": "float32"}, graph=False, callsite="train.py:3")  # fmt: skip
    events.write_summary()
    events.configure(Settings())  # closes the file
    # when it is reported on
    status = main(["report", str(path)])
    # then one line says what the file is and what report reads, instead of line numbers
    out = capsys.readouterr().out
    assert status == 0
    assert "could not be read" not in out
    hints = [line for line in out.splitlines() if "console format" in line]
    assert hints == [
        f'{path}: 2 lines in console format (events.format = "console"), not counted: '
        'convfix report reads JSON lines (events.format = "json")'
    ]


def test_report_counts_the_processes_that_ended_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given three processes: one clean run with no intervention (a final summary, total 0),
    # one that repaired and ended cleanly, one killed after its periodic summary
    clean = write(tmp_path / "a.jsonl", PATCHED, final(1))
    repaired = write(tmp_path / "b.jsonl", PATCHED, intervention(), final(2, 4))
    killed = write(tmp_path / "c.jsonl", PATCHED, intervention(), {**summary(3, 1), "final": False})
    # when reported on together, as text and as JSON
    text_status = main(["report", clean, repaired, killed])
    text = capsys.readouterr().out
    json_status = main(["report", "--json", clean, repaired, killed])
    document = json.loads(capsys.readouterr().out)
    # then two ended cleanly and one did not
    assert (text_status, json_status) == (0, 0)
    assert "3 processes patched TensorFlow, 2 ended cleanly" in text
    assert "1 did not (killed, or still running)" in text
    assert (document["ended_cleanly"], document["processes"]) == (2, 3)
