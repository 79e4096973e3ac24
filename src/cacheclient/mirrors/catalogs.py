"""Opening the sources a command names: cache.spack.io pages and mirrors, as one catalog.

Pages are read from a path, a ``file://`` URL or ``http(s)://``; mirrors through
:func:`cacheclient.mirrors.indexcache.open_mirrors` (their indexes cached in the store, and a
mirror that cannot be read is reported and left out while another can be). Every command and
the library's :func:`cacheclient.install` go through :func:`load_catalog`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from cacheclient.errors import MetadataError, UsageError
from cacheclient.metadata.catalog import Catalog
from cacheclient.mirrors.indexcache import open_mirrors
from cacheclient.store import INDEX_MANIFEST, Store

__all__ = ["load_catalog", "offline_sources", "read_page_text"]


def __dir__() -> list[str]:
    return __all__


def read_page_text(location: str) -> str:
    """The text of a cache.spack.io page at a path, ``file://`` or ``http(s)://`` URL."""
    if location.startswith(("http://", "https://")):
        from cacheclient.transport import transport_for  # noqa: PLC0415

        data = transport_for(location).read(location)
        if data is None:
            raise MetadataError(location, "", "page not found")
        return data.decode("utf-8", errors="replace")
    path = Path(location.removeprefix("file://"))
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"--metadata {location}: cannot read: {exc.strerror}") from None


def offline_sources(metadata: Sequence[str], mirrors: Sequence[str], store_root: Path) -> list[str]:
    """The mirrors an ``--offline`` command reads: those named, else the store itself.

    The store keeps a v3 index of every build it holds (``store.write_index``), so with no
    source named it serves as the mirror, as ``install-from-cache --offline`` always did.

    :raises UsageError: a page that only the network can give, or nothing to read at all.
    """
    remote = [m for m in metadata if m.startswith(("http://", "https://"))]
    if remote:
        raise UsageError(f"--offline: the page {remote[0]} needs the network (save it to a file)")
    if mirrors or metadata:
        return list(mirrors)
    if (store_root / INDEX_MANIFEST).is_file():
        return [str(store_root)]
    raise UsageError(
        f"--offline with no --mirror or --metadata: the store {store_root} holds no builds yet "
        "(fetch them once online, or name a local mirror)"
    )


def load_catalog(
    metadata: Sequence[str],
    mirrors: Sequence[str],
    *,
    store: Store | None = None,
    offline: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Catalog:
    """One catalog from every page in *metadata* and every mirror in *mirrors*, merged.

    :raises UsageError: no source at all, or a page that cannot be read.
    :raises MetadataError: a malformed page, or no mirror whose index can be read.
    :raises DownloadError: no mirror can be reached.
    """
    if not metadata and not mirrors:
        raise UsageError("no source given: pass --metadata PAGE or --mirror URL")
    catalogs: list[Catalog] = []
    if metadata:
        from cacheclient.metadata.page import read_page  # noqa: PLC0415 - imports YAML

        catalogs = [read_page(read_page_text(location), location) for location in metadata]
    if mirrors:
        catalogs += open_mirrors(mirrors, store=store, offline=offline, warn=warn)
    return catalogs[0] if len(catalogs) == 1 else Catalog.merge(catalogs)
