"""Progress and explanation hooks: :class:`Reporter`, with no-op methods; and the package's
loggers (:func:`get_logger`).

In the style of resolvelib's ``BaseReporter``: the fetcher and installer call the hooks, libraries
ignore them or subclass for logs, and the CLI renders them (:mod:`cacheclient.cli.render`). Hooks
may be called from several download threads at once.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from cacheclient.model import BuildRecord

if TYPE_CHECKING:
    import logging

__all__ = ["Reporter", "get_logger", "when_logging"]


def __dir__() -> list[str]:
    return __all__


class Reporter:
    """Hooks called while fetching and installing; every method does nothing by default.

    *artifact* is a short human label (e.g. ``zlib-1.3.1/abcdefg tarball``), *record* a
    :class:`~cacheclient.model.BuildRecord`, *prefix* an install path.
    """

    def starting(self, total_items: int, total_bytes: int) -> None:
        """A job begins: how many artifacts and bytes it may need (upper bound)."""

    def waiting(self, artifact: str) -> None:
        """Another process is downloading *artifact* into the same store: this one waits."""

    def download_started(self, artifact: str, size: int | None) -> None:
        """Bytes of *artifact* start to flow (size None when unknown)."""

    def download_progress(self, artifact: str, done: int, total: int | None) -> None:
        """*done* bytes of *artifact* are on disk."""

    def download_finished(self, artifact: str, already_present: bool) -> None:
        """*artifact* is verified in the store (*already_present*: nothing was downloaded)."""

    def candidate_rejected(self, candidate: str, reason: str) -> None:
        """A mirror (or a mirror for one build) was passed over; *reason* says why."""

    def mirror_failed(self, mirror: str, reason: str) -> None:
        """*mirror* failed once (it is skipped for the rest of the run after a few)."""

    def installing(self, record: BuildRecord, prefix: str) -> None:
        """Installation of *record* into *prefix* begins."""

    def installed(self, record: BuildRecord, prefix: str) -> None:
        """*record* is installed in *prefix*."""

    def warning(self, message: str) -> None:
        """Something the user should know that does not stop the job."""

    def finished(self, summary: Mapping[str, int]) -> None:
        """The job ended; *summary* holds counts (items, bytes, seconds...)."""


_WHEN_LOGGING: list[Callable[[], None]] = []
_HOOKS_LOCK = threading.Lock()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``: every module of the package gets its logger here.

    :mod:`logging` (with :mod:`traceback`: some 2 ms) is imported by the first call, so a
    command that has nothing to log (a warm ``resolve``) never imports it; what
    :func:`when_logging` was given runs first.
    """
    import logging  # noqa: PLC0415 - only in a process that logs (see above)

    with _HOOKS_LOCK:  # download threads may log first at once: each hook runs once
        hooks = _WHEN_LOGGING.copy()
        _WHEN_LOGGING.clear()
        for hook in hooks:
            hook()
    return logging.getLogger(name)


def when_logging(hook: Callable[[], None]) -> None:
    """Run *hook* now when :mod:`logging` is imported already, else just before the first
    :func:`get_logger` call (the CLI routes the package's records through its display so,
    without importing :mod:`logging` itself)."""
    if "logging" in sys.modules:
        hook()
    elif hook not in _WHEN_LOGGING:
        _WHEN_LOGGING.append(hook)
