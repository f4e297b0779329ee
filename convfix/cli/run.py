"""``convfix run [--config FILE] script.py [args...]`` / ``convfix run -m module [args...]``.

Runs a Python program with convfix active from its first line, as ``ddtrace-run`` and
``opentelemetry-instrument`` do, without editing it. The program runs *in this process*:
convfix is patched first (so a bad configuration stops here, before any of the program
runs), then the script or module is executed by :mod:`runpy` as ``__main__``, with
``sys.argv`` and ``sys.path[0]`` set as ``python script.py`` / ``python -m module`` would
set them. Because it is the same process, what the program does to it is what the caller
sees: ``sys.exit(3)`` exits 3, ``os.abort()`` dies of SIGABRT, Ctrl-C ends it the way
Python does; an uncaught exception prints its traceback (without convfix's own frames) and
exits 1. A program whose output's reader goes away (``| head``) ends quietly with status 141
(:mod:`convfix.cli._pipe`), unless it chose its own status with ``sys.exit``.

Python child processes the program starts are not convfix's unless they import
``convfix.auto`` themselves; ``--config`` is put into ``CONVFIX_CONFIG`` (as an absolute
path) so that those that do use the same file.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import zipfile
from collections.abc import Sequence
from types import TracebackType

from convfix.cli import _output, _pipe
from convfix.cli.config_cmd import print_config_error

_USAGE = "convfix run [-h] [--config FILE] (script.py | -m module) [args ...]"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``convfix run``; the program's own arguments are split off by split_argv."""
    parser = subparsers.add_parser(
        "run",
        usage=_USAGE,
        help="run a Python script or module with convfix active from its first line",
        description="Run a Python program with convfix active from its first line. Every "
        "argument after the script (or after -m module) is the program's own.",
    )
    parser.add_argument("--config", metavar="FILE", help="convfix config file (CONVFIX_CONFIG)")
    parser.add_argument("-m", dest="module", metavar="module", help="run a module as a script")
    parser.add_argument("script", nargs="?", help="the Python file to run")


def split_argv(tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``convfix run``'s arguments into its own and the program's.

    argparse cannot do this alone: ``REMAINDER`` after an option refuses program arguments
    that look like options (``-m mod --epochs 3``). Like ``python`` itself, everything after
    the script name or ``-m module`` belongs to the program, untouched.
    """
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("--config", "-m"):
            i += 2
            if token == "-m":
                break
            continue
        if token == "--":
            i += 2
            break
        if token.startswith("-m") and token != "-m":  # -mpackage, as python accepts it
            i += 1
            break
        if token.startswith("-"):
            i += 1  # --config=FILE, -h, or a mistake for argparse to name
            continue
        i += 1  # the script
        break
    return list(tokens[:i]), list(tokens[i:])


def main(args: argparse.Namespace) -> int:
    """Patch, then run the program; returns its exit status (SystemExit passes through)."""
    if (args.script is None) == (args.module is None):
        # split_argv makes "both" impossible (what follows one is the program's), so: neither.
        sys.stderr.write(f"usage: {_USAGE}\n")  # first, as argparse puts it
        _output.error("run", "expected a script to run, or -m module")
        return 2
    if args.script is not None and not os.path.exists(args.script):
        _output.error("run", f"can't open file {args.script!r}: no such file")
        return 2  # what `python missing.py` exits with
    import convfix
    from convfix.errors import ConfigError

    if args.config is not None:
        os.environ["CONVFIX_CONFIG"] = os.path.abspath(args.config)
    try:
        convfix.patch(args.config)
    except ConfigError as error:
        print_config_error(error)
        return 1
    # Looked up only now: finding a module imports its parent packages, which may import
    # TensorFlow, and convfix should see that import like every other.
    if args.module is not None and not _module_exists(args.module):
        _output.error("run", f"no module named {args.module}")
        return 1  # what `python -m missing` exits with
    return _run_program(args.script, args.module, args.argv)


def _run_program(script: str | None, module: str | None, argv: list[str]) -> int:
    try:
        if script is not None:
            path = os.path.abspath(script)
            sys.argv = [path, *argv]
            _set_path0(_script_root(path))
            runpy.run_path(path, run_name="__main__")
        else:
            assert module is not None
            sys.argv = [module, *argv]  # runpy replaces argv[0] with the module's file
            _set_path0(os.getcwd())
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        # The program's status stands; if its reader went away, the unwritten rest of its
        # output is dropped here, where no "Exception ignored" message follows at exit.
        _pipe.flush_stdout()
        raise
    except KeyboardInterrupt:
        raise  # Ctrl-C handling is the interpreter's, as for the program
    except BrokenPipeError as error:
        if _pipe.reader_gone(sys.stdout) or _pipe.reader_gone(sys.stderr):
            raise  # its output's reader went away: ends quietly (convfix.cli._pipe)
        _print_uncaught(error)
        return 1
    except BaseException as error:
        _print_uncaught(error)
        return 1
    return 0


def _module_exists(name: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package, or a name like "a..b"
        return False


def _script_root(path: str) -> str:
    # python puts a script's directory first on sys.path; a directory or zip archive with a
    # __main__.py is itself the root.
    if os.path.isdir(path) or zipfile.is_zipfile(path):
        return path
    return os.path.dirname(path)


def _set_path0(entry: str) -> None:
    # sys.path[0] is now convfix's launcher (the console script's bin directory, or the
    # working directory for `python -m convfix`): the program must see its own there.
    # Under `python -P` / PYTHONSAFEPATH nothing was put first, so nothing is replaced.
    if getattr(sys.flags, "safe_path", False):
        return
    if sys.path:
        sys.path[0] = entry
    else:
        sys.path.insert(0, entry)


def _print_uncaught(error: BaseException) -> None:
    """Print as the interpreter would (through ``sys.excepthook``, which the program may
    have replaced), starting at the program's first frame rather than convfix's."""
    program = _program_frames(error.__traceback__)
    # The default hook prints the exception's own __traceback__, not the one passed to it.
    sys.excepthook(type(error), error.with_traceback(program), program)


def _program_frames(tb: TracebackType | None) -> TracebackType | None:
    # runpy is a frozen module from Python 3.11 on: its frames may name it either way.
    ours = {os.path.normcase(__file__), os.path.normcase(runpy.__file__ or ""), "<frozen runpy>"}
    while tb is not None and os.path.normcase(tb.tb_frame.f_code.co_filename) in ours:
        tb = tb.tb_next
    return tb
