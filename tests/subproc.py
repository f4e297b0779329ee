"""Run a snippet in a fresh interpreter: import orders, aborts and exit codes need one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_python(
    code: str, env: dict[str, str] | None = None, cwd: str | None = None, timeout: float = 120
) -> Result:
    """Run ``code`` in a new Python process with the suite's environment plus ``env``."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    full_env.pop("CONVFIX_CONFIG", None) if "CONVFIX_CONFIG" not in (env or {}) else None
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)
