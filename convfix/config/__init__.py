"""convfix's configuration: typed, frozen, decoded once from TOML.

Settings come from these sources, each overriding the ones before it:

1. built-in defaults: exactly the ``default`` preset (``convfix/presets/default.toml``);
2. a preset, named by ``extends = "<name>"`` (``default``, ``observe``, ``strict``,
   ``aggressive``); a preset may itself extend another;
3. the config file: the ``path`` argument, else the file named by ``CONVFIX_CONFIG``, else
   ``./convfix.toml``, else the ``[tool.convfix]`` table of ``./pyproject.toml`` (a
   pyproject.toml without that table is ignored);
4. environment overrides, one key each:

   ``CONVFIX_MODE``
       the top-level ``mode``: ``fix``, ``warn``, ``strict`` or ``off``. ``off`` is the kill
       switch: every policy is off and no config file is read at all, so it works without
       editing a file and even when the file is broken.
   ``CONVFIX_EVENTS_PATH``
       ``events.path``: ``stderr``, ``stdout`` or a file path (``{pid}``, ``{task}`` allowed).
   ``CONVFIX_EVENTS_FORMAT``
       ``events.format``: ``json`` or ``console``.

   An empty value counts as unset.

Tables merge key by key, but every source is validated on its own first, so an error names
the file (or preset, or variable) it came from::

    ConfigError: convfix.toml: policies.split_batch.factor: expected a number in (0, 1), got 2

Loading returns a complete :class:`Config` or raises :class:`~convfix.errors.ConfigError`;
nothing is half applied. This module is imported on the way to ``import convfix.auto``, so it
imports nothing heavy (and never TensorFlow).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from convfix.config.explain import explain, show
from convfix.config.schema import (
    DTYPE_NAMES,
    EXPECTED,
    POLICY_NAMES,
    BatchDimPolicyConfig,
    Config,
    DataFormatPolicyConfig,
    DeviceFallbackPolicyConfig,
    DtypePolicyConfig,
    EventsConfig,
    GpuConfig,
    LayoutPolicyConfig,
    Mode,
    PaddingPolicyConfig,
    PoliciesConfig,
    SplitBatchPolicyConfig,
    misfit,
)
from convfix.config.sources import Layer, env_layers, file_layer, leaves, merge, preset_layer

__all__ = [
    "DTYPE_NAMES",
    "POLICY_NAMES",
    "BatchDimPolicyConfig",
    "Config",
    "DataFormatPolicyConfig",
    "DeviceFallbackPolicyConfig",
    "DtypePolicyConfig",
    "EventsConfig",
    "GpuConfig",
    "LayoutPolicyConfig",
    "Mode",
    "PaddingPolicyConfig",
    "PoliciesConfig",
    "ResolvedConfig",
    "SplitBatchPolicyConfig",
    "apply_overrides",
    "load_config",
    "resolve_config",
]


class ResolvedConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A Config and where each of its values came from, for ``convfix config``."""

    config: Config
    file: str | None
    """The config file read, named as in error messages; None when there was none."""
    origins: Mapping[str, str]
    """Every leaf key path (``policies.dtype.target``) to ``default``, ``preset:<name>``,
    the file's name or ``env:<VARIABLE>``."""


_LEAF_KEYS = tuple(leaves(msgspec.to_builtins(Config())))


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """Load the configuration; see the module docstring for where it comes from.

    ``env`` defaults to ``os.environ`` and ``cwd`` (where files are discovered, and what a
    relative path is relative to) to the working directory. Raises ConfigError.
    """
    return resolve_config(path, env=env, cwd=cwd).config


def resolve_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> ResolvedConfig:
    """Like load_config, but also say which file was read and where each value came from."""
    environ = os.environ if env is None else env
    overrides = env_layers(environ)
    for layer in overrides:
        _validate(layer)
    # The kill switch must work even when the file is what is broken.
    killed = any(layer.raw.get("mode") == "off" for layer in overrides)
    base = None if cwd is None else os.fspath(cwd)
    file = None if killed else file_layer(path, environ, base)
    layers = [*_preset_chain(file), file, *overrides] if file is not None else overrides
    merged: dict[str, Any] = {}
    origins = dict.fromkeys(_LEAF_KEYS, "default")
    for layer in layers:
        merged = merge(merged, layer.raw)
        origins.update(dict.fromkeys(leaves(layer.raw), layer.origin))
    return ResolvedConfig(
        config=msgspec.convert(merged, Config),
        file=None if file is None else file.origin,
        origins=MappingProxyType(origins),
    )


def apply_overrides(
    config: Config,
    *,
    mode: str | None = None,
    policies: Mapping[str, str | Mapping[str, object]] | None = None,
) -> Config:
    """A copy of ``config`` with overrides applied, for ``convfix.override(...)``.

    ``policies={"dtype": "strict"}`` sets that policy's mode; ``policies={"dtype": {"mode":
    "fix", "target": "input"}}`` sets its keys. Checked like a file whose name is
    ``override``, so a bad value raises ConfigError and ``config`` is never changed.
    """
    raw: dict[str, Any] = {}
    if mode is not None:
        raw["mode"] = mode
    if policies is not None:
        raw["policies"] = {name: _policy_table(value) for name, value in policies.items()}
    _validate(Layer(origin="override", where="override", raw=raw))
    return msgspec.convert(merge(msgspec.to_builtins(config), raw), Config)


def _policy_table(value: object) -> object:
    if isinstance(value, str):
        return {"mode": value}
    # msgspec decodes dicts, not any Mapping; anything else is left for it to refuse by name.
    return dict(value) if isinstance(value, Mapping) else value


def _validate(layer: Layer) -> Config:
    try:
        config = msgspec.convert(layer.raw, Config)
    except msgspec.ValidationError as exc:
        path, problem = explain(exc, Config, layer.raw, EXPECTED)
        raise layer.error(path, problem) from None
    wrong = misfit(config)
    if wrong is not None:
        path, value = wrong
        raise layer.error(path, f"expected {EXPECTED[path]}, got {show(value)}")
    return config


def _preset_chain(file: Layer) -> list[Layer]:
    """The presets ``file`` extends, base first; the file and each preset validated."""
    _validate(file)
    chain: list[Layer] = []
    seen: list[str] = []
    referrer = file
    name = file.raw.get("extends")
    while name is not None:
        if name in seen:
            raise referrer.error(
                "extends", f"presets extend each other in a cycle: {' -> '.join([*seen, name])}"
            )
        seen.append(name)
        referrer = preset_layer(name, referrer)
        _validate(referrer)
        chain.append(referrer)
        name = referrer.raw.get("extends")
    return chain[::-1]
