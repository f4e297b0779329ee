"""Terminal or pipe: colour, tables and progress lines that degrade to plain text.

Colour is used only when the stream is a terminal and ``NO_COLOR`` is unset or empty
(https://no-color.org); ``TERM=dumb`` also turns it off. A pipe gets plain text with no
escape codes at all, so ``convfix doctor | grep`` and CI logs read cleanly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

_CODES = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "dim": "2", "bold": "1"}


def use_colour(stream: TextIO) -> bool:
    """Whether escape codes may be written to ``stream``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def paint(text: str, colour: str, enabled: bool) -> str:
    """``text`` in ``colour`` (a key of the table above) when ``enabled``."""
    return f"\033[{_CODES[colour]}m{text}\033[0m" if enabled and text else text


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    colour: bool = False,
    right: Sequence[int] = (),
) -> list[str]:
    """Rows as aligned columns two spaces apart; columns in ``right`` are right-aligned
    (numbers). The header is bold on a terminal and underlined with dashes everywhere."""
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(cell).rjust(w) if c in right else str(cell).ljust(w)
            for c, (cell, w) in enumerate(zip(cells, widths))
        ]
        return "  ".join(parts).rstrip()

    return [
        paint(line(header), "bold", colour),
        "  ".join("-" * w for w in widths),
        *(line(row) for row in rows),
    ]


class Progress:
    """One self-overwriting status line on stderr, shown only on a terminal.

    Long steps (doctor's smoke test imports TensorFlow, a few seconds) say what they are
    waiting for; a pipe or a log file gets nothing, not a trail of carriage returns.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._shown = 0
        # Not colour, so NO_COLOR does not apply; a terminal that cannot move the cursor does.
        self._enabled = _isatty(self._stream) and os.environ.get("TERM") != "dumb"

    def update(self, text: str) -> None:
        """Replace the status line with ``text``."""
        if not self._enabled:
            return
        pad = " " * max(0, self._shown - len(text))
        self._stream.write(f"\r{text}{pad}")
        self._stream.flush()
        self._shown = len(text)

    def clear(self) -> None:
        """Remove the status line, leaving the cursor where it started."""
        if self._enabled and self._shown:
            self._stream.write("\r" + " " * self._shown + "\r")
            self._stream.flush()
            self._shown = 0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def error(command: str, message: str) -> None:
    """``convfix <command>: error: <message>`` on stderr, worded as argparse words its own."""
    sys.stderr.write(f"convfix {command}: error: {message}\n")
