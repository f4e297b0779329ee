"""A reader that went away (``convfix report ... | head -1``) ends a command quietly.

Python ignores SIGPIPE, so writing to a pipe whose reader has closed raises
``BrokenPipeError`` instead of ending the process as it ends ``cat`` or ``grep``; left
alone, that is a traceback, and at exit another "Exception ignored" message from the final
flush. Every command's output goes through :func:`guarded`, which stops quietly with
:data:`CLOSED` instead: the status a shell reports for any Unix tool stopped by SIGPIPE,
so a script can tell a cut-off reader from a failing command (1) or bad arguments (2).
Restoring SIGPIPE's default action would do the same for convfix's own output, but it
would also kill a program under ``convfix run`` that writes to a closed socket, which
Python programs expect to see as an exception.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Callable
from typing import TextIO, TypeVar

T = TypeVar("T")

CLOSED = 141
"""Exit status when standard output's reader went away: 128 + SIGPIPE (13)."""
HELP = (
    f"Exit status {CLOSED} (as for any Unix tool stopped by SIGPIPE) when the reader of the "
    "output goes away first, as with `| head`: the command stops quietly."
)


def guarded(command: Callable[[], int]) -> int:
    """Run ``command`` and flush its output; a closed stdout ends it with :data:`CLOSED`.

    Flushing here, not at interpreter exit, is what lets a failure of the last buffered
    write be caught. A ``SystemExit`` keeps its status (``convfix run``'s program chose it)
    unless what it left to write could not be; for ``--help`` see :func:`parsed`.
    """
    try:
        status = command()
        sys.stdout.flush()
    except BrokenPipeError:
        if not (reader_gone(sys.stdout) or reader_gone(sys.stderr)):
            raise  # a socket of the program's own, say: not ours to hide
        silence()
        return CLOSED
    except SystemExit:
        if not flush_stdout():
            return CLOSED
        raise
    return status


def parsed(parse: Callable[[], T]) -> T:
    """``parse()`` (argparse), where ``--help`` and ``--version`` exit 0 after writing to
    stdout: argparse swallows the write's error, so a closed pipe is asked about directly."""
    try:
        return parse()
    except SystemExit as stop:
        if stop.code in (0, None) and reader_gone(sys.stdout):
            silence()
            raise SystemExit(CLOSED) from None
        raise


def flush_stdout() -> bool:
    """Flush stdout; False, with the closed streams silenced, if its reader went away."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence()
        return False
    except (AttributeError, ValueError):  # replaced or closed by a program: nothing to do
        pass
    return True


def reader_gone(stream: TextIO | None) -> bool:
    """Whether ``stream`` is a pipe or socket whose reading end was closed.

    Asked of the descriptor, not inferred from an exception: poll() reports POLLERR on
    the writing end of a pipe without readers (POLLHUP for some sockets)."""
    try:
        fd = stream.fileno() if stream is not None else -1
    except (AttributeError, OSError, ValueError):
        return False
    if fd < 0 or not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in poller.poll(0))


def silence() -> None:
    """Point stdout and stderr, where their reader went away, at the null device, so that
    the interpreter's own flush at exit has nowhere to fail (the recipe in Python's
    documentation of ``signal``, "Note on SIGPIPE")."""
    for stream in (sys.stdout, sys.stderr):
        if reader_gone(stream):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, stream.fileno())
                os.close(null)
