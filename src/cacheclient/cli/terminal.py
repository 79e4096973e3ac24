"""A block of status lines at the bottom of a terminal, redrawn in place.

:class:`LiveArea` owns the last few lines of the screen: :meth:`LiveArea.show` replaces them
(moving the cursor up and rewriting each line, clipped to the terminal width so nothing wraps),
:meth:`LiveArea.write` puts permanent text above them, :meth:`LiveArea.clear` removes them.
A redraw never emits a newline unless the block grows, so the screen does not scroll while
a download runs; lines are clipped to one column less than the width, so no terminal wraps.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from collections.abc import Callable, Sequence
from typing import TextIO

__all__ = [
    "LiveArea",
    "clip",
    "clip_middle",
    "printable",
    "terminal_width",
    "wants_live_display",
]


def __dir__() -> list[str]:
    return __all__


_FALLBACK_WIDTH = 80
_ERASE_LINE = "\x1b[2K"


def wants_live_display(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """A terminal that can redraw: a TTY, ``TERM`` not ``dumb``, ``NO_COLOR`` not set."""
    env = os.environ if environ is None else environ
    if env.get("TERM", "") == "dumb" or "NO_COLOR" in env:
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(callable(isatty) and isatty())
    except (OSError, ValueError):
        return False


def terminal_width(stream: TextIO) -> int:
    """Columns of the terminal *stream* writes to, asked at each call (a resized window is
    followed); ``COLUMNS`` when the terminal does not say; else 80."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    env = os.environ.get("COLUMNS", "")
    return int(env) if env.isdigit() and int(env) > 0 else _FALLBACK_WIDTH


def printable(text: str) -> str:
    """*text* with control characters (escape sequences from hostile names) replaced by ``?``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def _cell_width(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _cells(text: str) -> int:
    return len(text) if text.isascii() else sum(_cell_width(c) for c in text)


def clip(text: str, width: int) -> str:
    """*text* cut to at most *width* terminal cells, ending in ``…`` when it was cut."""
    if width <= 0:
        return ""
    if len(text) <= width and text.isascii():
        return text
    cells = 0
    out: list[str] = []
    for char in text:
        cells += _cell_width(char)
        if cells > width:
            while out and cells > width - 1:  # make room for the ellipsis
                cells -= _cell_width(out.pop())
            return "".join(out) + "…"
        out.append(char)
    return text


def clip_middle(text: str, width: int) -> str:
    """*text* cut to *width* cells by eliding its middle (``demo-to…7 tarball``), so the end of
    a label (hash, kind) stays readable."""
    if _cells(text) <= width:
        return text
    if not text.isascii() or width < 9:
        return clip(text, width)
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + "…" + text[len(text) - tail :]


class LiveArea:
    """The status block at the bottom of the terminal *stream*.

    Thread-safe: callers may show and write from several threads. *width* returns the current
    terminal width (asked at every redraw, so a resized window is followed).
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        width: Callable[[], int] | None = None,
        max_lines: int = 8,
    ) -> None:
        self.stream = stream
        self._width = width if width is not None else (lambda: terminal_width(stream))
        self.max_lines = max(1, max_lines)
        self.lock = threading.RLock()
        self._height = 0
        """Lines of the block on screen now (the cursor is at the end of the last one)."""

    def _out(self, text: str) -> None:
        encoding = getattr(self.stream, "encoding", None) or "utf-8"
        try:
            text.encode(encoding)
        except (UnicodeEncodeError, LookupError):  # e.g. an ASCII terminal: "…" becomes "?"
            text = text.encode("ascii", "replace").decode("ascii")
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def capacity(self) -> int:
        """At most *max_lines*, and always fewer than the terminal has rows."""
        try:
            rows = os.get_terminal_size(self.stream.fileno()).lines
        except (AttributeError, OSError, ValueError):
            return self.max_lines
        return max(1, min(self.max_lines, rows - 1)) if rows > 0 else self.max_lines

    def _to_top(self) -> str:
        if self._height == 0:
            return ""
        return "\r" + (f"\x1b[{self._height - 1}A" if self._height > 1 else "")

    def show(self, lines: Sequence[str]) -> None:
        """Replace the block with *lines* (the first *max_lines*), each clipped to the width."""
        with self.lock:
            width = max(self._width() - 1, 1)
            shown = [clip(printable(line), width) for line in lines[: self.capacity()]]
            if not shown and not self._height:
                return
            parts = [self._to_top() or "\r"]
            rows = max(len(shown), self._height)
            for i in range(rows):
                if i:
                    # Move onto a line the block already owns without a newline; only a block
                    # that grows emits one (and may scroll once, as any new line does).
                    parts.append("\x1b[1B\r" if i < self._height else "\n")
                # Lines the block no longer needs are erased one by one: an erase-below from
                # the top-left corner makes some terminals (tmux) push the screen to history.
                parts.append(_ERASE_LINE + (shown[i] if i < len(shown) else ""))
            back = rows - max(len(shown), 1)
            if back:
                parts.append(f"\x1b[{back}A")
                parts.append(f"\x1b[{_cells(shown[-1]) + 1}G" if shown else "\r")
            self._height = len(shown)
            self._out("".join(parts))

    def clear(self) -> None:
        """Remove the block; the cursor ends at the start of where it was."""
        with self.lock:
            if self._height:
                self.show([])

    def write(self, text: str, redraw: Sequence[str] = ()) -> None:
        """Print *text* (permanent lines) above the block, then draw *redraw* below it."""
        with self.lock:
            self.clear()
            self._out(text if text.endswith("\n") else text + "\n")
            if redraw:
                self.show(redraw)

    @property
    def height(self) -> int:
        return self._height
