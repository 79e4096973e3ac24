"""A mirror's index, cached in the store and refreshed only when it changed (FORMATS §3.3).

:func:`open_mirror` keeps each remote index under ``<store>/.cacheclient/indices/<key>/`` with a
small ``meta.json`` (layout, index checksum, ETag, size, when it was last checked). Within the
TTL (default 600 s, as in Spack) no request is made at all. After it:

* v3: a conditional GET of the index *manifest* (``If-None-Match`` with the stored ETag); on
  304, or when the manifest's db checksum equals the cached one, the cached index is reused and
  no index bytes are transferred. Otherwise the db blob is streamed into the cache folder,
  hashed as it arrives, and checked against the manifest.
* v2: with a stored ETag, a conditional GET of ``index.json``; without one, GET
  ``index.json.hash`` and compare it with the cached index's sha256. A first download (or one
  after a changed ``.hash``) is streamed into the cache folder and hashed as it arrives, as for
  v3.

Indexes above :data:`STORED_INDEX_ABOVE` are kept parsed on disk
(:mod:`cacheclient.mirrors.parsed_index`), keyed by the index checksum: the first read of a new
index writes it once; later commands open it and decode only the records they touch, parsing no
JSON and importing no HTTP library. Local mirrors (plain paths, ``file://``, e.g. on NFS) with
such an index are cached the same way, checked on every run: v3 by the manifest's checksum, v2
by ``index.json``'s size, mtime, ctime and inode plus ``index.json.hash`` (the sha256 is
computed again when any of them moved), so a changed index is always noticed. Smaller local
indexes are simply read.

The index is untrusted (pitfall 7): it only says where to look; every build is verified when it
is fetched. The cached copies are untrusted too: the cached ``index.json`` is checked against
its sha256 before a parsed index is built from it, and the parsed index checks itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cacheclient import safefs
from cacheclient.errors import (
    CacheClientError,
    DownloadError,
    MetadataError,
    StoreError,
    VerificationError,
    redact,
)
from cacheclient.metadata.catalog import Catalog
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.layout import (
    INDEX_V2,
    INDEX_V2_HASH,
    INDEX_V3,
    OCI_LAYOUT,
    is_oci_url,
    spec_manifest_path,
)
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.mirrors.open import local_reader, local_root, open_catalog, read_blob
from cacheclient.store import Store

if TYPE_CHECKING:
    from cacheclient.transport import Fetched, Transport, TransportOptions

__all__ = ["DEFAULT_TTL", "STORED_INDEX_ABOVE", "IndexState", "open_mirror", "open_mirrors"]


def __dir__() -> list[str]:
    return __all__


DEFAULT_TTL = 600.0

STORED_INDEX_ABOVE = 8 * 1024 * 1024
"""Indexes larger than this (bytes) are kept parsed on disk (see the module text)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexState:
    """What ``meta.json`` records about one cached index."""

    url: str
    layout: int
    index_hash: str
    etag: str | None = None
    checked_at: float = 0.0
    size: int | None = None
    local: tuple[int, ...] | None = None
    """A local v2 ``index.json``'s size, mtime, ctime, inode and device when it was hashed."""
    hash_file: str | None = None
    """A local v2 mirror's ``index.json.hash`` text then (``None``: there was none)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": redact(self.url),  # never user:password@
            "layout": self.layout,
            "index_hash": self.index_hash,
            "etag": self.etag,
            "checked_at": self.checked_at,
            "size": self.size,
            "local": None if self.local is None else list(self.local),
            "hash_file": self.hash_file,
        }

    @classmethod
    def from_dict(cls, raw: Any) -> IndexState:
        """:raises ValueError, KeyError, TypeError: not a state this module wrote."""
        size = raw.get("size")
        local = raw.get("local")
        hash_file = raw.get("hash_file")
        return cls(
            url=str(raw["url"]),
            layout=int(raw["layout"]),
            index_hash=str(raw["index_hash"]),
            etag=raw.get("etag") if isinstance(raw.get("etag"), str) else None,
            checked_at=float(raw.get("checked_at", 0.0)),
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            local=tuple(int(x) for x in local) if isinstance(local, list) else None,
            hash_file=hash_file if isinstance(hash_file, str) else None,
        )


def _is_remote(url: str) -> bool:
    return "://" in url and not url.lower().startswith("file:")


def _join(base: str, relative: str) -> str:
    return base.rstrip("/") + "/" + relative.lstrip("/")


class _CachedIndexGone(MetadataError):
    """The cached ``index.json`` is missing or no longer matches its checksum."""


class _Cache:
    """One index's folder in the store: ``meta.json``, ``index.json`` (remote mirrors only) and
    the parsed index ``<checksum>.sqlite``."""

    def __init__(self, store: Store, url: str, key: str | None = None) -> None:
        self.store = store
        self.url = url
        self.key = hashlib.sha256((key or url).encode()).hexdigest()[:20]
        self.relative = f".cacheclient/indices/{self.key}"

    @property
    def folder(self) -> Path:
        """The folder, checked on every use like anything below the store: each component must
        be a real directory (a planted symlink is refused, StoreError); a missing one is fine
        here (:meth:`make_folder` creates it)."""
        with contextlib.suppress(FileNotFoundError):
            os.close(safefs.open_dir(self.store.root, self.relative.split("/")))
        return self.store.root / self.relative

    def make_folder(self) -> Path:
        """:attr:`folder`, created when missing (OSError when the store cannot be written)."""
        os.close(safefs.open_dir(self.store.root, self.relative.split("/"), create=True))
        return self.store.root / self.relative

    @property
    def index_path(self) -> Path:
        return self.folder / "index.json"

    def state(self, *, needs_index: bool = True) -> IndexState | None:
        try:
            meta = safefs.read_file(self.folder / "meta.json", base=self.store.root, limit=1 << 20)
            if meta is None:
                return None
            state = IndexState.from_dict(json.loads(meta))
        except (OSError, StoreError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if state.url != redact(self.url) or (needs_index and not self.index_path.is_file()):
            return None
        return state

    def index_size(self) -> int | None:
        try:
            return self.index_path.stat().st_size
        except OSError:
            return None

    def read_index(self, checksum: str, source: str) -> bytes:
        """The cached index, checked against *checksum* (it is read back from the store)."""
        try:  # never through a planted symlink, never waiting on a FIFO
            data = safefs.read_file(self.index_path, base=self.store.root)
        except OSError:
            data = None
        if data is None or hashlib.sha256(data).hexdigest() != checksum:
            with contextlib.suppress(OSError):
                self.index_path.unlink()
            raise _CachedIndexGone(
                source, "", "the cached index is missing or damaged; run again to download it"
            )
        return data

    def put_index(self, data: bytes | Path) -> None:
        """Keep the index (a verified download already in the folder, or bytes). Not synced:
        it is checked against its checksum whenever it is read back. Best effort."""
        with contextlib.suppress(OSError):
            if isinstance(data, Path):
                os.replace(data, self.index_path)
                data.with_name(data.name + ".meta").unlink(missing_ok=True)
                return
            tmp = self.make_folder() / f".index-{os.getpid()}.tmp"
            try:
                tmp.write_bytes(data)
                os.replace(tmp, self.index_path)
            finally:
                tmp.unlink(missing_ok=True)

    def save(self, state: IndexState) -> None:
        """Best effort: a read-only store still works, it just cannot cache."""
        with contextlib.suppress(StoreError):
            meta = json.dumps(state.to_dict(), indent=1).encode()
            self.store.write_file(f"{self.relative}/meta.json", meta, private=True)

    def drop_other_parsed(self, checksum: str) -> None:
        """Remove the parsed indexes of indexes that have been replaced (and partial ones left
        by a writer that died more than an hour ago; a live one may be writing)."""
        with contextlib.suppress(OSError):
            for old in self.folder.glob("*.sqlite"):
                if old.name.startswith("."):
                    if time.time() - old.stat().st_mtime > 3600:
                        old.unlink(missing_ok=True)
                elif old.name != f"{checksum}.sqlite":
                    old.unlink(missing_ok=True)


def _parse(url: str, layout: int, data: bytes, source: str) -> Catalog:
    if layout == 3:
        catalog = parse_database(data, source, stacks=(url,), manifest_path_for=spec_manifest_path)
    else:
        catalog = parse_database(data, source, stacks=(url,))
    catalog.source = url
    return catalog


def _catalog(
    url: str,
    *,
    layout: int,
    checksum: str,
    size: int,
    source: str,
    data: Callable[[], bytes],
    cache: _Cache | None,
) -> Catalog:
    """The catalog of one index: from its parsed index when it is large (built from
    ``data()`` when missing or damaged), else parsed from ``data()``."""
    if cache is not None and size > STORED_INDEX_ABOVE and len(checksum) == 64:
        from cacheclient.mirrors.parsed_index import open_parsed_index  # noqa: PLC0415

        try:
            index = open_parsed_index(
                cache.folder,
                checksum,
                source=source,
                data=data,
                stacks=(url,),
                manifest_path_for=spec_manifest_path if layout == 3 else None,
            )
        except (StoreError, OSError):
            pass  # a read-only or full store cannot keep it: parse instead
        else:
            cache.drop_other_parsed(checksum)
            return Catalog.over(index, source=url)
    return _parse(url, layout, data(), source)


def _index_source(url: str, layout: int) -> str:
    if layout == OCI_LAYOUT:
        from cacheclient.mirrors.oci_index import OCI_INDEX_PATH  # noqa: PLC0415 - registries only

        return _join(url, OCI_INDEX_PATH)
    return _join(url, INDEX_V3 if layout == 3 else INDEX_V2)


def _cached_catalog(url: str, cache: _Cache, state: IndexState) -> Catalog | None:
    """The catalog from the cache without any request (None when the cache cannot give it)."""
    size = state.size if state.size is not None else cache.index_size()
    if size is None:
        return None
    source = _index_source(url, state.layout)
    try:
        return _catalog(
            url,
            layout=state.layout,
            checksum=state.index_hash,
            size=size,
            source=source,
            data=lambda: cache.read_index(state.index_hash, source),
            cache=cache,
        )
    except _CachedIndexGone:
        return None


Body = bytes | Path
"""New index bytes, or a verified download of them waiting in the cache folder."""


def _download_blob(
    transport: Transport, cache: _Cache, blob_url: str, *, size: int, checksum: str, mirror: str
) -> Body:
    """Stream the index blob into the cache folder, hashed as it arrives (into memory when the
    store cannot be written), and check it against the manifest."""
    partial = cache.folder / "index.json.partial"

    def mismatch(actual: str | None, got: str) -> VerificationError:
        return VerificationError(
            f"{blob_url}: index blob does not match its manifest "
            f"(expected sha256 {checksum}, {size} bytes; got {got})",
            url=blob_url,
            mirror=mirror,
            expected=checksum,
            actual=actual,
        )

    try:
        cache.make_folder()
        result = transport.download(blob_url, partial, expected_size=size)
    except VerificationError as exc:  # a body longer or shorter than the manifest says
        raise mismatch(exc.actual, f"{exc.actual} bytes") from None
    except (StoreError, OSError):
        body = transport.read(blob_url, retry_not_found=True, limit=size)
        if body is None:
            raise MetadataError(
                blob_url, "", "index blob listed in the manifest does not exist"
            ) from None
        actual, length = hashlib.sha256(body).hexdigest(), len(body)
        got: Body = body
    else:
        if result is None:
            raise MetadataError(blob_url, "", "index blob listed in the manifest does not exist")
        actual, length, got = result.sha256, result.size, partial
    if length != size or actual != checksum:
        if isinstance(got, Path):
            got.unlink(missing_ok=True)
        raise mismatch(actual, f"{actual}, {length} bytes")
    return got


def _refresh_v3(
    transport: Transport,
    cache: _Cache,
    url: str,
    old: IndexState | None,
    seen: Fetched | None = None,
) -> tuple[IndexState, Body | None] | None:
    """``(state, new index or None if unchanged)``; None when the mirror has no v3 index.

    *seen*: the manifest already fetched for this check (by the quick check), used as is."""
    manifest_url = _join(url, INDEX_V3)
    etag = old.etag if old is not None and old.layout == 3 else None
    fetched = seen if seen is not None else transport.get(manifest_url, etag=etag)
    if fetched is None:
        return None
    now = time.time()
    if fetched.status == 304 and old is not None:
        return IndexState(
            url=url,
            layout=3,
            index_hash=old.index_hash,
            etag=fetched.etag,
            checked_at=now,
            size=old.size,
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
        url=url,
        layout=3,
        index_hash=blob.checksum,
        etag=fetched.etag,
        checked_at=now,
        size=blob.size,
    )
    if old is not None and old.layout == 3 and old.index_hash == blob.checksum:
        return state, None
    blob_url = _join(url, blob.path)
    return state, _download_blob(
        transport, cache, blob_url, size=blob.size, checksum=blob.checksum, mirror=url
    )


def _download_v2(
    transport: Transport, cache: _Cache, index_url: str
) -> tuple[Body, str, int, str | None] | None:
    """Stream ``index.json`` into the cache folder, hashed as it arrives (into memory when the
    store cannot be written): ``(body, sha256, size, ETag)``, or None when there is none."""
    from cacheclient.transport import INDEX_LIMIT  # noqa: PLC0415 - only when a request is due

    partial = cache.folder / "index.json.partial"
    try:
        cache.make_folder()
        result = transport.download(index_url, partial, retry_not_found=False, limit=INDEX_LIMIT)
    except (StoreError, OSError):
        fetched = transport.get(index_url, limit=INDEX_LIMIT)
        if fetched is None:
            return None
        body = fetched.body
        return body, hashlib.sha256(body).hexdigest(), len(body), fetched.etag
    if result is None:
        return None
    return partial, result.sha256, result.size, result.etag


def _hash_text(body: bytes | None) -> str:
    """The sha256 an ``index.json.hash`` file holds (its first 64 characters)."""
    return (body or b"")[:64].decode("ascii", "replace").strip()


def _refresh_v2(
    transport: Transport, cache: _Cache, url: str, old: IndexState | None
) -> tuple[IndexState, Body | None] | None:
    from cacheclient.transport import INDEX_LIMIT  # noqa: PLC0415 - only when a request is due

    index_url = _join(url, INDEX_V2)
    now = time.time()
    previous = old if old is not None and old.layout == 2 else None
    if previous is not None and previous.etag:
        fetched = transport.get(index_url, etag=previous.etag, limit=INDEX_LIMIT)
        if fetched is None:
            return None
        if fetched.status == 304:
            return IndexState(
                url=url,
                layout=2,
                index_hash=previous.index_hash,
                etag=fetched.etag or previous.etag,
                checked_at=now,
                size=previous.size,
            ), None
        body = fetched.body
        digest = hashlib.sha256(body).hexdigest()
        return IndexState(
            url=url, layout=2, index_hash=digest, etag=fetched.etag, checked_at=now, size=len(body)
        ), body
    if previous is not None:
        text = _hash_text(transport.read(_join(url, INDEX_V2_HASH)))
        if text == previous.index_hash:
            return IndexState(
                url=url, layout=2, index_hash=text, etag=None, checked_at=now, size=previous.size
            ), None
    downloaded = _download_v2(transport, cache, index_url)
    if downloaded is None:
        return None
    got, digest, size, etag = downloaded
    return IndexState(
        url=url, layout=2, index_hash=digest, etag=etag, checked_at=now, size=size
    ), got


def open_mirror(
    url: str,
    *,
    store: Store | None = None,
    ttl: float = DEFAULT_TTL,
    offline: bool = False,
    options: TransportOptions | None = None,
    warn: Callable[[str], None] | None = None,
) -> Catalog:
    """The catalog of the mirror at *url*, from the store's cache when it is still fresh.

    When the cached index is older than *ttl* and the mirror cannot be reached, the cached
    index is used anyway (as Spack does), with a warning through *warn* and in the catalog's
    warnings: builds the store already holds can still be installed.

    :raises MetadataError: not a mirror, or a malformed index.
    :raises DownloadError: the mirror cannot be reached and nothing is cached (or ``offline``
        with nothing cached).
    """
    url = url.rstrip("/") or url
    if not _is_remote(url):
        return _open_local(url, store)
    store = store or Store()
    cache = _Cache(store, url)
    old = cache.state()
    if old is not None and (offline or 0 <= time.time() - old.checked_at < ttl):
        cached = _cached_catalog(url, cache, old)
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
            cached = _cached_catalog(url, cache, old)
            if cached is not None:
                return cached
        try:
            return _refresh(url, cache, old, options)
        except DownloadError as exc:
            stale = _cached_catalog(url, cache, old) if old else None
            if stale is None or old is None:
                raise
            message = (
                f"{url} is unreachable; using its index cached {_age(old.checked_at)} ago ({exc})"
            )
            stale.warnings = (*stale.warnings, message)
            if warn is not None:
                warn(message)
            return stale


def _age(checked_at: float) -> str:
    """How long ago *checked_at* was, for people: ``42 s``, ``12 min``, ``3 h``, ``2 days``."""
    seconds = max(0, int(time.time() - checked_at))
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _refresh_oci(
    transport: Transport, url: str, old: IndexState | None
) -> tuple[IndexState, Body | None]:
    """A registry's ``index.spack`` (:mod:`cacheclient.mirrors.oci_index`)."""
    from cacheclient.mirrors.oci_index import read_oci_index  # noqa: PLC0415 - registries only

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
        size=len(found.data) if found.data is not None else (prior.size if prior else None),
    )
    return state, found.data


def _still_current(
    url: str, old: IndexState, options: TransportOptions | None
) -> tuple[IndexState | None, Fetched | None]:
    """``(state, manifest)``: *old*'s successor when one quick request shows the index
    unchanged, else ``None`` (the full transport then asks: :mod:`cacheclient.transport.quick`);
    and the v3 manifest that request brought when it shows a new index (so it is not asked for
    twice).

    The question asked is the one :func:`_refresh_v3` or :func:`_refresh_v2` asks first for
    the layout seen last time, so the answer is the same, without importing the HTTP library.
    """
    from cacheclient.transport import (  # noqa: PLC0415 - only when a request is due
        METADATA_LIMIT,
        builtin_for,
        current_options,
    )
    from cacheclient.transport.quick import QUICK_TIMEOUT, quick_get  # noqa: PLC0415

    if not builtin_for(url):  # a transport of its own for this scheme: it asks
        return None, None
    opts = options or current_options()
    timeout = min(QUICK_TIMEOUT, opts.connect_timeout, opts.read_timeout)

    def ask(path: str, *, etag: str | None = None, limit: int = METADATA_LIMIT) -> Fetched | None:
        return quick_get(
            _join(url, path), etag=etag, limit=limit, user_agent=opts.user_agent, timeout=timeout
        )

    now = time.time()
    if old.layout == 3:
        fetched = ask(INDEX_V3, etag=old.etag)
        if fetched is None:
            return None, None
        if fetched.status == 304:
            return replace(old, url=url, etag=fetched.etag, checked_at=now), None
        try:
            blob = parse_manifest(fetched.body, url).index_blob
        except MetadataError:
            return None, None
        if blob is None or blob.checksum != old.index_hash:
            return None, fetched
        return replace(old, url=url, etag=fetched.etag, checked_at=now, size=blob.size), None
    if old.layout == 2 and old.etag:
        # only a 304 helps here: a 200 is the whole index, left to the full transport unread
        fetched = ask(INDEX_V2, etag=old.etag, limit=0)
        if fetched is None or fetched.status != 304:
            return None, None
        return replace(old, url=url, etag=fetched.etag or old.etag, checked_at=now), None
    if old.layout == 2:
        fetched = ask(INDEX_V2_HASH)
        if fetched is None or fetched.status != 200:
            return None, None
        if _hash_text(fetched.body) != old.index_hash:
            return None, None
        return replace(old, url=url, etag=None, checked_at=now), None
    return None, None


def _refresh(
    url: str, cache: _Cache, old: IndexState | None, options: TransportOptions | None
) -> Catalog:
    manifest: Fetched | None = None
    if old is not None and _is_remote(url) and not is_oci_url(url):
        current, manifest = _still_current(url, old, options)
        catalog = None if current is None else _cached_catalog(url, cache, current)
        if current is not None and catalog is not None:
            cache.save(current)
            return catalog
    from cacheclient.transport import transport_for  # noqa: PLC0415 - only when a request is due

    transport = transport_for(url, options)

    def fetch(previous: IndexState | None) -> tuple[IndexState, Body | None] | None:
        if is_oci_url(url):  # a registry: its index.spack tag
            return _refresh_oci(transport, url, previous)
        # The layout seen last time is asked first, so an unchanged v2 index costs one request.
        if previous is not None and previous.layout == 2:
            return _refresh_v2(transport, cache, url, previous) or _refresh_v3(
                transport, cache, url, previous
            )
        seen = manifest if previous is old else None  # the quick check's answer, if it had one
        return _refresh_v3(transport, cache, url, previous, seen) or _refresh_v2(
            transport, cache, url, previous
        )

    result = fetch(old)
    if result is None:
        raise MetadataError(
            url, "", f"not a Spack binary mirror: neither {INDEX_V3} nor {INDEX_V2} found at {url}"
        )
    state, body = result
    if body is None:  # unchanged
        catalog = _cached_catalog(url, cache, state)
        if catalog is not None:
            cache.save(state)
            return catalog
        # the cached copy vanished or was damaged underneath us: fetch it again
        again = fetch(None)
        refetched = None if again is None else again[1]
        if again is None or refetched is None:
            raise DownloadError(f"{url}: the index disappeared while reading it", url=url)
        state, body = again[0], refetched
    new: Body = body
    cache.put_index(new)
    if isinstance(new, Path):
        kept = cache.index_path if not new.exists() else new

        def data() -> bytes:
            try:
                return kept.read_bytes()
            except OSError as exc:
                raise StoreError(f"{kept}: cannot read the index: {exc.strerror}") from None

    else:
        fresh = new

        def data() -> bytes:
            return fresh

    size = state.size if state.size is not None else len(data())
    catalog = _catalog(
        url,
        layout=state.layout,
        checksum=state.index_hash,
        size=size,
        source=_index_source(url, state.layout),
        data=data,
        cache=cache,
    )
    cache.save(state)
    return catalog


# --------------------------------------------------------------------------- local mirrors


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _open_local(url: str, store: Store | None) -> Catalog:
    """A local mirror's catalog; large indexes through the cache, checked every time."""
    read = local_reader(url)
    raw3 = read(INDEX_V3)
    blob = None
    if raw3 is not None:
        blob = parse_manifest(raw3, _join(url, INDEX_V3)).index_blob
    try:
        stat2: os.stat_result | None = (local_root(url) / INDEX_V2).stat()
    except OSError:
        stat2 = None
    big3 = (
        blob is not None and blob.size > STORED_INDEX_ABOVE and blob.checksum_algorithm == "sha256"
    )
    big2 = stat2 is not None and stat2.st_size > STORED_INDEX_ABOVE
    if not (big3 or big2):
        return open_catalog(url, read)
    store = store or Store()
    catalogs: list[Catalog] = []
    if raw3 is not None:
        if big3 and blob is not None:
            index_blob = blob
            catalogs.append(
                _catalog(
                    url,
                    layout=3,
                    checksum=index_blob.checksum,
                    size=index_blob.size,
                    source=_join(url, index_blob.path),
                    data=lambda: read_blob(read, url, index_blob, what="index"),
                    cache=_Cache(store, url, key=f"{url}#v3"),
                )
            )
        else:
            catalogs.append(open_catalog(url, lambda rel: None if rel == INDEX_V2 else read(rel)))
    if stat2 is not None:
        if big2:
            catalogs.append(_local_v2(url, local_root(url) / INDEX_V2, stat2, read, store))
        else:
            catalogs.append(open_catalog(url, lambda rel: None if rel == INDEX_V3 else read(rel)))
    catalog = Catalog.merge(catalogs)
    catalog.source = url
    return catalog


def _local_v2(
    url: str, path: Path, st: os.stat_result, read: Callable[[str], bytes | None], store: Store
) -> Catalog:
    cache = _Cache(store, url, key=f"{url}#v2")
    source = _join(url, INDEX_V2)
    raw_hash = read(INDEX_V2_HASH)
    hash_file = None if raw_hash is None else raw_hash[:64].decode("ascii", "replace").strip()
    old = cache.state(needs_index=False)
    if (
        old is not None
        and old.layout == 2
        and old.local == _stat_key(st)
        and old.hash_file == hash_file
        and len(old.index_hash) == 64
    ):
        checksum = old.index_hash

        def data() -> bytes:
            body = path.read_bytes()
            if hashlib.sha256(body).hexdigest() != checksum:
                raise MetadataError(source, "", "the index changed while it was read; run again")
            return body

        return _catalog(
            url, layout=2, checksum=checksum, size=st.st_size, source=source, data=data, cache=cache
        )
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise DownloadError(f"{path}: cannot read: {exc.strerror or exc}", url=str(path)) from None
    checksum = hashlib.sha256(body).hexdigest()
    catalog = _catalog(
        url,
        layout=2,
        checksum=checksum,
        size=len(body),
        source=source,
        data=lambda: body,
        cache=cache,
    )
    cache.save(
        IndexState(
            url=url,
            layout=2,
            index_hash=checksum,
            checked_at=time.time(),
            size=len(body),
            local=_stat_key(st),
            hash_file=hash_file,
        )
    )
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
            catalogs.append(open_mirror(url, store=store, offline=offline, warn=warn))
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
