"""The local content-addressed store, laid out as a Spack v3 mirror that many processes share.

Layout under the root (everything outside ``.cacheclient/`` is a valid Spack mirror)::

    blobs/sha256/<c[:2]>/<c>                              verified blobs (tarballs, spec, index)
    v3/layout.json                                        {"signing": "gpg"}
    v3/manifests/spec/<N>/<N>-<V>-<H>.spec.manifest.json  byte-for-byte as fetched (still verifies)
    v3/manifests/index/index.manifest.json                index of the v3 builds
    build_cache/<...>.spec.json[.sig], build_cache/<A>/.../<...>.spack   builds fetched from v2
    build_cache/index.json, v3/manifests/key/, build_cache/_pgp/   see :mod:`.publish`
    .cacheclient/builds/<H>.json      one record per stored build (layout, blobs, mirror, signer)
    .cacheclient/partial/<c>.partial  downloads in progress (resumable)
    .cacheclient/locks/<c>.dl|.use    per-blob locks
    .cacheclient/trust/, indices/     trusted keys, cached remote indexes

Every write goes to a temporary file in the target's directory, is fsynced and renamed into
place, so readers only ever see complete files. A blob is renamed into ``blobs/`` only after its
sha256 and length were checked.

Concurrency uses ``flock`` on two small files per blob: ``<c>.dl`` is held exclusively while one
process downloads the blob (others wait, then find it present); ``<c>.use`` is held shared by
every process using the blob (:meth:`Store.pin`) until it closes the store, and ``gc``/``verify
--repair`` only remove a blob whose ``.use`` lock they can take exclusively without waiting. No
lock covers the whole store, so readers never wait for someone else's download.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from cacheclient.errors import StoreError
from cacheclient.model import BlobRef

__all__ = [
    "INDEX_MANIFEST",
    "Store",
    "StoredBuild",
    "default_store_root",
    "sha256_file",
]


def __dir__() -> list[str]:
    return __all__


INDEX_MANIFEST = "v3/manifests/index/index.manifest.json"
DB_MEDIA_TYPE = "application/vnd.spack.db.v8+json"
_PRIVATE = ".cacheclient"


def default_store_root() -> Path:
    """``$CACHECLIENT_STORE``, else ``<user cache dir>/cacheclient/store``."""
    env = os.environ.get("CACHECLIENT_STORE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("cacheclient")) / "store"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while data := handle.read(chunk):
            digest.update(data)
    return digest.hexdigest()


def _store_error(path: Path, action: str, exc: OSError) -> StoreError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = f"{reason} (is the store read-only?)"
    return StoreError(f"{path}: cannot {action}: {reason}")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredBuild:
    """What the store knows about one fetched build (``.cacheclient/builds/<hash>.json``)."""

    hash: str
    name: str
    version: str
    layout: int
    """3 for a v3 manifest, 2 for a v2 ``.spec.json[.sig]``."""
    metadata_path: str
    """The manifest or v2 spec file, relative to the store root, byte-for-byte as fetched."""
    tarball: BlobRef
    spec_blob: BlobRef
    """For v3 the manifest's spec blob; for v2 the verified spec JSON stored as a blob."""
    mirror: str
    signer: str | None = None
    tarball_alias: str | None = None
    """v2 only: where the tarball is also linked so the store works as a v2 mirror."""
    fetched_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "name": self.name,
            "version": self.version,
            "layout": self.layout,
            "metadata_path": self.metadata_path,
            "tarball": self.tarball.to_dict(),
            "spec_blob": self.spec_blob.to_dict(),
            "mirror": self.mirror,
            "signer": self.signer,
            "tarball_alias": self.tarball_alias,
            "fetched_at": self.fetched_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredBuild:
        def blob(raw: dict[str, Any]) -> BlobRef:
            return BlobRef(
                media_type=str(raw["mediaType"]),
                checksum=str(raw["checksum"]),
                size=int(raw["contentLength"]),
                checksum_algorithm=str(raw.get("checksumAlgorithm", "sha256")),
                compression=str(raw.get("compression", "none")),
            )

        signer = data.get("signer")
        alias = data.get("tarball_alias")
        return cls(
            hash=str(data["hash"]),
            name=str(data["name"]),
            version=str(data["version"]),
            layout=int(data["layout"]),
            metadata_path=str(data["metadata_path"]),
            tarball=blob(data["tarball"]),
            spec_blob=blob(data["spec_blob"]),
            mirror=str(data["mirror"]),
            signer=None if signer is None else str(signer),
            tarball_alias=None if alias is None else str(alias),
            fetched_at=float(data.get("fetched_at", 0.0)),
        )


class _FileLock:
    """An ``flock`` on a lock file that survives the file being unlinked by someone else."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, *, shared: bool = False, blocking: bool = True) -> bool:
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not blocking:
            flags |= fcntl.LOCK_NB
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise _store_error(self.path, "create lock", exc) from None
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as exc:
                os.close(fd)
                raise _store_error(self.path, "lock", exc) from None
            # The holder of an exclusive lock may have unlinked the file: retry on a new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return True
            os.close(fd)

    def release(self, *, unlink: bool = False) -> None:
        if self.fd is None:
            return
        if unlink:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self.fd)
        self.fd = None


def _raise_open_files_limit() -> None:
    """Each pinned blob holds one lock file open: lift the soft limit to the hard one.

    When even that is not enough, :meth:`Store.pin` degrades to not locking (the blob is still
    used, only not protected from a concurrent ``gc``).
    """
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, 1 << 20), hard))


class Store:
    """A content-addressed store rooted at *root* (default :func:`default_store_root`).

    The object is safe to share between threads. Call :meth:`close` (or use it as a context
    manager) to release the blobs this process pinned.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser().absolute() if root else default_store_root()
        self._pins: dict[str, _FileLock] = {}
        self._lock = threading.Lock()
        _raise_open_files_limit()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------
    @property
    def private_dir(self) -> Path:
        return self.root / _PRIVATE

    @property
    def trust_dir(self) -> Path:
        """Where the trusted keyring lives (see :mod:`cacheclient.trust`)."""
        return self.private_dir / "trust"

    @property
    def indices_dir(self) -> Path:
        """Where cached remote indexes live (see :mod:`cacheclient.mirrors.indexcache`)."""
        return self.private_dir / "indices"

    def blob_path(self, checksum: str, algorithm: str = "sha256") -> Path:
        return self.root / "blobs" / algorithm / checksum[:2] / checksum

    def partial_path(self, checksum: str) -> Path:
        return self.private_dir / "partial" / f"{checksum}.partial"

    def _lock_path(self, checksum: str, kind: str) -> Path:
        return self.private_dir / "locks" / checksum[:2] / f"{checksum}.{kind}"

    def _build_path(self, dag_hash: str) -> Path:
        return self.private_dir / "builds" / f"{dag_hash}.json"

    def ensure(self) -> None:
        """Create the directory skeleton (StoreError when the root is not writable)."""
        for sub in (self.root / "blobs" / "sha256", self.private_dir / "partial"):
            try:
                sub.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _store_error(sub, "create directory", exc) from None
        layout = self.root / "v3" / "layout.json"
        if not layout.exists():
            self.write_file("v3/layout.json", b'{"signing": "gpg"}\n')
        self._sweep_temp_files()

    # -- atomic writes ----------------------------------------------------------------------------
    def write_file(self, relative: str, data: bytes) -> Path:
        """Write *data* at *relative* atomically (temp file, fsync, rename).

        The temporary file lives in ``.cacheclient/tmp`` (never next to the target, so a
        ``kill -9`` leaves nothing in the mirror layout) and stays ``flock``-ed until renamed;
        :meth:`ensure` removes those whose writer died.
        """
        target = self.root / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = self._temp_file()
        except OSError as exc:
            raise _store_error(target, "write", exc) from None
        try:
            with os.fdopen(fd, "wb") as handle:  # the lock is held until after the rename
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _store_error(target, "write", exc) from None
        _fsync_dir(target.parent)
        return target

    def _temp_file(self) -> tuple[int, str]:
        folder = self.private_dir / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink:  # not swept away between mkstemp and flock
                return fd, tmp
            os.close(fd)

    def _sweep_temp_files(self) -> None:
        """Remove temporary files of writers that died (their lock is free)."""
        folder = self.private_dir / "tmp"
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            path = folder / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    path.unlink()
            except OSError:
                continue  # a live writer holds it, or it was renamed meanwhile
            finally:
                os.close(fd)

    def read_file(self, relative: str) -> bytes | None:
        try:
            return (self.root / relative).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _store_error(self.root / relative, "read", exc) from None

    # -- blobs ---------------------------------------------------------------------------------
    def has_blob(self, checksum: str) -> bool:
        return self.blob_path(checksum).is_file()

    @contextlib.contextmanager
    def download_lock(
        self, checksum: str, *, on_wait: Callable[[], None] | None = None
    ) -> Iterator[None]:
        """Hold the per-blob download lock (other processes wanting the blob wait here);
        *on_wait* is called once when another process holds it, before waiting."""
        lock = _FileLock(self._lock_path(checksum, "dl"))
        if not lock.acquire(blocking=False):
            if on_wait is not None:
                on_wait()
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def named_lock(self, name: str) -> Iterator[None]:
        """Hold an exclusive lock called *name* (e.g. one mirror's index refresh), if the store
        is writable; on a read-only store nobody else can be writing, so no lock is taken."""
        lock = _FileLock(self.private_dir / "locks" / f"{name}.lock")
        try:
            held = lock.acquire()
        except StoreError:
            held = False
        try:
            yield
        finally:
            if held:
                lock.release()

    def pin(self, checksum: str) -> bool:
        """Mark the blob as in use by this process until :meth:`close`; False if it is absent.

        Also records the use time (the blob's mtime), which ``gc`` uses for LRU order.
        """
        with self._lock:
            if checksum in self._pins:
                return self.has_blob(checksum)
            lock = _FileLock(self._lock_path(checksum, "use"))
            path = self.blob_path(checksum)
            try:
                lock.acquire(shared=True)
            except StoreError:
                # A read-only store (nobody can evict anything from it), or out of file
                # descriptors: use the blob without the protection of a lock.
                return path.is_file()
            if not path.is_file():
                lock.release()
                return False
            with contextlib.suppress(OSError):
                os.utime(path)
            self._pins[checksum] = lock
            return True

    def unpin(self, checksum: str) -> None:
        with self._lock:
            lock = self._pins.pop(checksum, None)
        if lock is not None:
            lock.release()

    def close(self) -> None:
        """Release every pin this object holds."""
        with self._lock:
            pins, self._pins = self._pins, {}
        for lock in pins.values():
            lock.release()

    def _hold(self, checksum: str) -> None:
        """Take the blob's shared ``.use`` lock *before* it appears, so a concurrent ``gc``
        cannot evict it between its arrival and :meth:`pin` (best effort, as in pin)."""
        with self._lock:
            if checksum in self._pins:
                return
            lock = _FileLock(self._lock_path(checksum, "use"))
            try:
                lock.acquire(shared=True)
            except StoreError:
                return
            self._pins[checksum] = lock

    def commit_partial(self, partial: Path, checksum: str) -> Path:
        """Move a verified download into ``blobs/`` (fsync, rename) and drop its sidecar.

        The blob is pinned for this process from before it appears (see :meth:`pin`).
        """
        self._hold(checksum)
        target = self.blob_path(checksum)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(partial, 0o644)
            # The sidecar goes first: a kill -9 between the two leaves a partial file that
            # is simply downloaded again, never a sidecar nobody will ever remove.
            with contextlib.suppress(OSError):
                partial.with_name(partial.name + ".meta").unlink()
            os.replace(partial, target)
        except OSError as exc:
            raise _store_error(target, "store blob", exc) from None
        _fsync_dir(target.parent)
        return target

    def discard_partial(self, checksum: str) -> None:
        partial = self.partial_path(checksum)
        for path in (partial, partial.with_name(partial.name + ".meta")):
            with contextlib.suppress(OSError):
                path.unlink()

    def put_blob(self, data: bytes, *, checksum: str | None = None, pin: bool = False) -> str:
        """Store *data* as a blob (verifying *checksum* when given); returns its sha256.

        With *pin*, the blob is pinned for this process from before it appears.
        """
        actual = hashlib.sha256(data).hexdigest()
        if checksum is not None and checksum != actual:
            raise StoreError(f"blob {checksum}: content hashes to {actual}")
        if pin:  # pinned before it appears: a concurrent gc must not take it
            self._hold(actual)
        if not self.has_blob(actual):
            self.write_file(os.path.relpath(self.blob_path(actual), self.root), data)
        return actual

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        """``(checksum, path)`` of every blob in the store."""
        base = self.root / "blobs" / "sha256"
        if not base.is_dir():
            return
        for shard in sorted(base.iterdir()):
            if not shard.is_dir():
                continue
            for path in sorted(shard.iterdir()):
                if len(path.name) == 64 and path.is_file():
                    yield path.name, path

    def remove_blob(self, checksum: str) -> bool:
        """Delete a blob unless some process uses it; True when it was removed."""
        lock = _FileLock(self._lock_path(checksum, "use"))
        if not lock.acquire(blocking=False):
            return False
        try:
            path = self.blob_path(checksum)
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _store_error(path, "remove", exc) from None
        finally:
            lock.release(unlink=True)
        return True

    # -- builds ----------------------------------------------------------------------------------
    def save_build(self, build: StoredBuild) -> None:
        data = json.dumps(build.to_dict(), indent=1, sort_keys=True).encode()
        self.write_file(os.path.relpath(self._build_path(build.hash), self.root), data)

    def load_build(self, dag_hash: str) -> StoredBuild | None:
        path = self._build_path(dag_hash)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return StoredBuild.from_dict(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def builds(self) -> list[StoredBuild]:
        folder = self.private_dir / "builds"
        out: list[StoredBuild] = []
        if not folder.is_dir():
            return out
        for path in sorted(folder.glob("*.json")):
            build = self.load_build(path.stem)
            if build is not None:
                out.append(build)
        return out

    def remove_build(self, dag_hash: str) -> None:
        """Forget a build: its record, its metadata file and v2 alias (blobs stay for gc)."""
        build = self.load_build(dag_hash)
        paths = [self._build_path(dag_hash)]
        if build is not None:
            paths.append(self.root / build.metadata_path)
            if build.tarball_alias:
                paths.append(self.root / build.tarball_alias)
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _store_error(path, "remove", exc) from None

    def link_alias(self, checksum: str, relative: str) -> None:
        """Make *relative* another name of a blob (hard link, else a copy), atomically."""
        target = self.root / relative
        source = self.blob_path(checksum)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{target.name}")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:
                self.write_file(relative, source.read_bytes())
                return
            os.replace(tmp, target)
        except OSError as exc:
            raise _store_error(target, "link", exc) from None

    # -- index ---------------------------------------------------------------------------------
    def write_index(self) -> Path:
        """Publish the store as Spack reads it: the v3 index of its v3 builds, the v2 index of
        its v2 builds, its trusted signers' keys (see :mod:`cacheclient.store.publish`)."""
        from cacheclient.store.publish import publish  # noqa: PLC0415 - publish imports Store

        return self.root / publish(self).index_v3
