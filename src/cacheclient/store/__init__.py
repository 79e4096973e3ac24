"""The content-addressed store: blobs, build records, locks, its own index (:mod:`.core`)."""

from __future__ import annotations

from cacheclient.store.core import (
    INDEX_MANIFEST,
    Store,
    StoredBuild,
    default_store_root,
    sha256_file,
)

__all__ = ["INDEX_MANIFEST", "Store", "StoredBuild", "default_store_root", "sha256_file"]


def __dir__() -> list[str]:
    return __all__
