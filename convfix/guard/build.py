"""The build a call runs on, and the TensorFlow bugs each build has (as far as measured).

The guard's rules (guard/rules.py) depend on the build only through ``Build.has(bug)``;
which bugs a build has is resolved once, when TensorFlow is patched, from the table
``BUGS`` below, keyed by what each bug depends on: the TensorFlow version range it was
measured in, whether oneDNN answers the call, and the device kind. Nothing here reads the
process: a Build is plain data, so every rule can be tested for any build on any machine.

A bug stays on for versions newer than the newest measured (``until=None``) unless a
sweep of its own trigger region on a newer version found it gone: a sample cannot prove
a bug absent, an exhaustive sweep of the region where it lives can.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Version = tuple[int, int]
Device = Literal["cpu", "gpu"]


@dataclass(frozen=True, slots=True)
class Bug:
    """One measured TensorFlow bug: where it lives (``onednn``: only with oneDNN's kernels
    (True), only without (False), either (None); the versions ``since`` to ``until``
    inclusive, ``until=None`` meaning every newer one too; the device kind) and the builds
    it was measured on (the README's hazard table shows them)."""

    name: str
    onednn: bool | None
    measured: str
    since: Version = (2, 12)
    until: Version | None = None
    device: Device = "cpu"

    def present(self, build: Build) -> bool:
        if self.onednn is not None and self.onednn != build.onednn:
            return False
        if self.device == "gpu" and not build.gpu:
            return False
        if build.tensorflow < self.since:
            return False
        return self.until is None or build.tensorflow <= self.until


_KEPT = "kept for every version: not proven absent on any"

BUGS: tuple[Bug, ...] = (
    Bug("rank_aborts", True, f"TF 2.21, oneDNN on (aborts); {_KEPT}"),
    Bug("empty_input_misshaped", True, f"TF 2.21, oneDNN on; {_KEPT}"),
    Bug("kernel_past_valid_input_misshaped", True, f"TF 2.21, oneDNN on; {_KEPT}"),
    Bug("strided_dilation_wrong", None, f"TF 2.21, oneDNN on and off; {_KEPT}"),
    Bug("conv3d_dilated_heap_corruption", True, f"TF 2.21, oneDNN on; {_KEPT}"),
    Bug("conv3d_shifted_same_windows", None, f"TF 2.21, Conv3D outside oneDNN; {_KEPT}"),
    Bug("single_window_one_channel", True, f"TF 2.21, oneDNN 3.7 on AVX-512; {_KEPT}"),
    Bug("single_window_bfloat16", True, f"TF 2.21, oneDNN on AVX-512, bfloat16; {_KEPT}"),
    Bug("empty_conv3d_transpose_crash", None, f"TF 2.21, oneDNN on and off; {_KEPT}"),
    Bug("impossible_transpose_output_answered", True, f"TF 2.21, oneDNN on; {_KEPT}"),
    # Not a wrong answer: a missing kernel. TensorFlow's own CPU kernels take channels-last
    # only (UnimplementedError for conv1d/conv2d/depthwise/separable, InvalidArgumentError
    # for conv3d and the transposes); oneDNN's and XLA's take both.
    Bug(
        "no_channels_first_cpu_kernels",
        False,
        "TF 2.12, 2.15 and 2.21, oneDNN off: every channels-first op raises; oneDNN on: "
        f"every one answers; {_KEPT}",
    ),
    Bug(
        "padding_only_window_crash",
        True,
        "TF 2.16-2.19, oneDNN on (SIGSEGV); an exhaustive sweep of its region (18,510 calls) "
        "found none on 2.12-2.15, 2.20, 2.21, nor with oneDNN off",
        since=(2, 16),
        until=(2, 19),
    ),
)


@dataclass(frozen=True, slots=True)
class Build:
    """What the rules may depend on: TensorFlow's (major, minor), oneDNN on or off, and
    whether GPUs are visible (the CPU is always there: CPU bugs apply either way, since
    a call's device is only known when it is placed). ``bugs`` is resolved from ``BUGS``
    when the Build is made, so a rule's check is one set lookup."""

    tensorflow: Version
    onednn: bool
    gpu: bool = False
    bugs: frozenset[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        present = frozenset(bug.name for bug in BUGS if bug.present(self))
        object.__setattr__(self, "bugs", present)

    def has(self, bug: str) -> bool:
        return bug in self.bugs


OLDEST_MEASURED: Version = (2, 12)
NEWEST_MEASURED: Version = (2, 21)


def build_of(version: str, onednn: bool, gpu: bool = False) -> Build:
    """A Build from TensorFlow's version string ("2.16.2", "2.21.0-rc1"). A version outside
    the measured range counts as its nearest end (every rule of the oldest or the newest
    build applies), and one that cannot be read as the newest."""
    parts = version.split(".")
    try:
        found = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        found = NEWEST_MEASURED
    return Build(max(OLDEST_MEASURED, found), onednn, gpu)
