"""A sweep child: ``python -m convfix.sweep.child serve|once``.

It imports TensorFlow once (about 3 s), says ``ready`` with the build's facts, then runs
jobs read from stdin, one JSON line each: ``{"cases": [...], "mode": "bare"|"convfix",
"device": ..., "alone": bool}``.

- ``serve`` (the fork server): for each job it forks; the fork runs the job and exits, and
  the server reports how it ended (``{"exit": status}``, negative: killed by that signal).
  The server itself runs no TensorFlow op, so no TensorFlow thread exists when it forks
  (a pool's threads do not survive a fork, and a fork made while one held a lock hangs).
- ``once`` (a fresh interpreter): runs one job itself, then exits.

Every line it writes starts with ``MARKER``; a job writes ``device``, then per case
``start`` and ``result`` (or ``bug``: the sweep's own check failed), then ``done``. A job
``alone`` (one case, run by itself) also allocates and frees after the case, so heap
corruption the case caused aborts in the case's own process. Bare jobs never patch
convfix; convfix jobs patch it with the configuration discovered as in the user's program
(``CONVFIX_CONFIG``, ``./convfix.toml``...).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

MARKER = "CONVFIX_SWEEP "
_LIMIT = 3500  # bytes: a line stays one atomic pipe write (PIPE_BUF is 4096 on Linux)


def send(**fields: Any) -> None:
    """One protocol line on fd 1, in one write (the server and a fork share the pipe)."""
    line = MARKER + json.dumps(fields, default=str)
    if len(line) > _LIMIT:
        fields = {k: (v[:200] if isinstance(v, str) else v) for k, v in fields.items()}
        line = MARKER + json.dumps(fields, default=str)
    os.write(1, (line + "\n").encode())


def facts(seconds: float) -> dict[str, Any]:
    """TensorFlow's version and build, read without running an op (no device set up)."""
    import tensorflow as tf

    try:
        info = dict(tf.sysconfig.get_build_info())
    except Exception:
        info = {}
    from convfix.integrations.tensorflow import onednn_enabled

    return {
        "tensorflow": tf.__version__,
        "build": {
            "onednn": onednn_enabled(),
            "cuda": info.get("cuda_version"),
            "cudnn": info.get("cudnn_version"),
            "cuda_build": bool(info.get("is_cuda_build", False)),
        },
        "import_seconds": round(seconds, 2),
        "pid": os.getpid(),
    }


def run_job(job: dict[str, Any]) -> None:
    """Run a job's cases here, reporting each; the caller exits after."""
    import tensorflow as tf

    from convfix.sweep import check
    from convfix.sweep.grid import Case

    mode = None
    if job["mode"] == "convfix":
        import convfix

        # The user's configuration, found as their program would find it.
        mode = convfix.patch().mode
    device = job.get("device")
    scope = tf.device(device) if device else _Nothing()
    with scope:
        send(device=tf.zeros([1]).device, convfix_mode=mode)
        for data in job["cases"]:
            case = Case.from_json(data)
            send(start=case.index)
            try:
                result = check.bare(case) if job["mode"] == "bare" else check.guarded(case)
            except Exception as error:  # the sweep's own bug: say so, and go on
                send(bug=f"{type(error).__name__}: {error}"[:300], index=case.index)
                continue
            send(result=result, index=case.index)
        if job.get("alone"):
            check.aftershock()
    send(done=True)


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _guarded_job(job: dict[str, Any]) -> int:
    try:
        run_job(job)
    except BaseException:  # a bug here, or a bad config: say so rather than vanish
        send(fatal=traceback.format_exc()[-1500:])
        return 70
    return 0


def serve() -> None:
    """The fork server's loop: a job per stdin line, each in its own fork."""
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(_guarded_job(job))
        send(forked=pid)
        _, status = os.waitpid(pid, 0)
        send(exit=os.waitstatus_to_exitcode(status))


def main(argv: list[str]) -> None:
    """``serve`` or ``once``: import TensorFlow, say ready, run jobs."""
    started = time.monotonic()
    # Imported before forking, so every fork shares them: NumPy, TensorFlow, the reference
    # and convfix's pipeline (a convfix job patches without importing it again).
    import numpy  # noqa: F401
    import tensorflow  # noqa: F401

    from convfix import pipeline, testing  # noqa: F401
    from convfix.sweep import check  # noqa: F401

    send(ready=facts(time.monotonic() - started))
    if argv[1:] == ["serve"]:
        serve()
        os._exit(0)
    job = json.loads(sys.stdin.readline())
    code = _guarded_job(job)
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
