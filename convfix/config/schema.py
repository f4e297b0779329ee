"""The shape of convfix's configuration: frozen msgspec structs, one per TOML table.

``Config()`` is the built-in defaults, identical to ``convfix/presets/default.toml``.
Constraints msgspec can state (ranges, literals) live on the fields; the rest are checked by
:func:`misfit` after decoding. Import these names from ``convfix.config``.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, field

Mode = Literal["fix", "warn", "strict", "off"]
"""What to do with a bad call: repair it and report (``fix``), report only (``warn``),
refuse it with ConvFixError (``strict``), or leave it alone (``off``)."""

POLICY_NAMES: tuple[str, ...] = (
    "dtype",
    "padding",
    "batch_dim",
    "layout",
    "data_format",
    "split_batch",
    "device_fallback",
)
"""Every policy, in the order of ``[policies]``."""

DTYPE_NAMES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64", "int32")
"""Dtypes ``policies.dtype.target`` may name outright."""

_DTYPE_TARGETS = frozenset(("policy", "promote", "input", "filter", *DTYPE_NAMES))
_PATH_PLACEHOLDERS = frozenset(("pid", "task", "task_type"))

# Fields whose rules misfit() checks after decoding: these words replace the schema-derived ones,
# so a wrong type and a wrong value on the same key read alike.
EXPECTED: Mapping[str, str] = {
    "policies.dtype.target": (
        f"policy, promote, input, filter or a dtype ({', '.join(DTYPE_NAMES)})"
    ),
    "events.path": (
        "stderr, stdout or a file path with no placeholders but {pid}, {task} and {task_type}"
    ),
    "events.summary_interval": "a finite number >= 0",
}


class DtypePolicyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[policies.dtype]``: input and filter of different dtypes."""

    mode: Mode | None = None
    target: str = "policy"
    """Cast both to ``policy`` (the compute dtype of the Keras layer making the call, else of
    Keras' global dtype policy; float32 when no Keras is loaded), ``promote`` (the wider of
    the two), ``input``, ``filter``, or one of DTYPE_NAMES."""
    output: Literal["compute", "input"] = "compute"
    """Return the result in the dtype computed in, or cast back to the input's."""


class PaddingPolicyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[policies.padding]``: padding the op cannot take."""

    mode: Mode | None = None
    strategy: Literal["same", "pad"] = "pad"
    """Repair by zero-padding only the dimensions too small for the kernel (``pad``: the
    others keep the caller's padding and size), or by switching to ``SAME`` padding."""


class BatchDimPolicyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[policies.batch_dim]``: an input missing its batch dimension."""

    mode: Mode | None = None


class LayoutPolicyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[policies.layout]``: an input in the other layout; off unless turned on."""

    mode: Mode | None = None


class DataFormatPolicyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[policies.data_format]``: a channels-first call on a CPU without channels-first
    kernels (TensorFlow without oneDNN); on by default: the caller named the layout."""

    mode: Mode | None = None


class SplitBatchPolicyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[policies.split_batch]``: out of memory, so run the batch in chunks."""

    mode: Mode | None = None
    factor: Annotated[float, Meta(gt=0, lt=1)] = 0.5
    """Each retry runs chunks this fraction of the last size."""
    max_retries: Annotated[int, Meta(ge=1)] = 8
    min_chunk: Annotated[int, Meta(ge=1)] = 1
    """Give up rather than split below this many examples."""
    gc: bool = True
    """Collect the young garbage generations before a retry, so tensors the failed attempt
    left in reference cycles really are freed (< 1 ms; a full collection costs ~300 ms)."""
    grow_back_after: Annotated[int, Meta(ge=0)] = 100
    """Try a larger chunk again after this many successes; 0 never grows back."""
    max_table_size: Annotated[int, Meta(ge=1)] = 1024
    """How many learned chunk sizes to remember."""
    on_cpu: bool = False
    """Split out-of-memory errors of the CPU too. Off: on the CPU a convolution's memory
    is mostly its output, which the chunks need as well, and TensorFlow's CPU kernels may
    crash (SIGSEGV) when a retry's allocation outside its allocator fails, where the error
    itself would have been clean."""
    max_batch_bytes: Annotated[int, Meta(gt=0)] | None = None
    """Split before running when a call's estimated bytes (input + output + workspace)
    exceed this, in tf.function too; unset: wait for an out-of-memory error."""


class DeviceFallbackPolicyConfig(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """``[policies.device_fallback]``: cuDNN failed to start, or the batch could not fit."""

    mode: Mode | None = None
    device: Annotated[str, Meta(min_length=1)] = "/CPU:0"


class PoliciesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[policies]``: one table per policy, named as in POLICY_NAMES."""

    dtype: DtypePolicyConfig = field(default_factory=DtypePolicyConfig)
    padding: PaddingPolicyConfig = field(default_factory=PaddingPolicyConfig)
    batch_dim: BatchDimPolicyConfig = field(default_factory=BatchDimPolicyConfig)
    layout: LayoutPolicyConfig = field(default_factory=LayoutPolicyConfig)
    data_format: DataFormatPolicyConfig = field(default_factory=DataFormatPolicyConfig)
    split_batch: SplitBatchPolicyConfig = field(default_factory=SplitBatchPolicyConfig)
    device_fallback: DeviceFallbackPolicyConfig = field(default_factory=DeviceFallbackPolicyConfig)


class EventsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[events]``: where convfix reports what it did."""

    path: Annotated[str, Meta(min_length=1)] = "stderr"
    """``stderr``, ``stdout`` or a file path, formatted with ``str.format(pid=..., task=...,
    task_type=...)``: ``{pid}``, ``{task}`` (the tf.distribute task index) and
    ``{task_type}`` (``worker``, ``chief``...) are the only placeholders, ``{{`` and ``}}``
    write braces."""
    format: Literal["json", "console"] = "json"
    sink: Literal["convfix", "logging", "structlog"] = "convfix"
    summary_interval: Annotated[float, Meta(ge=0)] = 60.0
    """Seconds between periodic summaries; 0 turns them off."""


class GpuConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[gpu]``: process-wide GPU settings, applied before TensorFlow first uses a GPU."""

    memory_growth: bool = False


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole configuration; ``Config()`` is the built-in defaults."""

    extends: str | None = None
    """A preset to start from, by name."""
    mode: Mode = "fix"
    events: EventsConfig = field(default_factory=EventsConfig)
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)

    def policy_mode(self, name: str) -> Mode:
        """The mode policy ``name`` runs in.

        Top-level ``off`` turns everything off (the kill switch); otherwise a policy's own
        mode wins; a policy without one follows the top-level mode, except ``layout``, which
        stays off until a file or preset turns it on: telling layouts apart is a guess.
        """
        if name not in POLICY_NAMES:
            raise ValueError(f"unknown policy {name!r} (policies: {', '.join(POLICY_NAMES)})")
        if self.mode == "off":
            return "off"
        own: Mode | None = getattr(self.policies, name).mode
        if own is not None:
            return own
        return "off" if name == "layout" else self.mode


def misfit(config: Config) -> tuple[str, object] | None:
    """The first value msgspec's constraints cannot express that is wrong, with its key."""
    if config.policies.dtype.target not in _DTYPE_TARGETS:
        return "policies.dtype.target", config.policies.dtype.target
    if not _placeholders_ok(config.events.path):
        return "events.path", config.events.path
    if not math.isfinite(config.events.summary_interval):
        return "events.summary_interval", config.events.summary_interval
    return None


def _placeholders_ok(path: str) -> bool:
    try:
        parts = list(string.Formatter().parse(path))
    except ValueError:  # an unmatched "{" or "}"
        return False
    # Bare {pid}, {task} and {task_type} only: a format spec like {task:d} would fail later,
    # when the events file is opened, far from the config that caused it.
    return all(
        name is None or (name in _PATH_PLACEHOLDERS and not spec and conversion is None)
        for _, name, spec, conversion in parts
    )
