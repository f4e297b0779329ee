"""``convfix config``: the configuration convfix would run with here, and where each value
came from; ``convfix config --check FILE`` validates one file.

The configuration is resolved exactly as ``import convfix.auto`` resolves it in this
directory with this environment (``CONVFIX_CONFIG``, ``./convfix.toml``, ``[tool.convfix]``
in ``./pyproject.toml``, presets, ``CONVFIX_*`` overrides), so a bad one fails with the very
``ConfigError`` message start-up would give. Never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

import msgspec

from convfix.cli import _output
from convfix.config import POLICY_NAMES, ResolvedConfig, resolve_config
from convfix.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``convfix config``."""
    parser = subparsers.add_parser(
        "config",
        help="show the effective configuration and where each value came from",
        description="Show the configuration convfix would use here, key by key, with the "
        "source of each value: default, preset:<name>, a file, or env:<VARIABLE>.",
    )
    parser.add_argument(
        "--check",
        metavar="FILE",
        help="validate FILE as start-up would (environment overrides aside); exit 1 if bad",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document for machines")


def main(args: argparse.Namespace) -> int:
    """Run ``convfix config``; returns the exit status."""
    if args.check is not None:
        return check(args.check)
    try:
        resolved = resolve_config()
    except ConfigError as error:
        print_config_error(error)
        return 1
    if args.json:
        json.dump(as_json(resolved), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(as_text(resolved, _output.use_colour(sys.stdout))))
    return 0


def check(path: str) -> int:
    """Validate ``path`` alone: the file and the presets it extends, not the environment.

    The environment is left out on purpose: ``CONVFIX_MODE=off`` would skip reading the
    file, and a bad ``CONVFIX_*`` variable is not the file's fault.
    """
    try:
        resolve_config(path, env={})
    except ConfigError as error:
        print_config_error(error)
        return 1
    print(f"{path}: ok")
    return 0


def print_config_error(error: ConfigError) -> None:
    """The message start-up raises, named as the traceback of ``import convfix.auto`` ends."""
    sys.stderr.write(f"convfix.ConfigError: {error}\n")


def as_text(resolved: ResolvedConfig, colour: bool) -> list[str]:
    """A table of key, value and source, then the mode each policy ends up running in."""
    file = resolved.file or "none (built-in defaults)"
    if resolved.origins.get("mode") == "env:CONVFIX_MODE" and resolved.config.mode == "off":
        file = "not read: CONVFIX_MODE=off is the kill switch"
    values = msgspec.to_builtins(resolved.config)
    # In the schema's order (origins lists every key that way), which is also the docs' order.
    rows = [(key, _show(_lookup(values, key)), source) for key, source in resolved.origins.items()]
    config = resolved.config
    modes = ", ".join(f"{name}={config.policy_mode(name)}" for name in POLICY_NAMES)
    # A policy's mode left unset ("-") follows the top-level one: say what each ends up as.
    footer = textwrap.wrap(f"policies run in: {modes}", 100, subsequent_indent="  ")
    return [
        f"config file: {file}",
        "",
        *_output.table(("key", "value", "source"), rows, colour=colour),
        "",
        *footer,
    ]


def as_json(resolved: ResolvedConfig) -> dict[str, object]:
    """The same for machines: the file, every key's value and source, and policy modes."""
    values = msgspec.to_builtins(resolved.config)
    return {
        "file": resolved.file,
        "keys": {
            key: {"value": _lookup(values, key), "source": source}
            for key, source in resolved.origins.items()
        },
        "policy_modes": {name: resolved.config.policy_mode(name) for name in POLICY_NAMES},
    }


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    value: Any = values
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _show(value: Any) -> str:
    # As a TOML reader would write it, except strings unquoted: the table is for reading.
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
