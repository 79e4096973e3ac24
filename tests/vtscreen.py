"""A minimal VT100 screen for tests: feeds what a program wrote to a terminal and keeps the
screen, the cursor, and counts of what a person would have seen go wrong (lines that wrapped,
lines scrolled off the top).

It understands what cacheclient's live display emits (printable text, CR, LF, BS and the CSI
sequences ``A B C D E F G H J K m``) and records any other escape it meets in ``unknown``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Screen"]

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


@dataclass
class Screen:
    columns: int = 80
    rows: int = 24
    lines: list[list[str]] = field(default_factory=list)
    row: int = 0
    col: int = 0
    wrapped: int = 0
    """Characters written past the last column (a terminal would have wrapped the line)."""
    scrolled: int = 0
    """Lines that scrolled off the top."""
    newlines: int = 0
    unknown: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lines = [[" "] * self.columns for _ in range(self.rows)]

    def _line_feed(self) -> None:
        self.newlines += 1
        if self.row == self.rows - 1:
            self.lines.pop(0)
            self.lines.append([" "] * self.columns)
            self.scrolled += 1
        else:
            self.row += 1

    def _csi(self, params: str, final: str) -> None:
        numbers = [int(p) if p.isdigit() else 0 for p in params.split(";")] if params else []
        n = numbers[0] if numbers and numbers[0] else 1
        if final == "A":
            self.row = max(0, self.row - n)
        elif final == "B":
            self.row = min(self.rows - 1, self.row + n)
        elif final == "C":
            self.col = min(self.columns - 1, self.col + n)
        elif final == "D":
            self.col = max(0, self.col - n)
        elif final == "E":
            self.row, self.col = min(self.rows - 1, self.row + n), 0
        elif final == "F":
            self.row, self.col = max(0, self.row - n), 0
        elif final == "G":
            self.col = min(self.columns - 1, n - 1)
        elif final == "H":
            row = numbers[0] if numbers and numbers[0] else 1
            col = numbers[1] if len(numbers) > 1 and numbers[1] else 1
            self.row, self.col = min(self.rows, row) - 1, min(self.columns, col) - 1
        elif final == "K":
            mode = numbers[0] if numbers else 0
            line = self.lines[self.row]
            span = {
                0: range(self.col, self.columns),
                1: range(self.col + 1),
                2: range(self.columns),
            }
            for i in span.get(mode, range(0)):
                line[i] = " "
        elif final == "J":
            mode = numbers[0] if numbers else 0
            if mode == 0:
                self._csi("0", "K")
                for r in range(self.row + 1, self.rows):
                    self.lines[r] = [" "] * self.columns
            elif mode == 2:
                self.lines = [[" "] * self.columns for _ in range(self.rows)]
        elif final == "m" or params.startswith("?"):
            pass
        else:
            self.unknown.append(params + final)

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            char = text[i]
            if char == "\x1b":
                match = _CSI.match(text, i)
                if match is None:
                    self.unknown.append(repr(text[i : i + 3]))
                    i += 1
                    continue
                self._csi(match.group(1), match.group(2))
                i = match.end()
                continue
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._line_feed()
                self.col = 0  # the pty's ONLCR turns LF into CR LF
            elif char == "\b":
                self.col = max(0, self.col - 1)
            elif char.isprintable():
                if self.col >= self.columns:
                    self.wrapped += 1
                    self.col = 0
                    self._line_feed()
                    self.newlines -= 1  # a wrap is not a newline the program sent
                self.lines[self.row][self.col] = char
                self.col += 1
            i += 1

    def text(self) -> list[str]:
        return ["".join(line).rstrip() for line in self.lines]
