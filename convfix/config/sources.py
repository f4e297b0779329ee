"""Where settings come from: a file, the presets it extends, the environment.

Each source becomes a :class:`Layer`, a raw TOML table plus the names to blame it by.
Nothing here knows the schema: ``convfix.config`` validates every layer on its own, then
merges them, so an error always names the one source it came from.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from convfix.config.explain import show
from convfix.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

CONFIG_VAR = "CONVFIX_CONFIG"
"""Names the config file, ahead of ``./convfix.toml`` and ``./pyproject.toml``."""

ENV_OVERRIDES: Mapping[str, tuple[str, ...]] = {
    "CONVFIX_MODE": ("mode",),
    "CONVFIX_EVENTS_PATH": ("events", "path"),
    "CONVFIX_EVENTS_FORMAT": ("events", "format"),
}
"""Environment variables that override one key each, and the key they override."""

PYPROJECT = "pyproject.toml"
CONVFIX_TOML = "convfix.toml"
_PYPROJECT_KEY = "tool.convfix"


class Layer(NamedTuple):
    """One source of settings: a raw table, where it came from, and how to name its keys."""

    origin: str
    """Reported in ``ResolvedConfig.origins``: a file name, ``preset:<name>``, ``env:<VAR>``."""
    where: str
    """Starts an error message: a file name, ``preset:<name>``, ``environment``, ``override``."""
    raw: dict[str, Any]
    key_prefix: str = ""
    """Put before key paths in errors: ``tool.convfix.`` inside pyproject.toml."""
    env_var: str | None = None
    """An environment layer's keys are named by the variable a user actually set."""

    def error(self, path: str, problem: str) -> ConfigError:
        """A ConfigError for the key at ``path`` (dotted, relative to the config root)."""
        key = self.env_var or self.key_prefix + path
        return ConfigError(f"{self.where}: {key}: {problem}")


def file_layer(
    path: str | os.PathLike[str] | None, env: Mapping[str, str], cwd: str | None
) -> Layer | None:
    """The config file's layer: ``path``, else ``$CONVFIX_CONFIG``, else discovered in ``cwd``.

    File names are kept as they would be opened from the process's working directory (as
    given, or joined onto ``cwd``), and that same name is used in errors and origins.
    """
    if path is not None:
        return _read_layer(_at(cwd, os.fspath(path)), via=None)
    named = env.get(CONFIG_VAR, "")
    if named:
        return _read_layer(_at(cwd, named), via=CONFIG_VAR)
    local = _at(cwd, CONVFIX_TOML)
    if os.path.exists(local):
        return _read_layer(local, via=None)
    pyproject = _at(cwd, PYPROJECT)
    if os.path.exists(pyproject):
        table = _pyproject_table(pyproject, _read_toml(pyproject, via=None))
        # Most pyproject.toml files are not about convfix: without the table, look no further.
        if table is not None:
            return Layer(pyproject, pyproject, table, key_prefix=f"{_PYPROJECT_KEY}.")
    return None


def env_layers(env: Mapping[str, str]) -> list[Layer]:
    """One layer per override variable that is set; an empty value counts as unset."""
    layers = []
    for var, path in ENV_OVERRIDES.items():
        value: Any = env.get(var, "")
        if not value:
            continue
        for key in reversed(path):
            value = {key: value}
        layers.append(Layer(origin=f"env:{var}", where="environment", raw=value, env_var=var))
    return layers


def preset_names() -> list[str]:
    """The presets shipped in ``convfix/presets``, sorted."""
    suffix = ".toml"
    names = (entry.name for entry in _preset_dir().iterdir())
    return sorted(name[: -len(suffix)] for name in names if name.endswith(suffix))


def preset_layer(name: str, referrer: Layer) -> Layer:
    """The layer of preset ``name``, which ``referrer`` asked for with ``extends``."""
    if any(mark in name for mark in ("/", "\\", ".toml")):
        # Presets are names, never paths: a path would make "which file won" a puzzle.
        raise referrer.error("extends", f"expected a preset name, not a path, got {name!r}")
    available = preset_names()
    if name not in available:
        listed = ", ".join(available)
        raise referrer.error("extends", f"expected one of the presets {listed}, got {name!r}")
    where = f"preset:{name}"
    text = _preset_dir().joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return Layer(origin=where, where=where, raw=_parse(text, where))


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two TOML tables: ``top`` wins, tables merge key by key."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = merge(below, value)
        else:
            merged[key] = value
    return merged


def leaves(raw: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the non-table values in ``raw``."""
    for key, value in raw.items():
        if isinstance(value, Mapping):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _preset_dir() -> Traversable:
    # Imported here, not at the top: importlib.resources costs more than the rest of this
    # module, and only a config that extends a preset needs it.
    from importlib.resources import files

    return files("convfix").joinpath("presets")


def _at(cwd: str | None, name: str) -> str:
    return name if cwd is None or os.path.isabs(name) else os.path.join(cwd, name)


def _read_layer(name: str, via: str | None) -> Layer:
    document = _read_toml(name, via=via)
    if os.path.basename(name) != PYPROJECT:
        return Layer(origin=name, where=name, raw=document)
    # Named outright, a pyproject.toml must hold the table: ignoring it would hide a typo.
    table = _pyproject_table(name, document)
    if table is None:
        raise ConfigError(f"{name}: {_PYPROJECT_KEY}: expected a table, got nothing")
    return Layer(origin=name, where=name, raw=table, key_prefix=f"{_PYPROJECT_KEY}.")


def _pyproject_table(name: str, document: dict[str, Any]) -> dict[str, Any] | None:
    tool = document.get("tool")
    table = tool.get("convfix") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{name}: {_PYPROJECT_KEY}: expected a table, got {show(table)}")
    return table


def _read_toml(name: str, via: str | None) -> dict[str, Any]:
    try:
        with open(name, "rb") as file:
            data = file.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if via is not None:
            message = f"environment: {via}: expected a readable file, got {name!r} ({reason})"
            raise ConfigError(message) from None
        raise ConfigError(f"{name}: cannot read file: {reason}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: invalid TOML: not UTF-8 text ({exc.reason})") from None
    return _parse(text, name)


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        table: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    return table
