"""The ``convfix`` console script (also ``python -m convfix``): parse, dispatch, exit.

argparse, from the standard library, is the parser: no dependency for a tool most users run
a handful of times, and its conventions are the expected ones (``-h`` on every command, a
usage line and exit status 2 for bad arguments). Every command's output goes through
:func:`convfix.cli._pipe.guarded`: a reader that goes away (``| head``) ends it quietly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from convfix.cli import _pipe, config_cmd, demo_cmd, doctor, report, run

Command = Callable[[argparse.Namespace], int]

_COMMANDS: dict[str, tuple[Callable[..., None], Command]] = {
    "run": (run.add_parser, run.main),
    "report": (report.add_parser, report.main),
    "doctor": (doctor.add_parser, doctor.main),
    "config": (config_cmd.add_parser, config_cmd.main),
    "demo": (demo_cmd.add_parser, demo_cmd.main),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subcommand per module of this package."""
    from convfix import __version__

    parser = argparse.ArgumentParser(
        prog="convfix",
        description="Make TensorFlow convolutions stop failing for avoidable reasons.",
        epilog="Start with `convfix demo`; `convfix COMMAND -h` explains each command. "
        + _pipe.HELP,
    )
    parser.add_argument("--version", action="version", version=f"convfix {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser, _ in _COMMANDS.values():
        add_parser(subparsers)
    for command in subparsers.choices.values():
        # Said once here rather than in each command: it holds for all of them alike.
        command.epilog = " ".join(filter(None, (command.epilog, _pipe.HELP)))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return _pipe.guarded(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    tokens = list(sys.argv[1:] if argv is None else argv)
    program: list[str] = []
    if tokens and tokens[0] == "run":
        head, program = run.split_argv(tokens[1:])
        tokens = ["run", *head]
    parser = build_parser()
    args = _pipe.parsed(lambda: parser.parse_args(tokens))
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write("convfix: error: expected a command: " + ", ".join(_COMMANDS) + "\n")
        return 2
    args.argv = program
    return _COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
