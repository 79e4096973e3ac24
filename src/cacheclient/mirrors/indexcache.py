"""A mirror's index, cached in the store and refreshed only when it changed (FORMATS §3.3).

:func:`open_mirror` keeps each remote index under ``<store>/.cacheclient/indices/<key>/`` with a
small ``meta.json`` (layout, index checksum, ETag, when it was last checked). Within the TTL
(default 600 s, as in Spack) no request is made at all. After it:

* v3: a conditional GET of the index *manifest* (``If-None-Match`` with the stored ETag); on
  304, or when the manifest's db checksum equals the cached one, the cached index is reused and
  no index bytes are transferred. Otherwise the db blob is downloaded and checked.
* v2: with a stored ETag, a conditional GET of ``index.json``; without one, GET
  ``index.json.hash`` and compare it with the cached index's sha256.

The layout found last time is asked first (a v2 mirror does not pay for a v3 probe on every
refresh). Local mirrors (plain paths, ``file://``) are read directly: no network is involved.
The index is untrusted (pitfall 7): it only says where to look; every build is verified when it
is fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cacheclient.errors import (
    CacheClientError,
    DownloadError,
    MetadataError,
    StoreError,
    VerificationError,
)
from cacheclient.metadata.catalog import Catalog
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.layout import INDEX_V2, INDEX_V2_HASH, INDEX_V3, spec_manifest_path
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.mirrors.oci_index import OCI_INDEX_PATH, OCI_LAYOUT, is_oci_url, read_oci_index
from cacheclient.mirrors.open import open_catalog
from cacheclient.store import Store
from cacheclient.transport import Transport, TransportOptions, join_url, transport_for

__all__ = ["DEFAULT_TTL", "IndexState", "open_mirror", "open_mirrors"]


def __dir__() -> list[str]:
    return __all__


DEFAULT_TTL = 600.0


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexState:
    """What ``meta.json`` records about one cached index."""

    url: str
    layout: int
    index_hash: str
    etag: str | None = None
    checked_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "layout": self.layout,
            "index_hash": self.index_hash,
            "etag": self.etag,
            "checked_at": self.checked_at,
        }


def _is_remote(url: str) -> bool:
    return "://" in url and not url.lower().startswith("file:")


class _Cache:
    def __init__(self, store: Store, url: str) -> None:
        self.store = store
        self.url = url
        self.key = hashlib.sha256(url.encode()).hexdigest()[:20]
        self.relative = f".cacheclient/indices/{self.key}"

    @property
    def folder(self) -> Path:
        return self.store.root / self.relative

    def state(self) -> IndexState | None:
        try:
            raw = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
            state = IndexState(
                url=str(raw["url"]),
                layout=int(raw["layout"]),
                index_hash=str(raw["index_hash"]),
                etag=raw.get("etag") if isinstance(raw.get("etag"), str) else None,
                checked_at=float(raw.get("checked_at", 0.0)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if state.url != self.url or not (self.folder / "index.json").is_file():
            return None
        return state

    def index_bytes(self) -> bytes | None:
        try:
            return (self.folder / "index.json").read_bytes()
        except OSError:
            return None

    def index_size(self) -> int | None:
        try:
            return (self.folder / "index.json").stat().st_size
        except OSError:
            return None

    def save(self, state: IndexState, index: bytes | None) -> None:
        """Best effort: a read-only store still works, it just cannot cache."""
        with contextlib.suppress(StoreError):
            if index is not None:
                self.store.write_file(f"{self.relative}/index.json", index)
            meta = json.dumps(state.to_dict(), indent=1).encode()
            self.store.write_file(f"{self.relative}/meta.json", meta)


STORED_INDEX_ABOVE = 8 * 1024 * 1024
"""Indexes larger than this (bytes) are kept parsed on disk
(:mod:`cacheclient.mirrors.parsed_index`), keyed by the index checksum: the first read of a new
index writes it once, later commands open it in milliseconds and build only the records they
touch instead of parsing the whole JSON."""


def _stored(
    url: str, cache: _Cache, state: IndexState, data: Callable[[], bytes], source: str
) -> Catalog:
    """The catalog from the on-disk index store for *state*'s checksum (built on first use)."""
    from cacheclient.mirrors.parsed_index import open_index_store  # noqa: PLC0415

    stored = open_index_store(
        cache.folder,
        state.index_hash,
        source=source,
        data=data,
        stacks=(url,),
        manifest_path_for=spec_manifest_path if state.layout == 3 else None,
    )
    for old in cache.folder.glob("*.sqlite"):  # stores of indexes that have been replaced
        if old.name != f"{state.index_hash}.sqlite":
            old.unlink(missing_ok=True)
    catalog = Catalog.lazy(source=url, by_name=stored.hashes_by_name(), build=stored.get)
    catalog.source = url
    return catalog


def _catalog(
    url: str, cache: _Cache, state: IndexState, data: bytes | None, source: str
) -> Catalog | None:
    """The mirror's catalog from *data*, or from the cached index when *data* is None
    (None when there is no cached index)."""

    def load() -> bytes:
        body = data if data is not None else cache.index_bytes()
        if body is None:
            raise StoreError(f"{cache.folder}: the cached index vanished")
        return body

    size = len(data) if data is not None else cache.index_size()
    if size is None:
        return None
    if size > STORED_INDEX_ABOVE and len(state.index_hash) == 64:
        # A read-only or full store cannot keep it: parse instead.
        with contextlib.suppress(StoreError, OSError, sqlite3.Error):
            return _stored(url, cache, state, load, source)
    try:
        body = load()
    except StoreError:
        return None
    return _parse(url, state.layout, body, source)


def _parse(url: str, layout: int, data: bytes, source: str) -> Catalog:
    if layout == 3:
        catalog = parse_database(data, source, stacks=(url,), manifest_path_for=spec_manifest_path)
    else:
        catalog = parse_database(data, source, stacks=(url,))
    catalog.source = url
    return catalog


def _refresh_v3(
    transport: Transport, url: str, old: IndexState | None
) -> tuple[IndexState, bytes | None] | None:
    """``(state, new index bytes or None if unchanged)``; None when the mirror has no v3 index."""
    manifest_url = join_url(url, INDEX_V3)
    etag = old.etag if old is not None and old.layout == 3 else None
    fetched = transport.get(manifest_url, etag=etag)
    if fetched is None:
        return None
    now = time.time()
    if fetched.status == 304 and old is not None:
        return IndexState(
            url=url, layout=3, index_hash=old.index_hash, etag=fetched.etag, checked_at=now
        ), None
    try:
        manifest = parse_manifest(fetched.body, manifest_url)
    except MetadataError:
        # Once more: a body without Content-Length cut short looks complete.
        again = transport.get(manifest_url)
        if again is None or again.body == fetched.body:
            raise
        fetched = again
        manifest = parse_manifest(fetched.body, manifest_url)
    blob = manifest.index_blob
    if blob is None:
        raise MetadataError(manifest_url, "data", "no application/vnd.spack.db.* record")
    state = IndexState(
        url=url, layout=3, index_hash=blob.checksum, etag=fetched.etag, checked_at=now
    )
    if old is not None and old.layout == 3 and old.index_hash == blob.checksum:
        return state, None
    blob_url = join_url(url, blob.path)
    data = transport.read(blob_url, retry_not_found=True)
    if data is None:
        raise MetadataError(blob_url, "", "index blob listed in the manifest does not exist")
    actual = hashlib.sha256(data).hexdigest()
    if len(data) != blob.size or actual != blob.checksum:  # cut short? once more
        data = transport.read(blob_url, retry_not_found=True) or b""
        actual = hashlib.sha256(data).hexdigest()
    if len(data) != blob.size or actual != blob.checksum:
        raise VerificationError(
            f"{blob_url}: index blob does not match its manifest "
            f"(expected sha256 {blob.checksum}, {blob.size} bytes; got {actual}, {len(data)})",
            url=blob_url,
            mirror=url,
            expected=blob.checksum,
            actual=actual,
        )
    return state, data


def _refresh_v2(
    transport: Transport, url: str, old: IndexState | None
) -> tuple[IndexState, bytes | None] | None:
    index_url = join_url(url, INDEX_V2)
    now = time.time()
    previous = old if old is not None and old.layout == 2 else None
    if previous is not None and previous.etag:
        fetched = transport.get(index_url, etag=previous.etag)
        if fetched is None:
            return None
        if fetched.status == 304:
            return IndexState(
                url=url,
                layout=2,
                index_hash=previous.index_hash,
                etag=fetched.etag or previous.etag,
                checked_at=now,
            ), None
        body = fetched.body
        digest = hashlib.sha256(body).hexdigest()
        return IndexState(
            url=url, layout=2, index_hash=digest, etag=fetched.etag, checked_at=now
        ), body
    if previous is not None:
        remote_hash = transport.read(join_url(url, INDEX_V2_HASH))
        text = (remote_hash or b"")[:64].decode("ascii", "replace").strip()
        if text == previous.index_hash:
            return IndexState(url=url, layout=2, index_hash=text, etag=None, checked_at=now), None
    fetched = transport.get(index_url)
    if fetched is None:
        return None
    digest = hashlib.sha256(fetched.body).hexdigest()
    return IndexState(
        url=url, layout=2, index_hash=digest, etag=fetched.etag, checked_at=now
    ), fetched.body


def open_mirror(
    url: str,
    *,
    store: Store | None = None,
    ttl: float = DEFAULT_TTL,
    offline: bool = False,
    options: TransportOptions | None = None,
) -> Catalog:
    """The catalog of the mirror at *url*, from the store's cache when it is still fresh.

    :raises MetadataError: not a mirror, or a malformed index.
    :raises DownloadError: the mirror cannot be reached (or ``offline`` with nothing cached).
    """
    url = url.rstrip("/") or url
    if not _is_remote(url):
        from cacheclient.transport import reader_for  # noqa: PLC0415

        return open_catalog(url, reader_for(url, options=options))
    store = store or Store()
    cache = _Cache(store, url)
    old = cache.state()
    if old is not None and (offline or 0 <= time.time() - old.checked_at < ttl):
        cached = _catalog(url, cache, old, None, f"{url} (cached index)")
        if cached is not None:
            return cached
    if offline:
        raise DownloadError(
            f"{url}: offline and no cached index in {store.root} (run once without --offline)",
            url=url,
        )
    # One process refreshes a mirror's index at a time; the others then find it fresh.
    with store.named_lock(f"index-{cache.key}"):
        old = cache.state()
        if old is not None and 0 <= time.time() - old.checked_at < ttl:
            cached = _catalog(url, cache, old, None, f"{url} (cached index)")
            if cached is not None:
                return cached
        return _refresh(url, cache, old, options)


def _refresh_oci(
    transport: Transport, url: str, old: IndexState | None
) -> tuple[IndexState, bytes | None]:
    """A registry's ``index.spack`` (:mod:`cacheclient.mirrors.oci_index`)."""
    prior = old if old is not None and old.layout == OCI_LAYOUT else None
    found = read_oci_index(
        transport,
        url,
        old_hash=prior.index_hash if prior else None,
        old_etag=prior.etag if prior else None,
    )
    state = IndexState(
        url=url,
        layout=OCI_LAYOUT,
        index_hash=found.index_hash,
        etag=found.etag,
        checked_at=time.time(),
    )
    return state, found.data


def _refresh(
    url: str, cache: _Cache, old: IndexState | None, options: TransportOptions | None
) -> Catalog:
    transport = transport_for(url, options)
    # The layout seen last time is asked first, so an unchanged v2 index costs one request.
    if is_oci_url(url):
        result: tuple[IndexState, bytes | None] | None = _refresh_oci(transport, url, old)
    elif old is not None and old.layout == 2:
        result = _refresh_v2(transport, url, old) or _refresh_v3(transport, url, old)
    else:
        result = _refresh_v3(transport, url, old) or _refresh_v2(transport, url, old)
    if result is None:
        raise MetadataError(
            url, "", f"not a Spack binary mirror: neither {INDEX_V3} nor {INDEX_V2} found at {url}"
        )
    state, data = result
    changed = data is not None
    if data is None:
        data = cache.index_bytes()
    if data is None:  # the cached copy vanished underneath us: fetch it again
        again = (
            _refresh_oci(transport, url, None)
            if is_oci_url(url)
            else _refresh_v3(transport, url, None) or _refresh_v2(transport, url, None)
        )
        if again is None or again[1] is None:
            raise DownloadError(f"{url}: the index disappeared while reading it", url=url)
        state, data = again[0], again[1]
        changed = True
    layout_index = {3: INDEX_V3, OCI_LAYOUT: OCI_INDEX_PATH}
    source = join_url(url, layout_index.get(state.layout, INDEX_V2))
    catalog = _catalog(url, cache, state, data, source)
    if catalog is None:  # pragma: no cover - data is given, so a catalog is always built
        raise DownloadError(f"{url}: the index could not be read", url=url)
    cache.save(state, data if changed else None)
    return catalog


def open_mirrors(
    urls: Sequence[str],
    *,
    store: Store | None = None,
    offline: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[Catalog]:
    """The catalogs of every mirror in *urls* that can be read.

    One unreachable or broken mirror does not fail the job while another can be read: it is
    reported through *warn* and left out. When none can be read, the first error is raised
    (and not also reported as a warning: a person reads it once).
    """
    catalogs: list[Catalog] = []
    errors: list[CacheClientError] = []
    failed: list[str] = []
    for url in urls:
        try:
            catalogs.append(open_mirror(url, store=store, offline=offline))
        except (DownloadError, MetadataError, VerificationError) as exc:
            errors.append(exc)
            failed.append(url)
    skipped = [(u, e) for u, e in zip(failed, errors, strict=True)][0 if catalogs else 1 :]
    if warn is not None:
        for url, failure in skipped:
            text = str(failure)
            warn(f"mirror skipped: {text}" if url in text else f"mirror {url} skipped: {text}")
    if errors and not catalogs:
        raise errors[0]
    return catalogs
