"""Fetching resolved builds into the store, verified (:mod:`.fetcher`; results: :mod:`.results`).

The fetcher's names are imported on first use (:func:`__getattr__`): a command that only
resolves pays for the mirror base URL, not for the fetcher's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cacheclient.fetch.routing import DEFAULT_MIRROR_BASE, stack_mirror_url

if TYPE_CHECKING:
    from cacheclient.fetch.fetcher import fetch_builds
    from cacheclient.fetch.results import FetchedBlob, FetchedBuild, FetchResult

__all__ = [
    "DEFAULT_MIRROR_BASE",
    "FetchResult",
    "FetchedBlob",
    "FetchedBuild",
    "fetch_builds",
    "stack_mirror_url",
]

_LAZY = {
    "fetch_builds": "cacheclient.fetch.fetcher",
    "FetchResult": "cacheclient.fetch.results",
    "FetchedBlob": "cacheclient.fetch.results",
    "FetchedBuild": "cacheclient.fetch.results",
}


def __dir__() -> list[str]:
    return __all__


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
