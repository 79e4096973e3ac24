"""Progress and explanation hooks: :class:`Reporter`, with no-op methods.

In the style of resolvelib's ``BaseReporter``: the fetcher and installer call the hooks, libraries
ignore them or subclass for logs, and the CLI renders them (:mod:`cacheclient.cli.render`). Hooks
may be called from several download threads at once.
"""

from __future__ import annotations

from collections.abc import Mapping

from cacheclient.model import BuildRecord

__all__ = ["Reporter"]


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
