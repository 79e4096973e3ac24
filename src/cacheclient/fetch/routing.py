"""Which mirrors to ask for a build, in what order, and how healthy each is during a run."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cacheclient.errors import (
    CacheClientError,
    DownloadError,
    MetadataError,
    StoreError,
    VerificationError,
)

__all__ = [
    "DEFAULT_MIRROR_BASE",
    "MirrorHealth",
    "NotHere",
    "severity",
    "stack_mirror_url",
]


def __dir__() -> list[str]:
    return __all__


DEFAULT_MIRROR_BASE = "https://binaries.spack.io/develop"


def stack_mirror_url(stack: str, base: str | None = None) -> str:
    """The mirror URL of a cache.spack.io stack: ``<base>`` for ``root``, else ``<base>/<stack>``.

    Entries that already are URLs or paths are returned unchanged.

    >>> stack_mirror_url("root"), stack_mirror_url("e4s", "https://m.example/v1")
    ('https://binaries.spack.io/develop', 'https://m.example/v1/e4s')
    """
    if _is_location(stack):
        return stack
    root = (base or DEFAULT_MIRROR_BASE).rstrip("/")
    return root if stack == "root" else f"{root}/{stack}"


def _is_location(value: str) -> bool:
    return "://" in value or value.startswith(("/", ".", "~"))


class NotHere(Exception):
    """The build is not on this mirror (404 on every layout)."""


@dataclass
class MirrorHealth:
    """Failure counts per mirror, and the layout each answered with, shared by the download
    threads of one run (a mirror failing *limit* times is skipped for the rest of it)."""

    limit: int
    failures: dict[str, int] = field(default_factory=dict)
    layouts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def usable(self, mirror: str) -> bool:
        with self.lock:
            return self.failures.get(mirror, 0) < self.limit

    def failed(self, mirror: str) -> None:
        with self.lock:
            self.failures[mirror] = self.failures.get(mirror, 0) + 1


_SEVERITY = (VerificationError, StoreError, MetadataError, DownloadError)


def severity(exc: CacheClientError) -> int:
    """Rank of an error when several mirrors failed: the most telling one is raised."""
    for rank, kind in enumerate(_SEVERITY):
        if isinstance(exc, kind):
            return rank
    return len(_SEVERITY)
