"""``convfix report``'s reading and counting, on event files written by hand (no TensorFlow)."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from convfix.cli import report
from convfix.cli._report_read import read_files
from convfix.cli._report_tally import Filters, Row, Tally, parse_time, tally
from convfix.cli.main import main

KEY = {"callsite": "train.py:12", "layer": None, "policy": "dtype", "reason": "dtype_mismatch"}


def intervention(ts: str = "2026-11-25T07:00:00Z", **extra: Any) -> dict[str, Any]:
    return {
        "timestamp": ts,
        "event": "convfix.intervention",
        "op": "conv2d",
        "action": "cast_filter",
        **KEY,
        **extra,
    }


def summary(pid: int, count: int, ts: str = "2026-11-25T07:01:00Z", **extra: Any) -> dict[str, Any]:
    entry = {**KEY, "event": "convfix.intervention", "op": "conv2d", "count": count, **extra}
    return {"timestamp": ts, "event": "convfix.summary", "pid": pid, "counts": [entry]}


def write(path: Path, *events: dict[str, Any] | str) -> str:
    lines = [e if isinstance(e, str) else json.dumps(e) for e in events]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def counted(*names: str, filters: Filters | None = None) -> Tally:
    return tally(read_files(names).events, filters or Filters())


def only_row(result: Tally) -> Row:
    assert len(result.rows) == 1, result.rows
    return result.rows[0]


def test_the_last_summary_of_each_process_counts_and_processes_add_up(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", intervention(), summary(1, 3), summary(1, 7))
    b = write(tmp_path / "b.jsonl", intervention(), summary(2, 5))

    assert only_row(counted(a, b)).count == 7 + 5


def test_the_same_pid_in_two_files_is_two_processes(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", intervention(), summary(1, 4))
    b = write(tmp_path / "b.jsonl", intervention(), summary(1, 6))

    assert only_row(counted(a, b)).count == 10


def test_a_process_killed_before_its_summary_counts_its_line_once(tmp_path: Path) -> None:
    killed = write(tmp_path / "killed.jsonl", intervention())

    assert only_row(counted(killed)).count == 1


def test_two_processes_in_one_file_one_killed(tmp_path: Path) -> None:
    shared = write(tmp_path / "shared.jsonl", intervention(), intervention(), summary(1, 9))

    assert only_row(counted(shared)).count == 9 + 1


def test_since_subtracts_the_summary_before_it(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl",
        intervention("2026-11-25T07:00:00Z"),
        summary(1, 4, "2026-11-25T07:01:00Z"),
        summary(1, 10, "2026-11-25T08:01:00Z"),
    )
    since = parse_time("2026-11-25T08:00:00Z")

    assert only_row(counted(path, filters=Filters(since=since))).count == 6


def test_elapsed_ms_is_summed_where_present(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", intervention(), summary(1, 2, elapsed_ms=1.5))
    b = write(tmp_path / "b.jsonl", intervention(elapsed_ms=2.0))

    assert only_row(counted(a, b)).elapsed_ms == pytest.approx(3.5)


def test_a_row_without_time_shows_a_dash(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", intervention(), summary(1, 2))

    lines = report.as_text(read_files([path]), counted(path), Filters(), colour=False)

    row = next(line for line in lines if "dtype_mismatch" in line)
    assert re.search(r"\s2\s+-$", row), row


def test_refusals_and_warnings_get_their_own_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl",
        {**intervention(), "event": "convfix.refused", "policy": "batch_dim", "reason": "x"},
        {**intervention(), "event": "convfix.warning"},
    )

    events = [row.key[0] for row in counted(path).rows]

    assert sorted(events) == ["convfix.refused", "convfix.warning"]


def test_filters_by_policy_and_event(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl",
        intervention(),
        {**intervention(), "policy": "padding", "reason": "valid_too_small"},
        {**intervention(), "event": "convfix.warning"},
    )

    by_policy = counted(path, filters=Filters(policies={"padding"}))
    by_event = counted(path, filters=Filters(events={"convfix.warning"}))

    assert [row.key[1] for row in by_policy.rows] == ["padding"]
    assert [row.key[0] for row in by_event.rows] == ["convfix.warning"]


def test_identical_notices_are_counted_together(tmp_path: Path) -> None:
    error = {"event": "convfix.internal_error", "stage": "patch", "error_type": "RuntimeError"}
    path = write(tmp_path / "a.jsonl", error, error, {"event": "convfix.unsupported"})

    notices = {n.event: n.count for n in counted(path).notices}

    assert notices == {"convfix.internal_error": 2, "convfix.unsupported": 1}


def test_garbage_lines_are_counted_and_named(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl",
        "not json",
        intervention(),
        "[1, 2]",
        '{"no": "event"}',
        "",
        json.dumps({"event": "convfix.summary", "pid": 1, "counts": "lots"}),
    )

    reading = read_files([path])

    assert reading.unreadable == [f"{path}:1", f"{path}:3", f"{path}:4", f"{path}:6"]
    assert len(reading.events) == 1


def test_gzip_files_and_stdin_are_read(tmp_path: Path) -> None:
    plain = write(tmp_path / "a.jsonl", intervention(), summary(1, 3))
    packed = tmp_path / "a.jsonl.gz"
    packed.write_bytes(gzip.compress(Path(plain).read_bytes()))

    from_gz = read_files([str(packed)])
    from_stdin = read_files(["-"], stdin=io.BytesIO(packed.read_bytes()))

    assert len(from_gz.events) == len(from_stdin.events) == 2


def test_a_cut_gzip_stream_keeps_the_lines_before_the_cut(tmp_path: Path) -> None:
    lines = "".join(json.dumps(intervention()) + "\n" for _ in range(2000)).encode()
    packed = tmp_path / "cut.jsonl.gz"
    packed.write_bytes(gzip.compress(lines)[:-200])

    reading = read_files([str(packed)])

    assert reading.read == [str(packed)] and reading.truncated
    assert 0 < len(reading.events) < 2000


def test_a_missing_file_is_named_and_the_others_still_read(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", intervention())

    reading = read_files([str(tmp_path / "missing.jsonl"), path])

    assert [name for name, _ in reading.failed] == [str(tmp_path / "missing.jsonl")]
    assert reading.read == [path]


def test_an_empty_file_reports_no_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.touch()

    assert main(["report", str(empty)]) == 0
    assert "no events" in capsys.readouterr().out


def test_exit_status_is_1_when_no_file_could_be_opened(tmp_path: Path) -> None:
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 1


def test_a_bad_since_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--since", "yesterday", "x.jsonl"])

    assert exit_.value.code == 2
    assert "ISO 8601" in capsys.readouterr().err


def test_json_output_holds_the_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "a.jsonl", intervention(), summary(1, 3), "garbage")

    assert main(["report", "--json", path]) == 0
    document = json.loads(capsys.readouterr().out)

    assert document["rows"][0]["count"] == 3
    assert document["unreadable_lines"] == {"count": 1, "where": [f"{path}:3"]}


def test_replicas_of_one_process_add_up_in_one_row(tmp_path: Path) -> None:
    # tf.distribute: each replica writes its own first line and summary entry
    lines = [intervention(replica=0), intervention(replica=1)]
    entries = [
        {**KEY, "event": "convfix.intervention", "op": "conv2d", "count": 5, "replica": r}
        for r in (0, 1)
    ]
    done = {"timestamp": "2026-11-25T07:01:00Z", "event": "convfix.summary", "pid": 1}
    path = write(tmp_path / "r.jsonl", *lines, {**done, "counts": entries})

    assert only_row(counted(path)).count == 10
