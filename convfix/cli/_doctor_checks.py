"""The checks of ``convfix doctor``: facts in, findings (status, found, remedy) out.

Pure functions of what :mod:`convfix.cli._doctor_probe` gathered, so each verdict can be
read (and tested) without a GPU. Remedies name the exact variable, call or package.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from convfix.cli._doctor_probe import Library, Probe

Status = Literal["ok", "warn", "fail", "info"]

_GROWTH = "TF_FORCE_GPU_ALLOW_GROWTH"
_ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
_GROWTH_REMEDY = (
    f"export {_GROWTH}=true, or call tf.config.experimental.set_memory_growth(gpu, True) for "
    "each GPU before TensorFlow first uses one (later raises RuntimeError)"
)
_NO_GPU = (
    "no GPU: the cuDNN error cannot occur here. On a GPU machine check the CUDA/cuDNN "
    f"versions below against TensorFlow's build, {_GROWTH}=true, and other processes on the "
    "GPU (nvidia-smi)"
)


@dataclass(frozen=True)
class Finding:
    """One check's verdict."""

    check: str
    status: Status
    found: str
    remedy: str | None = None


def examine(
    probe: Probe | None, libraries: Sequence[Library], env: Mapping[str, str]
) -> list[Finding]:
    """Every finding, in reading order; ``probe`` is None when TensorFlow is not installed.
    A stage the child never reached is reported as unknown, not guessed."""
    python = Finding(
        "Python", "info", f"{sys.version.split()[0]} on {platform.platform()} ({sys.executable})"
    )
    if probe is None:
        missing = Finding(
            "TensorFlow",
            "fail",
            "not installed in this Python",
            "pip install tensorflow (or tensorflow-cpu; 'tensorflow[and-cuda]' for NVIDIA GPUs)",
        )
        return [python, missing, _libraries(None, libraries), _convfix_config()]
    facts = probe.stages.get("facts")
    build: dict[str, Any] | None = facts.get("build") if facts else None
    gpus: list[str] = list(facts.get("gpus", [])) if facts else []
    return [
        python,
        _tensorflow(probe),
        _build(build),
        _gpus(build, gpus, facts is not None),
        _libraries(build, libraries),
        _memory_growth(gpus, env),
        _onednn(facts.get("onednn") if facts else None, env),
        _convfix_config(),
        _smoke(probe),
    ]


def _tensorflow(probe: Probe) -> Finding:
    imported = probe.stages.get("imported")
    if imported is None:
        tail = f": {probe.stderr_tail}" if probe.stderr_tail else ""
        return Finding(
            "TensorFlow",
            "fail",
            f"importing TensorFlow in a fresh process failed ({probe.ended}){tail}",
            "reinstall TensorFlow (pip install tensorflow, or 'tensorflow[and-cuda]' for "
            "NVIDIA GPUs), or run `python -c 'import tensorflow'` to see the whole error",
        )
    seconds = float(imported.get("seconds", 0.0))
    return Finding("TensorFlow", "ok", f"{imported['version']}, imported in {seconds:.1f} s")


def _cuda_build(build: Mapping[str, Any] | None) -> bool:
    return bool(build and (build.get("is_cuda_build") or build.get("cuda_version")))


def _build(build: Mapping[str, Any] | None) -> Finding:
    if build is None:
        return Finding("build", "info", "unknown: the TensorFlow child stopped before telling")
    if "error" in build:
        return Finding("build", "warn", f"tf.sysconfig.get_build_info() failed: {build['error']}")
    if not _cuda_build(build):
        rocm = " (a ROCm build)" if build.get("is_rocm_build") else ""
        return Finding(
            "build",
            "info",
            f"CPU-only build{rocm}: get_build_info() names no CUDA or cuDNN version "
            "(is_cuda_build false), so this TensorFlow never loads cuDNN",
        )
    cuda, cudnn = build.get("cuda_version", "?"), build.get("cudnn_version", "?")
    return Finding("build", "ok", f"CUDA build for CUDA {cuda}, cuDNN {cudnn}")


def _gpus(build: Mapping[str, Any] | None, gpus: Sequence[str], known: bool) -> Finding:
    if not known:
        return Finding("GPUs", "info", "unknown: the TensorFlow child stopped before telling")
    if gpus:
        return Finding("GPUs", "ok", f"{len(gpus)} visible: {', '.join(gpus)}")
    if _cuda_build(build):
        return Finding(
            "GPUs",
            "warn",
            "a CUDA build, but TensorFlow sees no GPU",
            "check nvidia-smi, the driver and CUDA_VISIBLE_DEVICES; with TF_CPP_MIN_LOG_LEVEL=0 "
            "TensorFlow logs which CUDA library it could not load",
        )
    return Finding("GPUs", "info", _NO_GPU)


def _libraries(build: Mapping[str, Any] | None, libraries: Sequence[Library]) -> Finding:
    listed = ", ".join(
        f"{os.path.basename(lib.file)} ({lib.where}: {lib.file})" for lib in libraries
    )
    if not _cuda_build(build):
        text = listed or "no libcudart or libcudnn found"
        return Finding("CUDA libraries", "info", f"{text}; a CPU-only build does not load them")
    missing = []
    for name, key in (("cudart", "cuda_version"), ("cudnn", "cudnn_version")):
        wanted = _major(build.get(key) if build else None)
        majors = {lib.major for lib in libraries if lib.name == name}
        if wanted is not None and wanted not in majors:
            have = ", ".join(str(m) for m in sorted(majors)) or "none"
            missing.append(f"lib{name}.so.{wanted} (found: {have})")
    if not missing:
        return Finding("CUDA libraries", "ok", listed or "found")
    return Finding(
        "CUDA libraries",
        "warn",
        f"TensorFlow's build expects {' and '.join(missing)}; found {listed or 'none'}",
        "pip install 'tensorflow[and-cuda]' brings matching CUDA and cuDNN, or install the "
        "versions named by tf.sysconfig.get_build_info() and put them on LD_LIBRARY_PATH",
    )


def _major(version: object) -> int | None:
    head = str(version or "").split(".")[0]
    return int(head) if head.isdigit() else None


def _memory_growth(gpus: Sequence[str], env: Mapping[str, str]) -> Finding:
    value = env.get(_GROWTH)
    shown = f"{_GROWTH}={value}" if value is not None else f"{_GROWTH} unset"
    if value is not None and value.lower() not in ("true", "false"):
        return Finding(
            "memory growth", "warn", f"{shown}: TensorFlow reads only true or false", _GROWTH_REMEDY
        )
    if not gpus:
        return Finding("memory growth", "info", f"{shown}; it matters only with a GPU")
    if value is not None and value.lower() == "true":
        return Finding("memory growth", "ok", f"{shown}: TensorFlow allocates GPU memory as needed")
    return Finding(
        "memory growth",
        "warn",
        f"{shown}: TensorFlow reserves nearly all GPU memory at start, the most common cause "
        "of the cuDNN error (unless the program sets memory growth itself)",
        _GROWTH_REMEDY,
    )


def _onednn(enabled: object, env: Mapping[str, str]) -> Finding:
    value = env.get(_ONEDNN)
    shown = f"{_ONEDNN}={value}" if value is not None else f"{_ONEDNN} unset (TensorFlow's default)"
    if enabled is None:
        return Finding("oneDNN", "info", f"{shown}; whether TensorFlow uses it is unknown")
    state = "on" if enabled else "off"
    why = (
        "bad calls can abort the process or return wrong shapes or values; convfix's guard "
        "stops them"
        if enabled
        else "bad calls mostly raise TensorFlow's own errors (convfix still crops conv3d's "
        "strided SAME windows)"
    )
    return Finding("oneDNN", "info", f"{state}: {shown}, IsMklEnabled() is {enabled}; {why}")


def _convfix_config() -> Finding:
    from convfix.config import resolve_config
    from convfix.errors import ConfigError

    try:
        resolved = resolve_config()
    except ConfigError as error:
        return Finding(
            "convfix config",
            "fail",
            f"ConfigError: {error}",
            "fix the file (`convfix config --check FILE`); CONVFIX_MODE=off runs without it",
        )
    file = resolved.file or "no file, built-in defaults"
    return Finding("convfix config", "ok", f"{file}; mode {resolved.config.mode}")


def _smoke(probe: Probe) -> Finding:
    conv = probe.stages.get("conv")
    if conv is not None and probe.returncode == 0:
        shape = tuple(conv.get("shape", []))
        where = str(conv.get("device", "")).rsplit("/", 1)[-1] or "?"
        return Finding(
            "convolution",
            "ok",
            f"tf.nn.conv2d on a [1, 4, 4, 1] input returned shape {shape} on {where} "
            f"(fresh process, {probe.seconds:.1f} s in all)",
        )
    stage = "running the convolution" if "facts" in probe.stages else "starting TensorFlow"
    tail = f": {probe.stderr_tail}" if probe.stderr_tail else ""
    cudnn = "convolution algorithm" in probe.stderr_tail or "cuDNN" in probe.stderr_tail
    remedy = (
        f"the cuDNN error itself: set {_GROWTH}=true, check the CUDA/cuDNN versions above, "
        "and that no other process holds the GPU (nvidia-smi)"
        if cudnn
        else "run the same in `python -c` with TF_CPP_MIN_LOG_LEVEL=0 to see TensorFlow's log"
    )
    return Finding(
        "convolution",
        "fail",
        f"a tiny tf.nn.conv2d in a fresh process failed while {stage} ({probe.ended}){tail}",
        remedy,
    )
