"""The ``convfix`` command as a user runs it: ``python -m convfix ...`` (and the console
script once), piped, in a fresh process each time."""

from __future__ import annotations

import argparse
import fcntl
import gzip
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from convfix.cli import doctor
from convfix.cli._doctor_checks import Finding

tf = pytest.importorskip("tensorflow")

PROGRAM = """\
import sys
import tensorflow as tf

x = tf.ones([1, 8, 8, 3], dtype=tf.float64)
for _ in range(5):
    y = tf.nn.conv2d(x, tf.ones([3, 3, 3, 4]), 1, "SAME")
print("dtype", y.dtype.name, "argv", sys.argv[1:], "name", __name__)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""
BAD_CONFIG = 'mode = "sometimes"\n'


def env(**extra: str) -> dict[str, str]:
    """The suite's environment without the developer's convfix settings, piped output."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVFIX_")}
    base.pop("NO_COLOR", None)  # plain text must come from the pipe alone
    return {**base, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def start(*args: str, cwd: Path, **extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "convfix", *args]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def convfix(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return finish(start(*args, cwd=cwd, **extra))


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Runs(NamedTuple):
    script: subprocess.CompletedProcess[str]
    """``convfix run pkgdir/prog.py 3 --epochs -m x``."""
    module: subprocess.CompletedProcess[str]
    """``convfix run -m prog 7`` with pkgdir on PYTHONPATH: the same file, as a module."""
    work: Path
    """Where both wrote their events, one ``ev-{pid}.jsonl`` each."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """One program run twice under ``convfix run`` at once (each imports TensorFlow, ~4 s),
    computed once per test session even when xdist spreads these tests over workers."""
    return Runs(*shared_once("runs", tmp_path_factory, _run_twice))


def _run_twice(work: Path) -> list[Any]:
    (work / "pkgdir").mkdir()
    (work / "pkgdir" / "prog.py").write_text(PROGRAM, encoding="utf-8")
    events = str(work / "ev-{pid}.jsonl")
    started = [
        start("run", "pkgdir/prog.py", "3", "--epochs", "-m", "x", cwd=work,
              CONVFIX_EVENTS_PATH=events),
        start("run", "-m", "prog", "7", cwd=work.parent, PYTHONPATH=str(work / "pkgdir"),
              CONVFIX_EVENTS_PATH=events),
    ]  # fmt: skip
    return [*(finish(process) for process in started), work]


def shared_once(name: str, factory: pytest.TempPathFactory, make: Callable[[Path], Any]) -> Any:
    """``make(fresh_dir)`` run by the first xdist worker to ask; the others wait and reuse it
    (xdist's recipe for once-per-session fixtures: every worker sees the same parent dir)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return make(factory.mktemp(name))
    root = factory.getbasetemp().parent
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = root / f"{name}.pickle"
        if not stored.exists():
            work = root / name
            work.mkdir()
            stored.write_bytes(pickle.dumps(make(work)))
        return pickle.loads(stored.read_bytes())


pytestmark = pytest.mark.subprocess


# -- run --------------------------------------------------------------------------------------


def test_run_repairs_a_float64_conv_because_convfix_is_active(runs: Runs) -> None:
    assert "dtype float32" in runs.script.stdout, runs.script.stderr  # Keras' compute dtype
    assert "name __main__" in runs.script.stdout


def test_run_passes_the_exit_code_and_argv_through(runs: Runs) -> None:
    assert runs.script.returncode == 3, runs.script.stderr
    assert "argv ['3', '--epochs', '-m', 'x']" in runs.script.stdout


def test_run_m_runs_a_module_as_main(runs: Runs) -> None:
    assert runs.module.returncode == 7, runs.module.stderr
    assert "dtype float32 argv ['7'] name __main__" in runs.module.stdout


def test_run_prints_an_uncaught_exception_like_python_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text("def f():\n    raise ValueError('boom')\nf()\n")

    done = convfix("run", "boom.py", cwd=tmp_path)

    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):\n  File ")
    assert "ValueError: boom" in done.stderr
    assert "runpy" not in done.stderr and f"convfix{os.sep}cli" not in done.stderr


def test_run_dies_of_the_signal_the_program_dies_of(tmp_path: Path) -> None:
    (tmp_path / "abort.py").write_text("import os\nos.abort()\n")

    done = convfix("run", "abort.py", cwd=tmp_path)

    assert done.returncode == -signal.SIGABRT


def test_run_with_a_bad_config_fails_before_the_program_runs(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BAD_CONFIG)
    (tmp_path / "hello.py").write_text("print('the program ran')\n")

    done = convfix("run", "--config", "bad.toml", "hello.py", cwd=tmp_path)

    assert done.returncode == 1
    assert "ConfigError: bad.toml: mode: expected one of fix, warn, strict, off" in done.stderr
    assert "the program ran" not in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run"], 2, "expected a script to run, or -m module"),
        (["run", "missing.py"], 2, "can't open file 'missing.py'"),
        (["run", "-m", "no_such_module_here"], 1, "no module named no_such_module_here"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["report"], 2, "the following arguments are required: FILE"),
        (["config", "--bogus"], 2, "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_say_what_is_wrong(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    done = convfix(*args, cwd=tmp_path)

    assert done.returncode == code
    assert message in done.stderr


# -- report -----------------------------------------------------------------------------------


def test_report_merges_the_files_of_two_processes(
    runs: Runs,
) -> None:
    files = sorted(str(p) for p in runs.work.glob("ev-*.jsonl"))
    assert len(files) == 2, files

    done = convfix("report", *files, cwd=runs.work)
    as_json = json.loads(convfix("report", "--json", *files, cwd=runs.work).stdout)

    assert done.returncode == 0, done.stderr
    assert re.search(r"^dtype\s+dtype_mismatch\s+cast_input\s+conv2d\s+\S+prog\.py:6\s+10\s+-$",
                     done.stdout, re.MULTILINE), done.stdout  # fmt: skip
    assert [(row["policy"], row["count"]) for row in as_json["rows"]] == [("dtype", 10)]
    assert as_json["processes"] == 2
    assert "\x1b[" not in done.stdout


def test_report_reads_gzip_and_garbage_and_says_what_it_could_not_read(
    runs: Runs, tmp_path: Path
) -> None:
    first = sorted(runs.work.glob("ev-*.jsonl"))[0]
    packed = tmp_path / "ev.jsonl.gz"
    packed.write_bytes(gzip.compress(first.read_bytes()))
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n" + first.read_text() + "{truncated\n")

    done = convfix("report", "ev.jsonl.gz", "garbage.jsonl", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert re.search(r"\s10\s+-$", done.stdout, re.MULTILINE), done.stdout
    lines = len(first.read_text().splitlines()) + 2
    assert f"2 lines could not be read: garbage.jsonl:1, garbage.jsonl:{lines}" in done.stdout


def test_report_of_an_empty_file_says_no_events(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").touch()

    done = convfix("report", "empty.jsonl", cwd=tmp_path)

    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, "no events")


def test_report_exits_1_when_no_file_can_be_opened(tmp_path: Path) -> None:
    done = convfix("report", "missing.jsonl", cwd=tmp_path)

    assert done.returncode == 1
    assert "cannot read missing.jsonl: No such file or directory" in done.stderr


@pytest.mark.parametrize("command", [["report", "-"], ["config"], ["config", "--check", "c.toml"]])
def test_report_and_config_never_import_tensorflow(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "c.toml").write_text('mode = "warn"\n')

    done = python(
        f"""
        import io, sys
        sys.stdin = io.TextIOWrapper(io.BytesIO(b""))
        from convfix.cli.main import main
        main({command!r})
        print("TF IMPORTED" if "tensorflow" in sys.modules else "no tensorflow")
        """,
        cwd=tmp_path,
    )

    assert done.stdout.splitlines()[-1] == "no tensorflow", done.stdout + done.stderr


# -- doctor -----------------------------------------------------------------------------------


@pytest.mark.skipif(
    bool(tf.config.list_physical_devices("GPU")), reason="asserts what doctor says without a GPU"
)
def test_doctor_on_this_cpu_machine(tmp_path: Path) -> None:
    done = convfix("doctor", cwd=tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"TensorFlow: {tf.__version__}" in done.stdout
    assert "no GPU: the cuDNN error cannot occur here" in done.stdout
    assert re.search(r"^ok    convolution: tf.nn.conv2d .* shape \(1, 4, 4, 1\)", done.stdout, re.M)
    assert "\x1b[" not in done.stdout + done.stderr


def test_doctor_json_lists_each_finding_and_counts_failures(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    findings = [Finding("GPUs", "info", "no GPU"), Finding("convolution", "fail", "x", "fix")]
    monkeypatch.setattr(doctor, "diagnose", lambda: findings)

    status = doctor.main(argparse.Namespace(json=True))

    document = json.loads(capsys.readouterr().out)
    assert (status, document["failed"]) == (1, 1)
    assert document["findings"][1] == {
        "check": "convolution", "status": "fail", "found": "x", "remedy": "fix"
    }  # fmt: skip


# -- config -----------------------------------------------------------------------------------


def test_config_shows_each_value_and_its_source(tmp_path: Path) -> None:
    (tmp_path / "convfix.toml").write_text('[policies.dtype]\ntarget = "float32"\n')

    done = convfix("config", cwd=tmp_path, CONVFIX_EVENTS_FORMAT="console")

    assert done.returncode == 0, done.stderr
    assert re.search(r"^mode\s+fix\s+default$", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^policies\.dtype\.target\s+float32\s+convfix\.toml$", done.stdout, re.M)
    assert re.search(r"^events\.format\s+console\s+env:CONVFIX_EVENTS_FORMAT$", done.stdout, re.M)


def test_config_check_gives_the_message_start_up_gives(tmp_path: Path) -> None:
    (tmp_path / "convfix.toml").write_text(BAD_CONFIG)

    checked = convfix("config", "--check", "convfix.toml", cwd=tmp_path)
    started = python("import convfix.auto", cwd=tmp_path)

    assert checked.returncode == 1 and started.returncode != 0
    message = checked.stderr.strip().split("ConfigError: ", 1)[1]
    assert started.stderr.strip().splitlines()[-1].endswith(f"ConfigError: {message}")


def test_config_check_of_a_good_file_says_ok(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text('extends = "strict"\n')

    done = convfix("config", "--check", "good.toml", cwd=tmp_path)

    assert (done.returncode, done.stdout) == (0, "good.toml: ok\n")


def test_config_with_a_broken_local_file_fails_with_its_message(tmp_path: Path) -> None:
    (tmp_path / "convfix.toml").write_text(BAD_CONFIG)

    done = convfix("config", cwd=tmp_path)

    assert done.returncode == 1
    assert "ConfigError: convfix.toml: mode: expected one of" in done.stderr


# -- demo, the console script, the import path -----------------------------------------------


def test_demo_with_a_bad_config_fails_before_starting_children(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BAD_CONFIG)

    done = convfix("demo", "--config", "bad.toml", cwd=tmp_path)

    assert done.returncode == 1
    assert "ConfigError: bad.toml: mode:" in done.stderr


def test_demo_children_get_the_config_and_keep_events_in_the_demo_file() -> None:
    from convfix.cli import demo

    child = demo.child_env(Path("/abs/my.toml"), Path("/tmp/convfix-demo-{x}/events.jsonl"))

    assert child["CONVFIX_CONFIG"] == "/abs/my.toml"
    assert child["CONVFIX_EVENTS_PATH"] == "/tmp/convfix-demo-{{x}}/events.jsonl"
    assert child["TF_ENABLE_ONEDNN_OPTS"] == "1"


def console_script() -> str | None:
    beside = Path(sys.executable).with_name("convfix")
    return str(beside) if beside.exists() else shutil.which("convfix")


def test_the_console_script_runs_commands_and_rejects_bad_arguments(tmp_path: Path) -> None:
    script = console_script()
    if script is None:
        pytest.skip("the convfix console script is not installed (pip install -e .)")

    def run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *args], cwd=tmp_path, env=env(), capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    shown, bad = run(["config"]), run(["report", "--since", "yesterday", "x.jsonl"])

    assert shown.returncode == 0 and re.search(r"^mode\s+fix\s+default$", shown.stdout, re.M)
    assert bad.returncode == 2
    assert "argument --since: expected an ISO 8601 time" in bad.stderr


def test_import_convfix_auto_does_not_import_the_cli(tmp_path: Path) -> None:
    done = python("import sys, convfix.auto; print('convfix.cli' in sys.modules)", cwd=tmp_path)

    assert done.stdout.strip() == "False", done.stderr
