"""The hazard sweep (``convfix doctor --sweep``, ``convfix.sweep.run``) on real TensorFlow,
oneDNN on (the suite's build): pinned calls whose fate is known, the command as a user
runs it, reproducibility. Budgets are small; each sweep imports TensorFlow in its child
once (about 3 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convfix.sweep import OUTCOMES, Case, CaseResult, SweepResult, run, sample

tf = pytest.importorskip("tensorflow")

ONEDNN = os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"  # tests/conftest.py sets it


def case(index: int, op: str, x: tuple[int, ...], f: tuple[int, ...], **given: object) -> Case:
    """A pinned call: float32, channels-last, stride and dilation 1 unless given."""
    n = len(f) - 2
    fields: dict[str, object] = {
        "strides": (1,) * n,
        "dilations": (1,) * n,
        "padding": "VALID",
        "channels_first": False,
        "dtype": "float32",
        "seed": 7,
    }
    fields.update(given)
    return Case(index, op, x, f, **fields)  # type: ignore[arg-type]


RANK_3_CONV2D = case(0, "conv2d", (5, 5, 3), (3, 3, 3, 4))  # oneDNN: Check failed, SIGABRT
# README, "Strided windows": one input channel, a single strided output window.
ONE_CHANNEL_WINDOW = case(1, "conv2d", (2, 2, 1, 1), (1, 2, 1, 1), strides=(1, 2), padding="SAME")
EMPTY_BATCH = case(2, "conv2d", (0, 10, 10, 3), (3, 3, 3, 4), padding="SAME")
HEALTHY = case(3, "conv2d", (1, 6, 6, 2), (3, 3, 2, 4), padding="SAME")


@pytest.fixture(scope="module")
def pinned() -> dict[int, CaseResult]:
    result = run(budget=60, cases=[RANK_3_CONV2D, ONE_CHANNEL_WINDOW, EMPTY_BATCH, HEALTHY])
    return {r.case.index: r for r in result.results}


def convfix_doctor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVFIX_")}
    env.pop("NO_COLOR", None)  # plain text must come from the pipe alone
    return subprocess.run(
        [sys.executable, "-m", "convfix", "doctor", "--sweep", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- pinned calls ------------------------------------------------------------------------


@pytest.mark.skipif(not ONEDNN, reason="the abort is oneDNN's")
def test_a_rank_3_conv2d_aborts_bare_and_is_guarded(pinned: dict[int, CaseResult]) -> None:
    found = pinned[RANK_3_CONV2D.index]

    assert found.outcome == "abort"
    assert "SIGABRT" in found.detail and "Check failed" in found.detail
    assert (found.convfix, found.guarded) == ("repaired", True)
    assert "batch_dim:add_batch_dim" in found.actions


@pytest.mark.skipif(not ONEDNN, reason="the wrong values are oneDNN's")
def test_a_strided_one_channel_window_is_wrong_bare_and_guarded(
    pinned: dict[int, CaseResult],
) -> None:
    found = pinned[ONE_CHANNEL_WINDOW.index]

    assert found.outcome == "wrong_values"
    assert (found.convfix, found.guarded) == ("right", True)  # exact: the call as made
    assert found.actions == ("padding:one_window",)


@pytest.mark.skipif(not ONEDNN, reason="the wrong shape is oneDNN's")
def test_an_empty_batch_is_wrongly_shaped_bare_and_answered_empty(
    pinned: dict[int, CaseResult],
) -> None:
    found = pinned[EMPTY_BATCH.index]

    assert found.outcome == "wrong_shape"
    assert (found.convfix, found.guarded) == ("right", True)
    assert found.actions == ("guard:answer_empty",)


def test_a_healthy_call_is_right_and_not_run_again(pinned: dict[int, CaseResult]) -> None:
    found = pinned[HEALTHY.index]

    assert (found.outcome, found.convfix, found.guarded) == ("right", None, None)


def test_fresh_interpreters_find_the_abort_too() -> None:
    result = run(budget=60, cases=[RANK_3_CONV2D], runner="fresh")

    assert result.runner == "fresh"
    found = result.results[0]
    expected = "abort" if ONEDNN else "error"
    assert (found.outcome, found.guarded) == (expected, True)


# -- the command ------------------------------------------------------------------------


def test_json_names_the_build_counts_and_each_failure(tmp_path: Path) -> None:
    done = convfix_doctor(
        "--json", "--budget", "30", "--cases", "80", "--device", "/CPU:0", cwd=tmp_path
    )

    document = json.loads(done.stdout)
    assert document["tensorflow"] == tf.__version__
    assert document["build"]["onednn"] is ONEDNN
    assert {"cuda", "cudnn"} <= set(document["build"])
    assert (document["device"], document["device_requested"]) == ("CPU:0", "/CPU:0")
    assert 0 < document["cases"] <= 80
    assert list(document["by_outcome"]) == list(OUTCOMES)
    assert sum(document["by_outcome"].values()) == document["cases"]
    assert document["unguarded"] == sum(f["guarded"] is False for f in document["failures"])
    assert done.returncode == (1 if document["unguarded"] else 0), done.stderr
    for failure in document["failures"]:
        assert {"op", "call", "outcome", "guarded", "repro"} <= set(failure)
        assert failure["call"].startswith(f"tf.nn.{failure['op']}(")
        compile(failure["repro"], "<repro>", "exec")  # one line of Python


def test_piped_output_is_a_plain_table(tmp_path: Path) -> None:
    done = convfix_doctor("--budget", "30", "--cases", "40", "--seed", "5", cwd=tmp_path)

    assert done.returncode in (0, 1), done.stderr
    assert "\x1b" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"convfix doctor --sweep: TF {tf.__version__}, oneDNN ")
    assert any(line.split()[:3] == ["op", "cases", "right"] for line in lines)
    assert any(line.startswith("all ") for line in lines)
    assert any(line.startswith("Unguarded: ") for line in lines)


def test_sweep_only_flags_need_sweep(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "convfix", "doctor", "--seed", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert "--seed: only with --sweep" in done.stderr


# -- reproducible -----------------------------------------------------------------------


def test_a_seed_draws_the_same_cases_everywhere() -> None:
    first, again = list(sample(11, 300)), list(sample(11, 300))

    assert first == again
    assert list(sample(11, 100, start=200)) == first[200:]
    assert list(sample(12, 300)) != first
    assert {c.op for c in first} == {
        "conv1d", "conv2d", "conv3d", "convolution", "depthwise_conv2d", "separable_conv2d",
        "conv1d_transpose", "conv2d_transpose", "conv3d_transpose",
    }  # fmt: skip
    assert all(Case.from_json(json.loads(json.dumps(c.to_json()))) == c for c in first)


def test_a_seed_gives_the_same_outcomes() -> None:
    def outcomes(result: SweepResult) -> list[tuple[int, str, str | None]]:
        return [(r.case.index, r.outcome, r.convfix) for r in result.results]

    first = run(seed=5, budget=40, cases=40)
    again = run(seed=5, budget=40, cases=40)

    assert first.cases == 40
    assert outcomes(first) == outcomes(again)
