"""The CLI's renderers of :class:`~cacheclient.events.Reporter` hooks.

:class:`TtyReporter` (one progress display for the whole job on stderr: bytes, rate and ETA per
artifact and in total), :class:`LogReporter` (plain lines, when stderr is not a terminal),
:class:`JsonLinesReporter` (one JSON event per line on stderr, for ``--json``), and the no-op base
class itself for ``--quiet``. :func:`make_reporter` picks one from the CLI flags. The renderers
serialise their output across download threads.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from cacheclient.errors import printable
from cacheclient.events import Reporter

__all__ = [
    "JsonLinesReporter",
    "LogReporter",
    "TtyReporter",
    "format_bytes",
    "make_reporter",
]


def __dir__() -> list[str]:
    return __all__


def format_bytes(count: float) -> str:
    """Human size with binary units.

    >>> format_bytes(1536), format_bytes(12)
    ('1.5 KiB', '12 B')
    """
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def _eta(remaining: float, rate: float) -> str:
    if rate <= 0 or remaining <= 0:
        return "--:--"
    seconds = int(remaining / rate)
    return f"{seconds // 60:02d}:{seconds % 60:02d}" if seconds < 6000 else ">99m"


@dataclass
class _Artifact:
    size: int | None
    done: int = 0
    started: float = field(default_factory=time.monotonic)


class _Tracking(Reporter):
    """Shared bookkeeping of bytes and artifacts for the renderers."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.lock = threading.RLock()
        self.active: dict[str, _Artifact] = {}
        self.total_items = 0
        self.total_bytes = 0
        self.done_items = 0
        self.done_bytes = 0
        self.announced_bytes = 0
        """Sizes of the artifacts started so far (the total when the job's is unknown)."""
        self.started = time.monotonic()

    def _emit(self, text: str) -> None:
        text = _terminal_safe(text)
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def starting(self, total_items: int, total_bytes: int) -> None:
        with self.lock:
            self.total_items = total_items
            self.total_bytes = total_bytes
            self.started = time.monotonic()

    def download_started(self, artifact: str, size: int | None) -> None:
        with self.lock:
            self.active[artifact] = _Artifact(size)
            self.announced_bytes += size or 0

    def download_progress(self, artifact: str, done: int, total: int | None) -> None:
        with self.lock:
            entry = self.active.setdefault(artifact, _Artifact(total))
            self.done_bytes += max(0, done - entry.done)
            entry.done = done

    def download_finished(self, artifact: str, already_present: bool) -> None:
        with self.lock:
            self.active.pop(artifact, None)
            self.done_items += 1


class LogReporter(_Tracking):
    """Plain lines on stderr (used when it is not a terminal)."""

    def download_started(self, artifact: str, size: int | None) -> None:
        super().download_started(artifact, size)
        sized = f" ({format_bytes(size)})" if size is not None else ""
        self._emit(f"downloading {artifact}{sized}\n")

    def download_finished(self, artifact: str, already_present: bool) -> None:
        with self.lock:
            entry = self.active.get(artifact)
        super().download_finished(artifact, already_present)
        if already_present:
            self._emit(f"present     {artifact}\n")
            return
        if entry is not None:
            seconds = max(time.monotonic() - entry.started, 1e-6)
            rate = format_bytes(entry.done / seconds)
            self._emit(f"fetched     {artifact} ({format_bytes(entry.done)}, {rate}/s)\n")
        else:
            self._emit(f"fetched     {artifact}\n")

    def candidate_rejected(self, candidate: object, reason: str) -> None:
        self._emit(f"skipped     {candidate}: {reason}\n")

    def installing(self, record: Any, prefix: str) -> None:
        self._emit(f"installing  {_label(record)} -> {prefix}\n")

    def installed(self, record: Any, prefix: str) -> None:
        self._emit(f"installed   {_label(record)}\n")

    def warning(self, message: str) -> None:
        self._emit(f"warning: {message}\n")

    def finished(self, summary: Mapping[str, Any]) -> None:
        parts = [f"{k}={v}" for k, v in summary.items() if isinstance(v, (int, float, str))]
        self._emit("done " + " ".join(parts) + "\n")


_CLEAR_LINE = "\r\x1b[2K"


def _terminal_safe(text: str) -> str:
    """*text* with control characters from names, versions and server text escaped; only
    our own line clearing and newlines stay."""
    prefix = _CLEAR_LINE if text.startswith(_CLEAR_LINE) else ""
    return prefix + "\n".join(printable(line) for line in text[len(prefix) :].split("\n"))


def _label(record: Any) -> str:
    name = getattr(record, "name", None)
    version = getattr(record, "version", None)
    short = getattr(record, "short_hash", None)
    if name and version:
        return f"{name}@{version}" + (f"/{short}" if short else "")
    return str(record)


class TtyReporter(LogReporter):
    """A live status line on a terminal (redrawn at most ~10 times a second) plus log lines."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.1) -> None:
        super().__init__(stream)
        self.interval = interval
        self._last_draw = 0.0
        self._drawn = False

    def _emit(self, text: str) -> None:
        with self.lock:
            self._clear()
            super()._emit(text)
            self._draw(force=True)

    def _clear(self) -> None:
        if self._drawn:
            super()._emit("\r\x1b[2K")
            self._drawn = False

    def _status(self) -> str:
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-6)
        rate = self.done_bytes / elapsed
        known = self.total_bytes or self.announced_bytes
        total = f"/{format_bytes(known)}" if known else ""
        remaining = known - self.done_bytes if known else 0
        head = (
            f"[{self.done_items}/{self.total_items}] {format_bytes(self.done_bytes)}{total} "
            f"{format_bytes(rate)}/s ETA {_eta(remaining, rate)}"
        )
        items = []
        for name, entry in list(self.active.items())[:3]:
            spent = max(now - entry.started, 1e-6)
            art_rate = entry.done / spent
            pct = f"{100 * entry.done // entry.size}%" if entry.size else format_bytes(entry.done)
            left = (entry.size - entry.done) if entry.size else 0
            items.append(f"{name.split()[0]} {pct} {_eta(left, art_rate)}")
        line = head + (" | " + ", ".join(items) if items else "")
        return line[:200]

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        if not self.active and not force:
            return
        if self.active:
            super()._emit("\r\x1b[2K" + self._status())
            self._drawn = True

    def download_progress(self, artifact: str, done: int, total: int | None) -> None:
        with self.lock:
            super().download_progress(artifact, done, total)
            self._draw()

    def download_started(self, artifact: str, size: int | None) -> None:
        with self.lock:
            _Tracking.download_started(self, artifact, size)
            self._draw(force=True)

    def finished(self, summary: Mapping[str, Any]) -> None:
        with self.lock:
            self.active.clear()
            self._clear()
            super().finished(summary)
            self._clear()


class JsonLinesReporter(_Tracking):
    """One JSON object per line on stderr: ``{"event": ..., ...}`` (progress is throttled)."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.5) -> None:
        super().__init__(stream)
        self.interval = interval
        self._last: dict[str, float] = {}

    def _event(self, event: str, **fields: Any) -> None:
        payload = {"event": event, "time": round(time.time(), 3), **fields}
        with self.lock:
            self._emit(json.dumps(payload, default=str) + "\n")

    def starting(self, total_items: int, total_bytes: int) -> None:
        super().starting(total_items, total_bytes)
        self._event("starting", total_items=total_items, total_bytes=total_bytes)

    def download_started(self, artifact: str, size: int | None) -> None:
        super().download_started(artifact, size)
        self._event("download_started", artifact=artifact, size=size)

    def download_progress(self, artifact: str, done: int, total: int | None) -> None:
        super().download_progress(artifact, done, total)
        now = time.monotonic()
        with self.lock:
            if now - self._last.get(artifact, 0.0) < self.interval and done != total:
                return
            self._last[artifact] = now
        self._event("download_progress", artifact=artifact, done=done, total=total)

    def download_finished(self, artifact: str, already_present: bool) -> None:
        super().download_finished(artifact, already_present)
        self._event("download_finished", artifact=artifact, already_present=already_present)

    def candidate_rejected(self, candidate: object, reason: str) -> None:
        self._event("candidate_rejected", candidate=str(candidate), reason=reason)

    def installing(self, record: Any, prefix: str) -> None:
        self._event("installing", build=_label(record), prefix=prefix)

    def installed(self, record: Any, prefix: str) -> None:
        self._event("installed", build=_label(record), prefix=prefix)

    def warning(self, message: str) -> None:
        self._event("warning", message=message)

    def finished(self, summary: Mapping[str, Any]) -> None:
        self._event("finished", **dict(summary))


def make_reporter(
    *, json_output: bool = False, quiet: bool = False, stream: TextIO | None = None
) -> Reporter:
    """The renderer for the CLI flags: ``--quiet`` → none, ``--json`` → JSON lines, a terminal
    → live progress, anything else → log lines. All write to stderr (or *stream*)."""
    if quiet:
        return Reporter()
    out = stream if stream is not None else sys.stderr
    if json_output:
        return JsonLinesReporter(out)
    isatty = getattr(out, "isatty", None)
    if callable(isatty) and isatty():
        return TtyReporter(out)
    return LogReporter(out)
