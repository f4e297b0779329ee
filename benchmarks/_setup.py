"""Process set-up every benchmark shares: a quiet TensorFlow, events to a temp file, convfix on.

Everything here runs before TensorFlow is imported, which is why the benchmark modules import
TensorFlow only through :func:`prepare` and never at their top level.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

EVENTS_VAR = "CONVFIX_EVENTS_PATH"
GEN_NN_OPS = "tensorflow.python.ops.gen_nn_ops"
# The generated op every conv2d path reaches. convfix does not wrap it (it wraps only the
# public functions); baselines still restore it, so a wrapper there would be measured.
BACKSTOP_CONV2D = (GEN_NN_OPS, "conv2d")

_tf: Any = None  # the tensorflow module: Any, as TensorFlow ships no type information


def prepare() -> Any:
    """Set the environment, activate convfix with its defaults, and return ``tensorflow``.

    Idempotent, so the runner and each benchmark can both call it.
    """
    global _tf
    if _tf is not None:
        return _tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _route_events_to_temp_file()
    import convfix

    convfix.patch()  # before TensorFlow's import: the post-import hook patches it
    import tensorflow as tf

    _tf = tf
    return tf


def _route_events_to_temp_file() -> None:
    # The dtype benchmark makes thousands of repairs, each one an event; on stderr they would
    # bury the table. A user's own choice of path wins.
    if os.environ.get(EVENTS_VAR):
        return
    fd, path = tempfile.mkstemp(prefix="convfix-bench-", suffix=".jsonl")
    os.close(fd)
    os.environ[EVENTS_VAR] = path
    # Registered before convfix.patch(), so it runs after convfix's own exit summary.
    atexit.register(_remove, path)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def original(function: Any) -> Any:
    """TensorFlow's function behind a convfix wrapper (the function itself if unwrapped)."""
    from convfix.integrations.entry import MARK

    return getattr(function, MARK, function)


@contextlib.contextmanager
def unpatched(*targets: tuple[str, str]) -> Iterator[None]:
    """Put TensorFlow's originals back at ``(module, attribute)`` for the block.

    ``convfix.override(mode="off")`` would still run each wrapper's pass-through, and calling
    ``wrapper.__convfix_original__`` still reaches the wrapped generated op beneath it: a
    baseline is only clean with every layer a call crosses swapped back.
    """
    saved: list[tuple[ModuleType, str, Any]] = []
    try:
        for module_name, attribute in targets:
            module = sys.modules[module_name]
            current = getattr(module, attribute)
            saved.append((module, attribute, current))
            setattr(module, attribute, original(current))
        yield
    finally:
        for module, attribute, current in reversed(saved):
            setattr(module, attribute, current)


def environment() -> dict[str, str]:
    """What a reader needs to judge the numbers: versions, CPUs, oneDNN, convfix's mode."""
    tf = prepare()
    from convfix import runtime

    try:
        from tensorflow.python.util import _pywrap_util_port

        onednn = str(bool(_pywrap_util_port.IsMklEnabled()))
    except Exception:  # a build without the probe: say so rather than guess
        onednn = "unknown"
    opts = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")  # reported, never changed
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return {
        "tensorflow": tf.__version__,
        "python": sys.version.split()[0],
        "cpus": f"{os.cpu_count()} (usable {len(os.sched_getaffinity(0))})",
        "onednn": f"{onednn} (TF_ENABLE_ONEDNN_OPTS={opts})",
        "convfix_mode": runtime.config().mode,
        "events": os.environ.get(EVENTS_VAR, ""),
        "load_average": load,
    }


def takes_fast_path(module_name: str, attribute: str, run: Callable[[], object]) -> str | None:
    """Which way the calls ``run`` makes to the wrapper at ``module_name.attribute`` go:
    "express" (the generated lane's quick check clears every one), "fast check" (the
    general path's check clears every one), "pipeline" (some take the full pipeline); None
    if no call was seen or convfix's tables cannot tell.

    A ratio alone cannot say whether a healthy call took the fast path or the full pipeline;
    this can, by evaluating checks built the way convfix builds the wrapper's own.
    """
    try:
        from convfix.integrations import express
        from convfix.integrations import tensorflow as tf_integration
        from convfix.integrations.entry import FilterShapes, make_fast_check
        from convfix.memory import Memory

        spec = tf_integration.ENTRY_MODULES[module_name][attribute]
        module = sys.modules[module_name]
        wrapper = getattr(module, attribute)
        caps = tf_integration.caps
        if caps is None or original(wrapper) is wrapper:
            return None
        fast = make_fast_check(spec, original(wrapper), caps, FilterShapes(caps), Memory())
        lane = getattr(getattr(wrapper, "__code__", None), "co_filename", "")
        # The express lane's code is generated (integrations/express.py): its quick check,
        # built again the way the lane's was.
        quick = (
            express.make_quick_check(spec, caps, Memory())
            if lane.startswith("<convfix express")
            else None
        )
        signature = inspect.signature(original(wrapper))
    except Exception:  # convfix's internals moved: say "unknown" rather than fail the run
        return None
    verdicts: list[str] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        given = bound.arguments
        as_lane = (given[spec.input_params[0]], given[spec.filter_params[0]])
        strides = given.get(spec.strides_param or "strides")
        if quick is not None and quick(*as_lane, given[spec.padding_param], strides):
            verdicts.append("express")
        else:
            verdicts.append("fast check" if fast(tuple(given.values()), {}) else "pipeline")
        return wrapper(*args, **kwargs)

    setattr(module, attribute, spy)
    try:
        run()
    finally:
        setattr(module, attribute, wrapper)
    if not verdicts:
        return None
    return max(verdicts, key=("express", "fast check", "pipeline").index)


def fast_path_note(verdict: str | None) -> str:
    if verdict is None:
        return "path: unknown"
    if verdict == "pipeline":
        return "path: NOT FAST, calls run the full pipeline"
    return f"path: {verdict}"
