"""What ``convfix doctor`` looks at: TensorFlow in a child process, CUDA libraries on disk.

Everything that touches TensorFlow runs in one fresh interpreter, because a broken CUDA
set-up can abort or hang the process that imports TensorFlow or first runs a convolution,
and the doctor must survive to say so. The child reports in stages (imported, facts, the
convolution) so a crash is placed exactly. It runs with the caller's environment untouched
and without convfix: the question is what TensorFlow alone does here.
"""

from __future__ import annotations

import ctypes.util
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MARKER = "CONVFIX_DOCTOR "
TIMEOUT = 120.0  # seconds: importing TensorFlow and a first cuDNN convolution can be slow

CHILD = f"""\
import json, time
def report(stage, **fields):
    print({MARKER!r} + json.dumps({{"stage": stage, **fields}}, default=str), flush=True)
start = time.monotonic()
import tensorflow as tf
report("imported", version=tf.__version__, seconds=time.monotonic() - start)
try:
    build = dict(tf.sysconfig.get_build_info())
except Exception as error:
    build = {{"error": repr(error)}}
try:
    from tensorflow.python.util import _pywrap_util_port
    onednn = bool(_pywrap_util_port.IsMklEnabled())
except Exception:
    onednn = None
gpus = [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
report("facts", build=build, onednn=onednn, gpus=gpus)
start = time.monotonic()
y = tf.nn.conv2d(tf.ones([1, 4, 4, 1]), tf.ones([1, 1, 1, 1]), 1, "SAME")
report("conv", shape=list(y.shape), device=y.device, seconds=time.monotonic() - start)
"""


@dataclass
class Probe:
    """What the child reported, stage by stage, and how it ended."""

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    returncode: int | None = None
    """None when it timed out; negative: killed by that signal."""
    stderr_tail: str = ""
    seconds: float = 0.0

    @property
    def ended(self) -> str:
        """How the child ended, in words."""
        if self.returncode is None:
            return f"no answer in {TIMEOUT:.0f} s (killed)"
        if self.returncode < 0:
            name = signal.Signals(-self.returncode).name
            return f"killed by {name} (exit status {128 - self.returncode})"
        return f"exit status {self.returncode}"


def run_probe(progress: Callable[[float], None]) -> Probe:
    """Run the child, calling ``progress(seconds)`` while it works."""
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    probe = Probe()
    while True:
        progress(time.monotonic() - started)
        try:
            out, err = child.communicate(timeout=0.25)
            probe.returncode = child.returncode
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() - started > TIMEOUT:
                child.kill()
                out, err = child.communicate()
                break
    probe.seconds = time.monotonic() - started
    for line in out.splitlines():
        if line.startswith(MARKER):
            report = json.loads(line[len(MARKER) :])
            probe.stages[report.pop("stage")] = report
    probe.stderr_tail = _meaningful_tail(err)
    return probe


def _meaningful_tail(stderr: str) -> str:
    # TensorFlow logs a page of start-up notices; the error that matters is the last line
    # that says one, or failing that, the last line.
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r"Error|Check failed|Failed|error:", line):
            return line[:300]
    return lines[-1][:300] if lines else ""


@dataclass(frozen=True)
class Library:
    """A CUDA runtime or cuDNN library found on this machine."""

    name: str
    """``cudart`` or ``cudnn``."""
    file: str
    """The file or soname, e.g. ``libcudnn.so.9``."""
    where: str
    """How it was found: ``ld cache``, ``LD_LIBRARY_PATH``, ``pip package``, ``find_library``."""
    major: int


# libcudnn.so.9 or libcudnn.so.9.1.0, not libcudnn_ops.so.9; an unversioned libcudnn.so is a
# build-time link, while TensorFlow loads libcudnn.so.N.
_SONAME = re.compile(r"lib(?P<name>cudart|cudnn)\.so\.(?P<major>\d+)(\.\d+)*")


def find_libraries(env: Mapping[str, str]) -> list[Library]:
    """CUDA runtime and cuDNN libraries the dynamic loader (or TensorFlow's pip extras)
    could give TensorFlow, deduplicated by file."""
    found: dict[str, Library] = {}

    def add(path: str, where: str) -> None:
        match = _SONAME.fullmatch(os.path.basename(path))
        if match and path not in found:
            found[path] = Library(match.group("name"), path, where, int(match.group("major")))

    for directory in filter(None, env.get("LD_LIBRARY_PATH", "").split(os.pathsep)):
        for path in glob.glob(os.path.join(directory, "lib*.so*")):
            add(path, "LD_LIBRARY_PATH")
    for path in _ld_cache():
        add(path, "ld cache")
    for entry in sys.path:
        # tensorflow[and-cuda] brings CUDA as pip packages (nvidia-*-cu12) and loads them
        # from site-packages/nvidia/*/lib, outside the loader's search path.
        for path in glob.glob(os.path.join(entry, "nvidia", "*", "lib", "lib*.so*")):
            add(path, "pip package")
    for name in ("cudart", "cudnn"):
        soname = ctypes.util.find_library(name)  # a soname only: new if not seen by file
        if soname and all(os.path.basename(path) != soname for path in found):
            add(soname, "find_library")
    return sorted(found.values(), key=lambda lib: (lib.name, lib.file))


def _ld_cache() -> list[str]:
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None
    )
    if ldconfig is None:
        return []
    try:
        out = subprocess.run(
            [ldconfig, "-p"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.rsplit("=>", 1)[1].strip() for line in out.splitlines() if "=>" in line]
