"""convfix.events.distribute and the ``worker``/``replica`` event fields, without TensorFlow."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from convfix import events
from convfix.events import distribute
from convfix.testing import capture_events
from tests.unit.events_support import Settings, fresh_events  # noqa: F401

WORKER_1 = json.dumps(
    {
        "cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]},
        "task": {"type": "worker", "index": 1},
    }
)


@pytest.fixture
def no_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever else ran in this process, convfix must see no TensorFlow here."""
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)


def intervention(**overrides: Any) -> None:
    fields: dict[str, Any] = {
        "policy": "dtype",
        "op": "conv2d",
        "action": "cast_filter",
        "mode": "fix",
        "reason": "dtype_mismatch",
        "before": {"input": "float64", "filter": "float32"},
        "after": {"input": "float64", "filter": "float64"},
        "graph": True,
        "callsite": "train.py:12",
    }
    events.record(events.INTERVENTION, **(fields | overrides))


# -- parsing TF_CONFIG ----------------------------------------------------------------


def test_task_type_and_index_are_read_from_tf_config() -> None:
    assert distribute.parse_task(WORKER_1) == ("worker", 1)


def test_chief_task_keeps_its_type() -> None:
    assert distribute.parse_task('{"task": {"type": "chief", "index": 0}}') == ("chief", 0)


def test_index_given_as_a_decimal_string_is_read_as_tensorflow_reads_it() -> None:
    assert distribute.parse_task('{"task": {"type": "worker", "index": "3"}}') == ("worker", 3)


@pytest.mark.parametrize("raw", [None, ""])
def test_absent_tf_config_is_no_task(raw: str | None) -> None:
    assert distribute.parse_task(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[1, 2]",
        '"worker:1"',
        "{}",
        '{"cluster": {"worker": ["a:1"]}}',
        '{"task": "worker:1"}',
        '{"task": {"index": 1}}',
        '{"task": {"type": "", "index": 1}}',
        '{"task": {"type": 7, "index": 1}}',
        '{"task": {"type": "worker"}}',
        '{"task": {"type": "worker", "index": -1}}',
        '{"task": {"type": "worker", "index": true}}',
        '{"task": {"type": "worker", "index": 1.5}}',
        '{"task": {"type": "worker", "index": "one"}}',
        '{"task": {"type": "worker", "index": null}}',
        "[" * 100_000,  # deep enough to make the JSON parser recurse out
    ],
)
def test_malformed_tf_config_is_no_task_and_never_raises(raw: str) -> None:
    assert distribute.parse_task(raw) is None


def test_worker_names_the_task_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CONFIG", WORKER_1)
    assert distribute.worker() == "worker:1"
    assert distribute.task_index() == 1


def test_worker_is_none_without_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.worker() is None
    assert distribute.task_index() is None


def test_worker_follows_tf_config_set_after_import(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a first reading without TF_CONFIG (as at `import convfix.auto`, line one)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.worker() is None
    # when the program sets it before building its strategy
    monkeypatch.setenv("TF_CONFIG", WORKER_1)
    # then the next reading sees it
    assert distribute.worker() == "worker:1"


# -- replica without TensorFlow -------------------------------------------------------


@pytest.mark.usefixtures("no_tensorflow")
def test_replica_is_none_when_tensorflow_is_not_imported() -> None:
    assert distribute.replica() is None
    assert "tensorflow" not in sys.modules  # and looking did not import it


def test_replica_is_none_when_tensorflow_is_only_partly_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A post-import hook can run while `tensorflow` is in sys.modules without `distribute`.
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert distribute.replica() is None


# -- the fields on events -------------------------------------------------------------


@pytest.mark.usefixtures("no_tensorflow")
def test_every_event_names_its_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a process that is task 1 of a multi-worker job
    monkeypatch.setenv("TF_CONFIG", WORKER_1)
    with capture_events() as captured:
        # when it records an intervention, emits a notice and writes a summary
        intervention()
        events.emit(events.PATCHED, tensorflow="2.21.0")
        events.write_summary()
    # then every event says which worker wrote it
    assert [e["worker"] for e in captured] == ["worker:1"] * 3


@pytest.mark.usefixtures("no_tensorflow")
def test_outside_tf_distribute_worker_and_replica_are_null(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with capture_events() as captured:
        intervention()
        events.write_summary()
    intervention_event, summary = captured
    assert intervention_event["worker"] is None
    assert intervention_event["replica"] is None
    assert "replica" not in summary["counts"][0]  # summaries read as before


def test_malformed_tf_config_gives_a_null_worker_and_task_file_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_CONFIG", '{"task": {"type": "worker", "index": true}}')
    events.configure(Settings(path=str(tmp_path / "events-{task}.jsonl")))
    intervention()
    (line,) = [json.loads(t) for t in (tmp_path / "events-0.jsonl").read_text().splitlines()]
    assert line["worker"] is None


def test_each_worker_task_index_names_its_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in (0, 1):
        task = {"type": "worker", "index": index}
        monkeypatch.setenv("TF_CONFIG", json.dumps({"task": task}))
        events.configure(Settings(path=str(tmp_path / "events-{task}.jsonl")))
        intervention()
        events.reset()
    for index in (0, 1):
        lines = (tmp_path / f"events-{index}.jsonl").read_text().splitlines()
        assert [json.loads(t)["worker"] for t in lines] == [f"worker:{index}"]


def test_task_type_placeholder_keeps_a_chief_apart_from_worker_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for kind in ("chief", "worker"):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"task": {"type": kind, "index": 0}}))
        events.configure(Settings(path=str(tmp_path / "events-{task_type}-{task}.jsonl")))
        intervention()
        events.reset()
    for kind in ("chief", "worker"):
        lines = (tmp_path / f"events-{kind}-0.jsonl").read_text().splitlines()
        assert [json.loads(t)["worker"] for t in lines] == [f"{kind}:0"]


# -- folding per replica --------------------------------------------------------------


def test_each_replicas_first_repair_is_written_and_counts_stay_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given two replicas (as strategy.run would report them), each tracing the same call
    # three times
    replicas = iter([0, 1, 0, 1, 0, 1])
    monkeypatch.setattr(distribute, "replica", lambda: next(replicas))
    with capture_events() as captured:
        for _ in range(6):
            intervention()
        events.write_summary()
    *lines, summary = captured
    # then each replica's first occurrence is one line
    assert [e["replica"] for e in lines] == [0, 1]
    # and the counts add up: per replica in the summary, per key in counts()
    assert [(c["replica"], c["count"]) for c in summary["counts"]] == [(0, 3), (1, 3)]
    assert summary["total"] == 6
    assert events.counts() == {("train.py:12", None, "dtype", "dtype_mismatch"): 6}
