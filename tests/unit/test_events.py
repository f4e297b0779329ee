"""convfix.events: the event schema, the sinks, repeat folding and summaries."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import convfix
from convfix import events
from convfix.testing import capture_events
from tests.unit.events_support import Settings, fresh_events  # noqa: F401

REQUIRED_KEYS = {
    "schema_version",
    "event",
    "policy",
    "op",
    "action",
    "mode",
    "reason",
    "before",
    "after",
    "callsite",
    "layer",
    "graph",
    "timestamp",
    "level",
}
REPO_ROOT = Path(convfix.__file__).resolve().parent.parent


def intervention(**overrides: Any) -> None:
    fields: dict[str, Any] = {
        "policy": "dtype",
        "op": "conv2d",
        "action": "cast_filter",
        "mode": "repair",
        "reason": "dtype_mismatch",
        "before": {"input": "float64", "filter": "float32", "shape": [None, 8, 8, 3]},
        "after": {"input": "float64", "filter": "float64", "shape": [None, 8, 8, 3]},
        "graph": False,
        "layer": "conv1",
        "callsite": "train.py:12",
    }
    fields.update(overrides)
    events.record(events.INTERVENTION, **fields)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class SummarySignal(logging.Handler):
    """A logging handler that lets a test wait for the next summary event."""

    def __init__(self) -> None:
        super().__init__()
        self.summaries: list[dict[str, Any]] = []
        self.arrived = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        event = record.__dict__["convfix"]
        if event["event"] == events.SUMMARY:
            self.summaries.append(event)
            self.arrived.set()


@pytest.fixture
def convfix_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("convfix")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


# -- schema ---------------------------------------------------------------------------


def test_intervention_event_carries_every_schema_key() -> None:
    # given a capture in place of the sink
    with capture_events() as captured:
        # when one intervention is recorded
        intervention()
    # then the event has every key of schema version 1
    (event,) = captured
    assert event.keys() >= REQUIRED_KEYS
    assert event["schema_version"] == events.SCHEMA_VERSION == 1
    assert event["event"] == events.INTERVENTION
    assert event["before"]["shape"] == [None, 8, 8, 3]


def test_timestamp_is_iso8601_utc_with_microseconds() -> None:
    with capture_events() as captured:
        events.emit(events.PATCHED, tensorflow="2.21.0")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", captured[0]["timestamp"])


def test_record_defaults_callsite_to_the_line_that_called_it() -> None:
    fields: dict[str, Any] = {"policy": "dtype", "op": "conv2d", "action": "cast_filter"}
    fields |= {"mode": "repair", "reason": "dtype_mismatch", "graph": False}
    with capture_events() as captured:
        events.record(events.INTERVENTION, before={}, after={}, **fields)
        line = sys._getframe().f_lineno - 1
    assert captured[0]["callsite"] == f"{__file__}:{line}"


# -- sinks ----------------------------------------------------------------------------


def test_file_sink_writes_one_json_line_per_event_flushed_at_once(tmp_path: Path) -> None:
    # given a JSON file sink
    path = tmp_path / "events.jsonl"
    events.configure(Settings(path=str(path)))
    # when two events are written and the file is read while the sink is still open
    intervention()
    events.emit(events.PATCHED, tensorflow="2.21.0")
    lines = read_lines(path)
    # then each event is already on disk as its own line
    assert [line["event"] for line in lines] == [events.INTERVENTION, events.PATCHED]


def test_file_sink_appends_and_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "run" / "events.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"event": "earlier"}\n')
    events.configure(Settings(path=str(path)))
    events.emit(events.PATCHED)
    assert [line["event"] for line in read_lines(path)] == ["earlier", events.PATCHED]


def test_console_format_renders_a_readable_line(tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    events.configure(Settings(path=str(path), format="console"))
    intervention()
    text = path.read_text()
    assert "convfix.intervention" in text
    assert "policy=dtype" in text
    assert "\x1b[" not in text  # a file is not a tty: no colours


def test_pid_placeholder_is_replaced_by_the_process_id(tmp_path: Path) -> None:
    events.configure(Settings(path=str(tmp_path / "events-{pid}.jsonl")))
    events.emit(events.PATCHED)
    assert (tmp_path / f"events-{os.getpid()}.jsonl").exists()


def test_doubled_braces_in_the_path_are_literal_braces(tmp_path: Path) -> None:
    events.configure(Settings(path=str(tmp_path / "events-{{run}}-{pid}.jsonl")))
    events.emit(events.PATCHED)
    assert (tmp_path / f"events-{{run}}-{os.getpid()}.jsonl").exists()


def test_task_placeholder_is_the_tf_config_task_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps({"task": {"type": "worker", "index": 3}}))
    events.configure(Settings(path=str(tmp_path / "events-{task}.jsonl")))
    events.emit(events.PATCHED)
    assert (tmp_path / "events-3.jsonl").exists()


def test_task_placeholder_is_zero_without_tf_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    events.configure(Settings(path=str(tmp_path / "events-{task}.jsonl")))
    events.emit(events.PATCHED)
    assert (tmp_path / "events-0.jsonl").exists()


def test_logging_sink_reaches_the_convfix_logger_without_touching_root(
    convfix_logger: logging.Logger,
) -> None:
    # given the logging sink and a handler on the "convfix" logger only
    root = logging.getLogger()
    root_before = (list(root.handlers), root.level)
    handler = Recorder()
    convfix_logger.addHandler(handler)
    events.configure(Settings(sink="logging"))
    # when a warning-level event is recorded
    intervention(level="warning")
    # then the convfix logger got it, with level, JSON message and the dict as `convfix`
    (record,) = handler.records
    assert record.levelno == logging.WARNING
    assert json.loads(record.getMessage())["policy"] == "dtype"
    assert record.__dict__["convfix"]["event"] == events.INTERVENTION
    assert (list(root.handlers), root.level) == root_before


def test_structlog_sink_uses_the_applications_structlog_configuration() -> None:
    events.configure(Settings(sink="structlog"))
    with structlog.testing.capture_logs() as logs:  # the application's configuration
        intervention()
    assert logs[0]["event"] == events.INTERVENTION
    assert logs[0]["policy"] == "dtype"


def test_configure_never_configures_structlog(tmp_path: Path) -> None:
    # given structlog in whatever state the application left it
    configured, config = structlog.is_configured(), structlog.get_config()
    # when every sink and format is configured and used
    for settings in (
        Settings(path=str(tmp_path / "a.jsonl")),
        Settings(path=str(tmp_path / "b.log"), format="console"),
        Settings(sink="logging"),
        Settings(sink="structlog"),
    ):
        events.configure(settings)
        intervention(reason=settings.sink + settings.format)
    # then structlog's global configuration is unchanged
    assert structlog.is_configured() == configured
    assert structlog.get_config() == config


def test_full_disk_does_not_raise_and_counts_the_dropped_write() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    events.configure(Settings(path="/dev/full"))
    intervention()
    events.emit(events.PATCHED)
    events.write_summary()
    assert events.dropped() == 3


def test_closed_stream_does_not_raise_and_counts_the_dropped_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    events.configure(Settings(path="stdout"))
    intervention()
    assert events.dropped() == 1


def test_tensor_values_are_never_logged(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    # given a file sink and a bug elsewhere that hands tensors to an event
    path = tmp_path / "events.jsonl"
    events.configure(Settings(path=str(path)))
    secret = tf.constant([[123.25, 456.5]])
    # when they are recorded as values, nested values and extra fields
    intervention(before={"filter": secret, "shapes": [[1, 2], secret]}, strides=secret)
    # then only the type name is written
    (line,) = read_lines(path)
    assert line["before"] == {"filter": "<EagerTensor>", "shapes": [[1, 2], "<EagerTensor>"]}
    assert line["strides"] == "<EagerTensor>"
    assert "123.25" not in path.read_text()


# -- folding and counts ---------------------------------------------------------------


def test_repeats_of_one_key_are_written_once_and_counted(tmp_path: Path) -> None:
    # given a file sink
    path = tmp_path / "events.jsonl"
    events.configure(Settings(path=str(path)))
    # when the same intervention happens 10,000 times
    for _ in range(10_000):
        intervention()
    # then one line was written, and every occurrence counted
    assert len(read_lines(path)) == 1
    assert events.counts() == {("train.py:12", "conv1", "dtype", "dtype_mismatch"): 10_000}
    events.write_summary()
    assert read_lines(path)[-1]["total"] == 10_000


def test_different_keys_are_written_separately() -> None:
    with capture_events() as captured:
        intervention(callsite="train.py:12")
        intervention(callsite="train.py:13")
        intervention(layer="conv2")
        intervention(reason="padding_case")
        intervention(policy="padding", reason="dtype_mismatch")
    assert len(captured) == 5


def test_emit_is_written_every_time() -> None:
    with capture_events() as captured:
        events.emit(events.INTERNAL_ERROR, error="KeyError")
        events.emit(events.INTERNAL_ERROR, error="KeyError")
    assert len(captured) == 2


def test_reset_forgets_counts_and_writes_the_next_occurrence_again() -> None:
    with capture_events() as captured:
        intervention()
        events.reset()
        intervention()
    assert len(captured) == 2
    assert list(events.counts().values()) == [1]


def test_counts_are_exact_under_concurrent_records() -> None:
    # given 8 threads recording 1,000 interventions each over 4 keys
    def work() -> None:
        for i in range(1_000):
            intervention(callsite=f"train.py:{i % 4}")

    threads = [threading.Thread(target=work) for _ in range(8)]
    with capture_events() as captured:
        # when they all run at once
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # then every occurrence was counted and each key written once
    assert sorted(events.counts().values()) == [2_000] * 4
    assert len(captured) == 4


# -- summaries ------------------------------------------------------------------------


def test_summary_counts_every_key_with_its_first_event_and_op() -> None:
    # given two keys, one seen three times
    with capture_events() as captured:
        for _ in range(3):
            intervention()
        intervention(callsite="train.py:20", op="conv1d")
        # when a summary is asked for
        events.write_summary()
    # then it lists both keys, first occurrences included
    summary = captured[-1]
    assert summary["event"] == events.SUMMARY
    assert summary["total"] == 4
    assert summary["counts"] == [
        {
            "callsite": "train.py:12",
            "layer": "conv1",
            "policy": "dtype",
            "reason": "dtype_mismatch",
            "event": events.INTERVENTION,
            "op": "conv2d",
            "count": 3,
        },
        {
            "callsite": "train.py:20",
            "layer": "conv1",
            "policy": "dtype",
            "reason": "dtype_mismatch",
            "event": events.INTERVENTION,
            "op": "conv1d",
            "count": 1,
        },
    ]


def test_periodic_summary_is_written_when_counts_changed(
    convfix_logger: logging.Logger,
) -> None:
    # given a 50 ms summary interval
    signal = SummarySignal()
    convfix_logger.addHandler(signal)
    events.configure(Settings(sink="logging", summary_interval=0.05))
    # when something is counted
    intervention()
    # then a summary follows without being asked for
    assert signal.arrived.wait(timeout=10)
    assert signal.summaries[0]["total"] == 1


def test_periodic_summary_is_not_repeated_while_counts_are_unchanged(
    convfix_logger: logging.Logger,
) -> None:
    signal = SummarySignal()
    convfix_logger.addHandler(signal)
    events.configure(Settings(sink="logging", summary_interval=0.05))
    intervention()
    assert signal.arrived.wait(timeout=10)
    signal.arrived.clear()
    # nothing changes for several intervals: waiting out the timeout is the point
    assert not signal.arrived.wait(timeout=0.3)


@pytest.mark.subprocess
def test_final_summary_is_written_at_exit(tmp_path: Path) -> None:
    # given a process that records three interventions to a file and exits normally
    path = tmp_path / "events.jsonl"
    program = textwrap.dedent(
        f"""
        from types import SimpleNamespace
        from convfix import events
        events.configure(SimpleNamespace(
            path={str(path)!r}, format="json", sink="convfix", summary_interval=0))
        for _ in range(3):
            events.record(events.INTERVENTION, policy="dtype", op="conv2d",
                          action="cast_filter", mode="repair", reason="dtype_mismatch",
                          before={{}}, after={{}}, graph=False)
        """
    )
    # when it has exited
    run_python(program)
    # then the file ends with a summary counting all three
    summary = read_lines(path)[-1]
    assert summary["event"] == events.SUMMARY
    assert summary["total"] == 3
    assert summary["counts"][0]["count"] == 3


@pytest.mark.subprocess
def test_a_process_with_no_intervention_still_writes_a_final_summary(tmp_path: Path) -> None:
    # given a process in which convfix configured its events but nothing was counted
    path = tmp_path / "events.jsonl"
    program = textwrap.dedent(
        f"""
        from types import SimpleNamespace
        from convfix import events
        events.configure(SimpleNamespace(
            path={str(path)!r}, format="json", sink="convfix", summary_interval=0))
        events.emit(events.PATCHED, tensorflow="2.21.0")
        """
    )
    # when it has exited normally
    run_python(program)
    # then its last line is a final summary with nothing counted
    summary = read_lines(path)[-1]
    assert summary["event"] == events.SUMMARY
    assert (summary["final"], summary["total"], summary["counts"]) == (True, 0, [])


@pytest.mark.subprocess
def test_a_process_that_only_imports_convfix_writes_no_summary() -> None:
    # given a process that imports convfix but never configures or counts anything
    program = "import convfix, convfix.events\n"
    # when it exits
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    # then nothing was written on its behalf (`convfix config` and the like stay quiet)
    assert done.returncode == 0
    assert done.stderr == ""


def test_a_warning_and_a_refusal_of_one_call_are_counted_apart() -> None:
    # given warn mode, where a call TensorFlow would crash on is warned about, then refused
    with capture_events() as captured:
        intervention()
        events.record(events.WARNING, **_fields(action="none"))
        events.record(events.REFUSED, **_fields(action="refuse"))
        # when a summary is asked for
        events.write_summary()
    # then both were written in full, and each event has its own count
    assert [e["event"] for e in captured[:3]] == [events.INTERVENTION, events.WARNING,
                                                  events.REFUSED]  # fmt: skip
    counted = {entry["event"]: entry["count"] for entry in captured[-1]["counts"]}
    assert counted == {events.INTERVENTION: 1, events.WARNING: 1, events.REFUSED: 1}


def _fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "policy": "dtype", "op": "conv2d", "action": "cast_filter", "mode": "warn",
        "reason": "dtype_mismatch", "before": {}, "after": {}, "graph": False,
        "layer": "conv1", "callsite": "train.py:12",
    }  # fmt: skip
    return {**fields, **overrides}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_forked_child_counts_afresh_and_writes_to_its_own_pid_file(tmp_path: Path) -> None:
    # given a parent that has counted and writes to a per-process file
    events.configure(Settings(path=str(tmp_path / "events-{pid}.jsonl")))
    intervention()
    parent_counts = events.counts()
    read_end, write_end = os.pipe()
    # when a forked child records the same intervention
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's teardown
        status = 1
        try:
            counts_at_fork = len(events.counts())
            intervention()
            os.write(write_end, json.dumps([counts_at_fork, os.getpid()]).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        counts_at_fork, child_pid = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    # then the child started from zero, wrote its first occurrence to its own file,
    # and the parent's counts are untouched
    assert os.waitstatus_to_exitcode(status) == 0
    assert counts_at_fork == 0
    child_lines = read_lines(tmp_path / f"events-{child_pid}.jsonl")
    assert [line["event"] for line in child_lines] == [events.INTERVENTION]
    assert events.counts() == parent_counts


# -- capture_events and import cost ---------------------------------------------------


def test_capture_events_nests_and_restores_the_previous_sink() -> None:
    with capture_events() as outer:
        events.emit(events.PATCHED, n=1)
        with capture_events() as inner:
            events.emit(events.PATCHED, n=2)
        events.emit(events.PATCHED, n=3)
    assert [e["n"] for e in outer] == [1, 3]
    assert [e["n"] for e in inner] == [2]


@pytest.mark.subprocess
def test_importing_events_does_not_import_tensorflow() -> None:
    run_python(
        "import sys, convfix.events, convfix.testing\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )


def run_python(program: str) -> None:
    pythonpath = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, pythonpath))}
    subprocess.run([sys.executable, "-c", program], env=env, check=True, timeout=120)
