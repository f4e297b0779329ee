"""The version matrix: every TensorFlow convfix supports, measured, not assumed.

One environment per TensorFlow release (tensorflow-cpu, Python 3.11, pip's cache reused).
In each, with oneDNN on and off: the compat subset of the tests (``pytest -m compat``:
activation in both import orders, every public name, the guard's abort and garbage cases,
one repair per policy, Keras fit with a custom layer) and the hazard sweep
(``convfix doctor --sweep --json``). Each run writes ``.nox/matrix/<version>.json``.

    nox -s compat                       # every version, one after another
    nox -s "compat(tf='2.12.1')"        # one version
    nox -s table                        # the README's "Supported versions" table, rewritten
                                        # from the results (nothing there is hand-written)

``SWEEP_BUDGET`` (seconds per build, default 60) bounds each sweep; ``MATRIX_SWEEP=0``
runs the compat subset alone; ``MATRIX_STRICT=1`` (CI) fails the session when a test fails.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nox

TF_VERSIONS = [
    "2.12.1",
    "2.13.1",
    "2.14.1",
    "2.15.1",
    "2.16.2",
    "2.17.1",
    "2.18.1",
    "2.19.1",
    "2.20.0",
    "2.21.0",
]
RESULTS = Path(".nox/matrix")
README = Path("README.md")
START, END = "<!-- matrix:start -->", "<!-- matrix:end -->"

nox.options.sessions = ["compat", "table"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
@nox.parametrize("tf", TF_VERSIONS)
def compat(session: nox.Session, tf: str) -> None:
    """Install TensorFlow ``tf`` beside convfix, run the compat subset and the sweep."""
    row: dict[str, object] = {"tensorflow": tf, "installs": False}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{tf}.json"
    out.write_text(json.dumps(row))
    session.install(f"tensorflow-cpu=={tf}", ".[test]")
    row["installs"] = True
    budget = os.environ.get("SWEEP_BUDGET", "60")
    for onednn in ("1", "0"):
        env = {"TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2"}
        summary: dict[str, int] = {}
        if onednn == "1":  # the suite asserts the dangerous build's behaviour (conftest.py)
            strict = os.environ.get("MATRIX_STRICT") == "1"  # CI: a failure fails the run
            tests = session.run(
                "python", "-m", "pytest", "-m", "compat", "-q", "-p", "no:cacheprovider",
                "-n", "2", env=env, success_codes=[0] if strict else [0, 1], silent=True,
            )  # fmt: skip
            summary = _pytest_summary(str(tests))
        found: dict[str, object] = {"cases": None, "unguarded": None}
        if os.environ.get("MATRIX_SWEEP", "1") != "0":
            sweep = session.run(
                "convfix", "doctor", "--sweep", "--json", "--seed", "0", "--budget", budget,
                env=env, success_codes=[0, 1], silent=True,
            )  # fmt: skip
            found = _sweep_summary(str(sweep))
        row[f"onednn_{'on' if onednn == '1' else 'off'}"] = {**summary, **found}
        out.write_text(json.dumps(row, indent=2))
        session.log(f"TF {tf}, oneDNN {onednn}: {summary} {found}")


@nox.session(venv_backend="none")
def table(session: nox.Session) -> None:
    """Rewrite the README's supported-versions table from ``.nox/matrix``."""
    rows = []
    for tf in TF_VERSIONS:
        path = RESULTS / f"{tf}.json"
        if not path.exists():
            continue
        rows.append(json.loads(path.read_text()))
    lines = [
        START,
        "| TensorFlow | installs | compat subset (oneDNN on) | sweep, oneDNN on: cases, "
        "unguarded | sweep, oneDNN off: cases, unguarded |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        on, off = row.get("onednn_on") or {}, row.get("onednn_off") or {}
        failed = on.get("failed", 0) + on.get("errors", 0)
        subset = f"{on.get('passed', 0)} passed" + (f", **{failed} failed**" if failed else "")
        lines.append(
            f"| {row['tensorflow']} | {'yes' if row.get('installs') else '**no**'} | "
            f"{subset if on else '—'} | {_sweep_cell(on)} | {_sweep_cell(off)} |"
        )
    lines.append(END)
    text = README.read_text(encoding="utf-8")
    block = "\n".join(lines)
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), block, text, flags=re.S)
    else:
        session.error(f"README.md has no {START} ... {END} block to fill")
    README.write_text(text, encoding="utf-8")
    session.log("\n" + block)


def _sweep_cell(cell: dict[str, object]) -> str:
    if cell.get("cases") is None:
        return "not run"
    unguarded = cell.get("unguarded")
    return f"{cell['cases']}, {unguarded if not unguarded else f'**{unguarded}**'}"


def _pytest_summary(output: str) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    last = [line for line in output.splitlines() if " in " in line and "passed" in line]
    for number, word in re.findall(
        r"(\d+) (passed|failed|errors?|skipped)", last[-1] if last else ""
    ):
        counts["errors" if word.startswith("error") else word] = int(number)
    return counts


def _sweep_summary(output: str) -> dict[str, object]:
    start = output.find("{")
    try:
        document = json.loads(output[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {"cases": None, "unguarded": None}
    return {
        "cases": document.get("cases"),
        "unguarded": document.get("unguarded"),
        "by_outcome": document.get("by_outcome"),
    }
