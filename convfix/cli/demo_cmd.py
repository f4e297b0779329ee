"""``convfix demo``: :mod:`convfix.cli.demo`, the README's first command, under the CLI.

By default the demo is exactly ``python -m convfix.cli.demo``: its own embedded configuration
(the built-in defaults, events to a temporary file), ignoring ``./convfix.toml`` and
``CONVFIX_*`` variables. ``--config FILE`` runs the "with convfix" side under FILE instead
(events still go to the demo's own file, where its summary reads them). Each case then
expects what the mode of its policy under FILE gives: a refusal under ``strict``,
TensorFlow's own answer under ``observe`` where TensorFlow answers safely (the demo says
per case what it expected, and why).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from convfix.cli.config_cmd import print_config_error


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``convfix demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="show bad convolution calls without and with convfix, side by side",
        description="Run each kind of bad convolution call in a fresh Python process, "
        "without and with convfix, and print what happened. Exit status 0 when every call "
        "with convfix ended as expected under the configuration, 1 otherwise.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="run the 'with convfix' side under FILE instead of the built-in defaults; "
        "each case expects what the mode of its policy there gives (strict: a refusal)",
    )


def main(args: argparse.Namespace) -> int:
    """Run the demo; its exit status is the demo's own."""
    from convfix.cli import demo

    if args.config is None:
        return demo.main()
    from convfix.config import resolve_config
    from convfix.errors import ConfigError

    try:  # fail here, once, rather than in every child the demo starts
        resolve_config(args.config, env={})
    except ConfigError as error:
        print_config_error(error)
        return 1
    return demo.main(Path(args.config))
