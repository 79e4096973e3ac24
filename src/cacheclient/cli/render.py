"""The CLI's renderers of :class:`~cacheclient.events.Reporter` hooks, and its diagnostics.

One stream of human output: results go to stdout (printed by each command, once), progress and
diagnostics to stderr, through one of these renderers:

* :class:`TtyReporter`: a live block at the bottom of the terminal (one line per active
  download, a line per build waiting on another process's download, and a total), redrawn in
  place and sized to the terminal width (:class:`~cacheclient.cli.terminal.LiveArea`);
* :class:`LogReporter`: plain lines, when stderr is not a terminal, ``TERM=dumb`` or
  ``NO_COLOR`` is set (a line per download, and a progress line now and then for long ones);
* :class:`JsonLinesReporter`: one JSON event per line on stderr, for ``--json``;
* the no-op base class itself for ``--quiet``.

:func:`configure_output` (called once per command by ``cli.main``) sets the verbosity (``-q``,
``-v``, ``-vv``) and routes the ``logging`` module's ``cacheclient`` loggers through the active
renderer, so a log line never lands in the middle of the live display. :func:`make_reporter`
picks the renderer.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from cacheclient.cli.terminal import LiveArea, clip, clip_middle, printable, wants_live_display
from cacheclient.events import Reporter, when_logging
from cacheclient.model import BuildRecord

if TYPE_CHECKING:
    import logging

__all__ = [
    "GuardedStdout",
    "JsonLinesReporter",
    "LogReporter",
    "TtyReporter",
    "configure_output",
    "format_bytes",
    "make_reporter",
    "stop_display",
    "verbosity",
    "write_diagnostic",
    "yield_terminal",
]


def __dir__() -> list[str]:
    return __all__


_PREPARING_AFTER = 0.5
"""Seconds of silence before a terminal shows that the job is reading metadata."""
_SPINNER = "|/-\\"

_LOG_EVERY = 15.0
"""Seconds between progress lines of a long download in plain-log mode."""


@dataclass
class _Output:
    verbosity: int = 0
    json: bool = False
    active: _Tracking | None = None
    handler: logging.Handler | None = None


_OUTPUT = _Output()


def verbosity() -> int:
    """-1 for ``-q``, 0 by default, 1 for ``-v``, 2 for ``-vv``."""
    return _OUTPUT.verbosity


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


_RATE_WINDOW = 5.0
"""Seconds of history behind a shown rate (a stalled download drops to 0 B/s)."""


@dataclass
class _Rate:
    """Bytes per second over the last few seconds."""

    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, done: int) -> None:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] > _RATE_WINDOW:
            self.samples.popleft()

    def per_second(self, now: float) -> float:
        if not self.samples:
            return 0.0
        first_t, first_done = self.samples[0]
        last_done = self.samples[-1][1]
        return (last_done - first_done) / max(now - first_t, 1e-3)


@dataclass
class _Artifact:
    size: int | None
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    logged: float = field(default_factory=time.monotonic)
    rate: _Rate = field(default_factory=_Rate)

    def __post_init__(self) -> None:
        self.rate.add(self.started, 0)


class _Tracking(Reporter):
    """Shared bookkeeping of bytes and artifacts for the renderers."""

    def __init__(self, stream: TextIO | None = None, *, level: int | None = None) -> None:
        self._stream = stream
        self.level = _OUTPUT.verbosity if level is None else level
        self.lock = threading.RLock()
        self.active: dict[str, _Artifact] = {}
        self.waiting_on: dict[str, float] = {}
        self.total_items = 0
        self.total_bytes = 0
        self.done_items = 0
        self.done_bytes = 0
        self.announced_bytes = 0
        """Sizes of the artifacts started so far (the total when the job's is unknown)."""
        self.started = time.monotonic()
        self.rate = _Rate()
        _OUTPUT.active = self

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def _emit(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def write_line(self, text: str) -> None:
        """A diagnostic line (a log record, a warning) on stderr."""
        with self.lock:
            self._emit(text + "\n")

    def close(self) -> None:
        """Stop drawing (an error or an interrupt ends the job)."""
        if _OUTPUT.active is self:
            _OUTPUT.active = None

    def starting(self, total_items: int, total_bytes: int) -> None:
        with self.lock:
            self.total_items = total_items
            self.total_bytes = total_bytes
            self.started = time.monotonic()
            self.rate.add(self.started, self.done_bytes)

    def waiting(self, artifact: str) -> None:
        with self.lock:
            self.waiting_on[artifact] = time.monotonic()

    def download_started(self, artifact: str, size: int | None) -> None:
        with self.lock:
            self.waiting_on.pop(artifact, None)
            self.active[artifact] = _Artifact(size)
            self.announced_bytes += size or 0

    def download_progress(self, artifact: str, done: int, total: int | None) -> None:
        with self.lock:
            entry = self.active.setdefault(artifact, _Artifact(total))
            self.done_bytes += max(0, done - entry.done)
            entry.done = done
            now = time.monotonic()
            entry.rate.add(now, done)
            self.rate.add(now, self.done_bytes)

    def download_finished(self, artifact: str, already_present: bool) -> None:
        with self.lock:
            self.waiting_on.pop(artifact, None)
            self.active.pop(artifact, None)
            self.done_items += 1


def _waiting_text(artifact: str) -> str:
    return f"waiting for another process downloading {artifact}"


class LogReporter(_Tracking):
    """Plain lines on stderr (used when it is not a terminal that can redraw).

    Default: a line per download that finished, one per build waiting on another process, a
    progress line every 15 s for long downloads, warnings. ``-v`` adds starts, builds already
    in the store, mirrors passed over and installations; ``-vv`` the job's summary.
    """

    def download_started(self, artifact: str, size: int | None) -> None:
        super().download_started(artifact, size)
        if self.level >= 1:
            sized = f" ({format_bytes(size)})" if size is not None else ""
            self._emit(f"downloading {artifact}{sized}\n")

    def download_progress(self, artifact: str, done: int, total: int | None) -> None:
        super().download_progress(artifact, done, total)
        now = time.monotonic()
        with self.lock:
            entry = self.active.get(artifact)
            if entry is None or now - entry.logged < _LOG_EVERY or self.level < 0:
                return
            entry.logged = now
        of = f" of {format_bytes(total)}" if total else ""
        pct = f"{100 * done // total}%, " if total else ""
        self._emit(f"downloading {artifact}: {pct}{format_bytes(done)}{of}\n")

    def waiting(self, artifact: str) -> None:
        super().waiting(artifact)
        self._emit(_waiting_text(artifact) + "\n")

    def download_finished(self, artifact: str, already_present: bool) -> None:
        with self.lock:
            entry = self.active.get(artifact)
        super().download_finished(artifact, already_present)
        if already_present:
            if self.level >= 1:
                self._emit(f"present     {artifact}\n")
            return
        if entry is not None:
            seconds = max(time.monotonic() - entry.started, 1e-6)
            rate = format_bytes(entry.done / seconds)
            self._emit(f"downloaded  {artifact} ({format_bytes(entry.done)}, {rate}/s)\n")
        else:
            self._emit(f"downloaded  {artifact}\n")

    def candidate_rejected(self, candidate: str, reason: str) -> None:
        if self.level >= 1:
            self._emit(f"skipped     {printable(str(candidate))}: {reason}\n")

    def mirror_failed(self, mirror: str, reason: str) -> None:
        if self.level >= 1:
            self._emit(f"mirror      {printable(mirror)} failed: {reason}\n")

    def installing(self, record: BuildRecord, prefix: str) -> None:
        if self.level >= 1:
            self._emit(f"installing  {_label(record)} -> {prefix}\n")

    def warning(self, message: str) -> None:
        self._emit(f"cacheclient: warning: {message}\n")

    def finished(self, summary: Mapping[str, int]) -> None:
        if self.level >= 2:
            parts = [f"{k}={v}" for k, v in summary.items()]
            self._emit("debug: fetch summary: " + " ".join(parts) + "\n")


def _label(record: BuildRecord) -> str:
    return f"{record.name}@{record.version}/{record.short_hash}"


class TtyReporter(LogReporter):
    """A live block on a terminal: one line per active download (and per build waiting on
    another process), then a total line; redrawn in place every *interval* seconds and on each
    change, never wider than the terminal. Permanent lines (warnings, ``-v`` logs) go above it.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = 0.1,
        level: int | None = None,
        width: Any = None,
        max_lines: int = 8,
    ) -> None:
        super().__init__(stream, level=level)
        self.interval = interval
        self.area = LiveArea(self.stream, width=width, max_lines=max_lines)
        self.lock = self.area.lock
        self._installing: dict[str, float] = {}
        self._last_draw = 0.0
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._created = time.monotonic()
        self._preparing = True
        """Until the first download, wait or installation: a line says the job is working."""
        self._ensure_ticker()

    # -- drawing ---------------------------------------------------------------------------
    def _width(self) -> int:
        return max(self.area._width() - 1, 20)

    def _download_line(self, name: str, entry: _Artifact, now: float, width: int) -> str:
        rate = entry.rate.per_second(now)
        if entry.size:
            pct = min(100, 100 * entry.done // entry.size) if entry.size else 0
            stats = (
                f"{pct:3d}% {format_bytes(entry.done)}/{format_bytes(entry.size)} "
                f"{format_bytes(rate)}/s {_eta(entry.size - entry.done, rate)}"
            )
        else:
            stats = f"{format_bytes(entry.done)} {format_bytes(rate)}/s"
        room = width - len(stats) - 3
        if room < 12:  # a very narrow terminal: the name matters more than the numbers
            return clip(f"  {name}", width)
        return f"  {clip_middle(name, room):<{room}} {stats}"

    def _total_line(self, now: float, width: int) -> str:
        rate = self.rate.per_second(now)
        known = max(self.total_bytes, self.announced_bytes)
        remaining = known - self.done_bytes if known else 0
        size = format_bytes(self.done_bytes) + (f"/{format_bytes(known)}" if known else "")
        count = f"[{self.done_items}/{self.total_items}]" if self.total_items else ""
        text = f"fetching {count} {size} {format_bytes(rate)}/s ETA {_eta(remaining, rate)}"
        bar_room = width - len(text) - 3
        if known and bar_room >= 10:
            cells = 20 if bar_room >= 20 else 10  # a steady size: the numbers' width varies
            filled = min(cells, cells * self.done_bytes // known)
            text += " [" + "#" * filled + "." * (cells - filled) + "]"
        return text

    def lines(self) -> list[str]:
        """What the live block shows now (unclipped lines are clipped by the area)."""
        now = time.monotonic()
        width = self._width()
        rows: list[str] = []
        budget = max(self.area.capacity() - 1, 1)
        items = list(self.active.items())
        for name, entry in items[:budget]:
            rows.append(self._download_line(name, entry, now, width))
        if len(items) > budget:
            rows[-1] = f"  ... and {len(items) - budget + 1} more downloads"
        for name in list(self.waiting_on)[: max(0, budget - len(rows))]:
            rows.append(f"  {_waiting_text(name)}")
        for name in list(self._installing)[: max(0, budget - len(rows))]:
            rows.append(f"  installing {name}")
        if self.active or self.waiting_on:
            rows.append(self._total_line(now, width))
        if rows:
            self._preparing = False
        elif self._preparing and now - self._created >= _PREPARING_AFTER:
            spinner = _SPINNER[int((now - self._created) / self.interval) % len(_SPINNER)]
            rows.append(f"{spinner} reading indexes and signed metadata")
        return rows

    def _draw(self, *, force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            if self._closed or (not force and now - self._last_draw < self.interval):
                return
            self._last_draw = now
            self.area.show(self.lines())

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self.lock:
                if self.active or self.waiting_on or self._installing or self._preparing:
                    self._draw(force=True)

    def _ensure_ticker(self) -> None:
        if self._ticker is None and self.interval > 0:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()

    def _emit(self, text: str) -> None:
        with self.lock:
            self.area.write(text.rstrip("\n"), () if self._closed else self.lines())

    def write_line(self, text: str) -> None:
        self._emit(text)

    def pause(self) -> None:
        """Remove the block; the "reading metadata" line does not come back."""
        with self.lock:
            self._preparing = False
            self.area.clear()

    def close(self) -> None:
        """Remove the block for good: download threads still running after an error or an
        interrupt draw nothing more."""
        self._stop.set()
        with self.lock:
            self._closed = True
            self.area.clear()
        ticker, self._ticker = self._ticker, None
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=1.0)
        super().close()

    # -- hooks -----------------------------------------------------------------------------
    def download_started(self, artifact: str, size: int | None) -> None:
        with self.lock:
            super().download_started(artifact, size)
            self._ensure_ticker()
            self._draw(force=True)

    def download_progress(self, artifact: str, done: int, total: int | None) -> None:
        with self.lock:
            _Tracking.download_progress(self, artifact, done, total)
            self._draw()

    def waiting(self, artifact: str) -> None:
        with self.lock:
            _Tracking.waiting(self, artifact)
            if self.level >= 1:
                self._emit(_waiting_text(artifact))
            self._ensure_ticker()
            self._draw(force=True)

    def download_finished(self, artifact: str, already_present: bool) -> None:
        with self.lock:
            if self.level >= 1:
                super().download_finished(artifact, already_present)
            else:
                _Tracking.download_finished(self, artifact, already_present)
            self._draw(force=True)

    def installing(self, record: BuildRecord, prefix: str) -> None:
        with self.lock:
            super().installing(record, prefix)
            self._installing[_label(record)] = time.monotonic()
            self._ensure_ticker()
            self._draw(force=True)

    def installed(self, record: BuildRecord, prefix: str) -> None:
        with self.lock:
            self._installing.pop(_label(record), None)
            self._draw(force=True)

    def finished(self, summary: Mapping[str, int]) -> None:
        with self.lock:
            self._preparing = False
            self.active.clear()
            self.waiting_on.clear()
            super().finished(summary)
            self.area.clear()


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

    def write_line(self, text: str) -> None:
        self._event("log", message=text)

    def log(self, level: str, message: str) -> None:
        self._event("log", level=level, message=message)

    def starting(self, total_items: int, total_bytes: int) -> None:
        super().starting(total_items, total_bytes)
        self._event("starting", total_items=total_items, total_bytes=total_bytes)

    def waiting(self, artifact: str) -> None:
        super().waiting(artifact)
        self._event("waiting", artifact=artifact)

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

    def candidate_rejected(self, candidate: str, reason: str) -> None:
        self._event("candidate_rejected", candidate=str(candidate), reason=reason)

    def mirror_failed(self, mirror: str, reason: str) -> None:
        self._event("mirror_failed", mirror=mirror, reason=reason)

    def installing(self, record: BuildRecord, prefix: str) -> None:
        self._event("installing", build=_label(record), prefix=prefix)

    def installed(self, record: BuildRecord, prefix: str) -> None:
        self._event("installed", build=_label(record), prefix=prefix)

    def warning(self, message: str) -> None:
        self._event("warning", message=message)

    def finished(self, summary: Mapping[str, int]) -> None:
        self._event("finished", **dict(summary))


def make_reporter(
    *, json_output: bool = False, quiet: bool = False, stream: TextIO | None = None
) -> Reporter:
    """The renderer for the CLI flags: ``--quiet`` → none, ``--json`` → JSON lines, a terminal
    that can redraw → live progress, anything else → log lines. All write to stderr (or
    *stream*)."""
    if quiet or _OUTPUT.verbosity < 0:
        return Reporter()
    out = stream if stream is not None else sys.stderr
    if json_output or _OUTPUT.json:
        return JsonLinesReporter(stream)
    if wants_live_display(out):
        return TtyReporter(stream)
    return LogReporter(stream)


# -- diagnostics ---------------------------------------------------------------------------------


def write_diagnostic(text: str) -> None:
    """One line on stderr for a person, drawn above the live display when there is one."""
    active = _OUTPUT.active
    if active is not None:
        active.write_line(text)
        return
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def yield_terminal() -> None:
    """Stdout is about to print on the terminal the live display is drawn on: remove the
    display first (it comes back only for downloads that start later)."""
    active = _OUTPUT.active
    if isinstance(active, TtyReporter):
        active.pause()


class GuardedStdout:
    """Stands in for ``sys.stdout`` when it is the display's terminal: every write removes the
    live display first, so results never mix with progress lines."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        if text:
            yield_terminal()
        return self._inner.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def stop_display() -> None:
    """Remove the live display (before an error or an interrupt message)."""
    active = _OUTPUT.active
    if active is not None:
        active.close()
    _OUTPUT.active = None


def _make_handler() -> logging.Handler:
    """A handler that writes ``cacheclient`` log records through the active renderer (its
    class is made here: the base class is :mod:`logging`'s, imported only once something logs,
    see :func:`cacheclient.events.get_logger`)."""
    import logging  # noqa: PLC0415 - see above

    prefix = {
        logging.DEBUG: "debug: ",
        logging.INFO: "",
        logging.WARNING: "cacheclient: warning: ",
        logging.ERROR: "cacheclient: error: ",
        logging.CRITICAL: "cacheclient: error: ",
    }

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                message = printable(record.getMessage())
            except (TypeError, ValueError):  # pragma: no cover - a bad format string is a bug
                message = str(record.msg)
            if _OUTPUT.json:
                active = _OUTPUT.active
                if isinstance(active, JsonLinesReporter):
                    active.log(record.levelname.lower(), message)
                    return
                payload = {"event": "log", "level": record.levelname.lower(), "message": message}
                write_diagnostic(json.dumps(payload))
                return
            write_diagnostic(prefix.get(record.levelno, "") + message)

    return Handler()


def _route_logging() -> None:
    """Send the ``cacheclient`` loggers' records through the active renderer, at the level of
    the verbosity set."""
    import logging  # noqa: PLC0415 - run once logging is in use (configure_output)

    logger = logging.getLogger("cacheclient")
    if _OUTPUT.handler is None:
        _OUTPUT.handler = _make_handler()
        logger.addHandler(_OUTPUT.handler)
        logger.propagate = False
    level_of = {0: logging.WARNING, 1: logging.INFO}
    logger.setLevel(level_of.get(max(_OUTPUT.verbosity, 0), logging.DEBUG))


def configure_output(*, verbose: int = 0, quiet: bool = False, json_output: bool = False) -> None:
    """Set the verbosity of this command and route ``logging`` to stderr through the renderer.

    Levels: ``-q`` warnings and errors only, no progress; default: progress and warnings;
    ``-v`` also INFO (retries, mirrors passed over, each download); ``-vv`` also DEBUG. The
    routing is set up once :mod:`logging` is in use (a command that logs nothing does not
    import it).
    """
    _OUTPUT.verbosity = -1 if quiet and not verbose else verbose
    _OUTPUT.json = json_output
    _OUTPUT.active = None
    when_logging(_route_logging)
