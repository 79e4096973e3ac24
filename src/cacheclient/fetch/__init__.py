"""Fetching resolved builds into the store, verified (:mod:`.fetcher`; results: :mod:`.results`)."""

from __future__ import annotations

from cacheclient.fetch.fetcher import DEFAULT_MIRROR_BASE, fetch_builds, stack_mirror_url
from cacheclient.fetch.results import FetchedBlob, FetchedBuild, FetchResult

__all__ = [
    "DEFAULT_MIRROR_BASE",
    "FetchResult",
    "FetchedBlob",
    "FetchedBuild",
    "fetch_builds",
    "stack_mirror_url",
]


def __dir__() -> list[str]:
    return __all__
