"""A reader that goes away (``convfix ... | head``) ends every command quietly (issue 16).

Each command runs as the console script with its stdout a pipe whose read end was closed
before it started, so its first write to stdout fails, every time: no timing involved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_cli import console_script, env

pytestmark = pytest.mark.subprocess

CLOSED = 141  # documented in every command's --help (convfix.cli._pipe)


def closed_stdout(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``convfix ARGS`` with stdout's reader gone before it starts; stderr captured."""
    script = console_script()
    command = [script] if script is not None else [sys.executable, "-m", "convfix"]
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*command, *args], cwd=cwd, env=env(), stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=300)  # fmt: skip
    finally:
        os.close(write_end)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipes")
    lines = [
        {"timestamp": "2026-11-25T07:00:00Z", "event": "convfix.intervention", "policy": "dtype",
         "reason": "dtype_mismatch", "op": "conv2d", "action": "cast_filter",
         "callsite": f"train.py:{n}"}
        for n in range(400)
    ]  # fmt: skip
    # 400 rows: the JSON report is far larger than a pipe's buffer, so the write that fails
    # is one in the middle of the output, not the final flush.
    (root / "ev.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (root / "good.toml").write_text('mode = "warn"\n')
    (root / "prints.py").write_text("print('hello')\n")
    (root / "prints_a_lot.py").write_text("for n in range(10_000):\n    print('line', n)\n")
    (root / "exits_3.py").write_text("import sys\nsys.exit(3)\n")
    return root


@pytest.mark.parametrize(
    "args",
    [
        ["report", "ev.jsonl"],
        ["report", "--json", "ev.jsonl"],
        ["report", "--policy", "dtype", "--event", "intervention", "ev.jsonl"],
        ["config"],
        ["config", "--json"],
        ["config", "--check", "good.toml"],
        ["doctor"],
        ["doctor", "--json"],
        ["demo"],
        ["run", "prints.py"],
        ["run", "prints_a_lot.py"],
        ["--help"],
        ["report", "--help"],
        ["--version"],
    ],
    ids=" ".join,
)
def test_a_closed_stdout_ends_the_command_quietly_with_141(args: list[str], work: Path) -> None:
    done = closed_stdout(args, work)

    assert done.returncode == CLOSED, done.stderr
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr
    assert "Exception ignored" not in done.stderr


def test_a_program_under_run_keeps_the_status_it_chose(work: Path) -> None:
    # given a program that writes nothing and exits 3, with stdout's reader gone
    done = closed_stdout(["run", "exits_3.py"], work)
    # then its own status stands: nothing of its output was lost
    assert done.returncode == 3, done.stderr
    assert done.stderr == ""


def test_bad_arguments_stay_a_usage_error_with_stdout_closed(work: Path) -> None:
    done = closed_stdout(["report", "--event", "bogus", "ev.jsonl"], work)

    assert done.returncode == 2
    assert "unknown event 'convfix.bogus'" in done.stderr


@pytest.mark.parametrize("command", [[], ["report"], ["config"], ["doctor"], ["demo"], ["run"]])
def test_help_documents_the_closed_pipe_status(command: list[str], work: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "convfix", *command, "--help"], cwd=work,
                          env=env(), capture_output=True, text=True, timeout=60)  # fmt: skip

    assert done.returncode == 0
    assert f"Exit status {CLOSED} (as for any Unix tool stopped by SIGPIPE)" in " ".join(
        done.stdout.split()
    )
