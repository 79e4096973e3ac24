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
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from cacheclient import safefs
from cacheclient.errors import StoreError, VerificationError, redact
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
_PRIVATE = safefs.PRIVATE
_RECORD_LIMIT = 1 << 20
"""Bytes a build record may have (they are a few hundred)."""
_METADATA_LIMIT = 64 << 20
"""Bytes a stored manifest or spec file may have when it is read back."""
_HEX = frozenset("0123456789abcdef")


def _is_digest(value: str) -> bool:
    return len(value) == 64 and set(value) <= _HEX


def default_store_root() -> Path:
    """``$CACHECLIENT_STORE``, else ``<user cache dir>/cacheclient/store``."""
    env = os.environ.get("CACHECLIENT_STORE")
    if env:
        return safefs.expand_path(env, "CACHECLIENT_STORE")
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
            "mirror": redact(self.mirror),  # never user:password@
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
    """An ``flock`` on a lock file that survives the file being unlinked by someone else.

    The file is opened below *base* without following symlinks or blocking on a FIFO (see
    :mod:`cacheclient.safefs`); it is created 0644, or 0664 when the store is group-shared.
    """

    def __init__(self, path: Path, base: Path) -> None:
        self.path = path
        self.base = base
        self.fd: int | None = None

    def acquire(self, *, shared: bool = False, blocking: bool = True) -> bool:
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not blocking:
            flags |= fcntl.LOCK_NB
        while True:
            mode = _lock_mode(self.base)
            try:
                fd = safefs.open_file(self.path, os.O_RDWR | os.O_CREAT, mode, base=self.base)
            except OSError as exc:
                raise _store_error(self.path, "create lock", exc) from None
            with contextlib.suppress(OSError):
                info = os.fstat(fd)
                if info.st_uid == os.geteuid() and info.st_mode & 0o7777 & ~mode:
                    os.fchmod(fd, mode)  # never world-writable, whatever the umask
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
                same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
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
                safefs.unlink(self.path, base=self.base)
        os.close(self.fd)
        self.fd = None


def _lock_mode(base: Path) -> int:
    """0664 when the store's directory is group-shared (setgid or group-writable), else 0644."""
    try:
        mode = os.stat(base).st_mode
    except OSError:
        return 0o644
    return 0o664 if mode & (stat.S_ISGID | stat.S_IWGRP) else 0o644


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
        self.root = safefs.expand_path(root, "store").absolute() if root else default_store_root()
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
        """Where the download of *checksum* goes; its directory is checked to be a real one
        inside the store (never a planted symlink)."""
        folder = self.private_dir / "partial"
        try:
            os.close(safefs.open_dir(self.root, (_PRIVATE, "partial"), create=True))
        except OSError as exc:
            raise _store_error(folder, "create directory", exc) from None
        return folder / f"{checksum}.partial"

    def _lock_path(self, checksum: str, kind: str) -> Path:
        return self.private_dir / "locks" / checksum[:2] / f"{checksum}.{kind}"

    def _build_path(self, dag_hash: str) -> Path:
        return self.private_dir / "builds" / f"{dag_hash}.json"

    def ensure(self) -> None:
        """Create the directory skeleton (StoreError when the root is not writable, or when a
        directory of the skeleton was replaced by a symlink or a file)."""
        for sub in (("blobs", "sha256"), (_PRIVATE, "partial"), (_PRIVATE, "tmp")):
            try:
                os.close(safefs.open_dir(self.root, sub, create=True))
            except OSError as exc:
                raise _store_error(self.root.joinpath(*sub), "create directory", exc) from None
        layout = self.root / "v3" / "layout.json"
        if not layout.exists() and not layout.is_symlink():
            self.write_file("v3/layout.json", b'{"signing": "gpg"}\n')
        self._sweep_temp_files()

    # -- atomic writes ----------------------------------------------------------------------------
    def write_file(self, relative: str, data: bytes, *, private: bool = False) -> Path:
        """Write *data* at *relative* atomically (temp file, fsync, rename).

        *relative* must lie inside the store, and outside ``.cacheclient/`` unless *private*;
        no directory on the way may be a symlink (StoreError otherwise). The temporary file
        lives in ``.cacheclient/tmp`` (never next to the target, so a ``kill -9`` leaves
        nothing in the mirror layout) and stays ``flock``-ed until renamed; :meth:`ensure`
        removes those whose writer died.
        """
        target = safefs.inside(self.root, relative, what="store path", private_ok=private)
        parts = target.relative_to(self.root).parts
        dir_fd = tmp_dir = -1
        try:
            dir_fd = safefs.open_dir(self.root, parts[:-1], create=True)
            tmp_dir = safefs.open_dir(self.root, (_PRIVATE, "tmp"), create=True)
            fd, tmp = self._temp_file(tmp_dir)
        except OSError as exc:
            for open_fd in (dir_fd, tmp_dir):
                if open_fd >= 0:
                    os.close(open_fd)
            raise _store_error(target, "write", exc) from None
        try:
            with os.fdopen(fd, "wb") as handle:  # the lock is held until after the rename
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                os.fchmod(handle.fileno(), 0o644)
                os.replace(tmp, parts[-1], src_dir_fd=tmp_dir, dst_dir_fd=dir_fd)
            with contextlib.suppress(OSError):
                os.fsync(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=tmp_dir)
            raise _store_error(target, "write", exc) from None
        finally:
            os.close(dir_fd)
            os.close(tmp_dir)
        return target

    @staticmethod
    def _temp_file(dir_fd: int) -> tuple[int, str]:
        """A new, locked temporary file in the directory *dir_fd*: (descriptor, name)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            name = f".tmp-{os.urandom(8).hex()}.part"
            try:
                fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink:  # not swept away between creation and flock
                return fd, name
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
            try:  # never waits on a planted FIFO, never follows a planted symlink
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    continue
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if info.st_ino == os.lstat(path).st_ino:
                    path.unlink()
            except OSError:
                continue  # a live writer holds it, or it was renamed meanwhile
            finally:
                os.close(fd)

    def read_file(
        self, relative: str, *, limit: int = _METADATA_LIMIT, private: bool = True
    ) -> bytes | None:
        """The file at *relative*: it must lie inside the store (outside ``.cacheclient/``
        unless *private*; build records naming bookkeeping are refused when loaded) and be a
        regular file reached without following symlinks; None when it is missing."""
        path = safefs.inside(self.root, relative, what="store path", private_ok=private)
        try:
            return safefs.read_file(path, base=self.root, limit=limit)
        except OSError as exc:
            raise _store_error(path, "read", exc) from None

    def read_blob(self, checksum: str, *, limit: int = _METADATA_LIMIT) -> bytes | None:
        """A (small) blob's bytes, hashed as they are read back: None when it is missing;
        :class:`VerificationError` (exit 4, naming the blob and the store) when they are not
        the bytes it was stored under, after removing it so the next run fetches it again."""
        if not _is_digest(checksum):
            raise StoreError(f"{self.root}: {checksum!r} is not a sha256 digest")
        path = self.blob_path(checksum)
        try:
            data = safefs.read_file(path, base=self.root, limit=limit)
        except StoreError as exc:
            self.discard_blob(checksum)
            raise VerificationError(
                f"blob {path} in the store {self.root} is unusable ({exc}): removed it; run "
                "the command again to fetch it anew",
                expected=checksum,
            ) from None
        except OSError as exc:
            raise _store_error(path, "read", exc) from None
        if data is None:
            return None
        actual = hashlib.sha256(data).hexdigest()
        if actual != checksum:
            self.discard_blob(checksum)
            raise VerificationError(
                f"blob {path} in the store {self.root} hashes to {actual}, not its name (it "
                "changed after it was stored): removed it; run the command again to fetch it "
                "anew",
                expected=checksum,
                actual=actual,
            )
        return data

    def discard_blob(self, checksum: str) -> bool:
        """Remove a blob that failed verification, whoever uses it (it is useless to all)."""
        if not _is_digest(checksum):
            return False
        try:
            return safefs.unlink(self.blob_path(checksum), base=self.root)
        except OSError:
            return False

    # -- blobs ---------------------------------------------------------------------------------
    def has_blob(self, checksum: str) -> bool:
        """Whether the blob is present as a regular file (a planted symlink does not count)."""
        try:
            return stat.S_ISREG(os.lstat(self.blob_path(checksum)).st_mode)
        except (OSError, ValueError):
            return False

    @contextlib.contextmanager
    def download_lock(
        self, checksum: str, *, on_wait: Callable[[], None] | None = None
    ) -> Iterator[None]:
        """Hold the per-blob download lock (other processes wanting the blob wait here);
        *on_wait* is called once when another process holds it, before waiting."""
        lock = _FileLock(self._lock_path(checksum, "dl"), self.root)
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
        lock = _FileLock(self.private_dir / "locks" / f"{name}.lock", self.root)
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
            lock = _FileLock(self._lock_path(checksum, "use"), self.root)
            path = self.blob_path(checksum)
            try:
                lock.acquire(shared=True)
            except StoreError:
                # A read-only store (nobody can evict anything from it), or out of file
                # descriptors: use the blob without the protection of a lock.
                return self.has_blob(checksum)
            if not self.has_blob(checksum):
                lock.release()
                return False
            with contextlib.suppress(OSError, NotImplementedError):
                os.utime(path, follow_symlinks=False)
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
            lock = _FileLock(self._lock_path(checksum, "use"), self.root)
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
            # Never through a planted symlink or hard link: the file itself, checked.
            fd = safefs.open_file(partial, os.O_RDONLY, base=self.root, single_link=True)
            try:
                os.fsync(fd)
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)
            # The sidecar goes first: a kill -9 between the two leaves a partial file that
            # is simply downloaded again, never a sidecar nobody will ever remove.
            with contextlib.suppress(OSError):
                safefs.unlink(partial.with_name(partial.name + ".meta"), base=self.root)
            dst = safefs.open_dir(self.root, target.relative_to(self.root).parts[:-1], create=True)
            src = safefs.open_dir(self.root, partial.relative_to(self.root).parts[:-1])
            try:
                os.replace(partial.name, target.name, src_dir_fd=src, dst_dir_fd=dst)
                with contextlib.suppress(OSError):
                    os.fsync(dst)
            finally:
                os.close(src)
                os.close(dst)
        except OSError as exc:
            raise _store_error(target, "store blob", exc) from None
        return target

    def discard_partial(self, checksum: str) -> None:
        partial = self.private_dir / "partial" / f"{checksum}.partial"
        for path in (partial, partial.with_name(partial.name + ".meta")):
            with contextlib.suppress(OSError):
                safefs.unlink(path, base=self.root)

    def partials(self) -> list[tuple[str, float]]:
        """``(checksum, mtime)`` of the partial downloads (planted non-files included, so they
        can be cleaned up; their names must still be digests)."""
        folder = self.private_dir / "partial"
        out: list[tuple[str, float]] = []
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return out
        for name in names:
            checksum = name.removesuffix(".partial")
            if name.endswith(".partial") and _is_digest(checksum):
                with contextlib.suppress(OSError):
                    out.append((checksum, os.lstat(folder / name).st_mtime))
        return out

    def discard_idle_partial(self, checksum: str) -> bool:
        """Remove a partial download unless a live process is writing it (it holds the blob's
        download lock); True when it was removed."""
        if not _is_digest(checksum):
            return False
        lock = _FileLock(self._lock_path(checksum, "dl"), self.root)
        try:
            if not lock.acquire(blocking=False):
                return False
        except StoreError:
            return False
        try:
            self.discard_partial(checksum)
        finally:
            lock.release()
        return True

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
            with contextlib.suppress(OSError):  # a planted non-file in its place goes
                safefs.unlink(self.blob_path(actual), base=self.root)
            self.write_file(os.path.relpath(self.blob_path(actual), self.root), data)
        return actual

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        """``(checksum, path)`` of every blob in the store."""
        base = self.root / "blobs" / "sha256"
        if not base.is_dir():
            return
        for shard in sorted(base.iterdir()):
            if shard.is_symlink() or not shard.is_dir():
                continue
            for path in sorted(shard.iterdir()):
                if _is_digest(path.name) and not path.is_symlink() and path.is_file():
                    yield path.name, path

    def odd_blob_entries(self) -> list[Path]:
        """Entries under ``blobs/sha256/<c[:2]>/`` that are not blobs: symlinks, FIFOs, devices,
        directories (someone planted them; they are never followed or read)."""
        base = self.root / "blobs" / "sha256"
        out: list[Path] = []
        try:
            shards = sorted(base.iterdir())
        except OSError:
            return out
        for shard in shards:
            if shard.is_symlink() or not shard.is_dir():
                out.append(shard)
                continue
            with contextlib.suppress(OSError):
                out += [p for p in sorted(shard.iterdir()) if p.is_symlink() or not p.is_file()]
        return out

    def remove_odd_entry(self, path: Path) -> None:
        """Unlink one entry :meth:`odd_blob_entries` found (itself, never what it points to)."""
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            safefs.unlink(path, base=self.root)

    def remove_blob(self, checksum: str) -> bool:
        """Delete a blob unless some process uses it; True when it was removed."""
        lock = _FileLock(self._lock_path(checksum, "use"), self.root)
        try:
            if not lock.acquire(blocking=False):
                return False
        except StoreError:  # a planted lock (symlink, FIFO): keep the blob, follow nothing
            return False
        try:
            path = self.blob_path(checksum)
            try:
                if not safefs.unlink(path, base=self.root):
                    return False
            except OSError as exc:
                raise _store_error(path, "remove", exc) from None
        finally:
            lock.release(unlink=True)
        return True

    # -- builds ----------------------------------------------------------------------------------
    def save_build(self, build: StoredBuild) -> None:
        data = json.dumps(build.to_dict(), indent=1, sort_keys=True).encode()
        rel = os.path.relpath(self._build_path(build.hash), self.root)
        self.write_file(rel, data, private=True)

    def load_build(self, dag_hash: str) -> StoredBuild | None:
        """The record of a stored build, or None when it is missing or not to be trusted: a
        record is read without following symlinks, must be about *dag_hash*, name blobs by
        digest and paths inside the store's mirror layout (never its ``.cacheclient/``)."""
        if not dag_hash or "/" in dag_hash or dag_hash.startswith("."):
            return None
        path = self._build_path(dag_hash)
        try:
            raw = safefs.read_file(path, base=self.root, limit=_RECORD_LIMIT)
            if raw is None:
                return None
            build = StoredBuild.from_dict(json.loads(raw))
            if build.hash != dag_hash:
                return None
            for ref in (build.tarball, build.spec_blob):
                if not _is_digest(ref.checksum):
                    return None
            for rel in (build.metadata_path, build.tarball_alias):
                if rel is not None:
                    safefs.inside(self.root, rel, what="build record path")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None
        return build

    def bad_build_records(self) -> list[str]:
        """Names (``<hash>.json``) of build records that cannot be trusted: unreadable, planted
        non-files, about another hash, or naming paths outside the layout."""
        folder = self.private_dir / "builds"
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return []
        return [
            n
            for n in names
            if n.endswith(".json") and not n.startswith(".") and self.load_build(n[:-5]) is None
        ]

    def remove_build_record(self, name: str) -> None:
        """Remove one record file of ``.cacheclient/builds`` (itself, never what it names)."""
        if "/" in name or name.startswith(".") or not name.endswith(".json"):
            return
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            try:
                safefs.unlink(self.private_dir / "builds" / name, base=self.root)
            except OSError as exc:
                raise _store_error(self.private_dir / "builds" / name, "remove", exc) from None

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
        if not dag_hash or "/" in dag_hash or dag_hash.startswith("."):
            return
        build = self.load_build(dag_hash)  # its paths were checked to lie inside the layout
        paths = [self._build_path(dag_hash)]
        if build is not None:
            paths.append(safefs.inside(self.root, build.metadata_path, what="metadata path"))
            if build.tarball_alias:
                paths.append(safefs.inside(self.root, build.tarball_alias, what="alias path"))
        for path in paths:
            try:
                safefs.unlink(path, base=self.root)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise _store_error(path, "remove", exc) from None

    def link_alias(self, checksum: str, relative: str) -> None:
        """Make *relative* another name of a blob (hard link, else a copy), atomically."""
        target = safefs.inside(self.root, relative, what="alias path")
        source = self.blob_path(checksum)
        parts = target.relative_to(self.root).parts
        try:
            dir_fd = safefs.open_dir(self.root, parts[:-1], create=True)
        except OSError as exc:
            raise _store_error(target, "link", exc) from None
        try:
            tmp = f".tmp-{os.getpid()}-{threading.get_ident()}-{target.name}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            try:
                os.link(source, tmp, dst_dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                data = self.read_blob(checksum, limit=1 << 40)
                if data is None:
                    raise _store_error(source, "link", FileNotFoundError(2, "missing")) from None
                self.write_file(relative, data)
                return
            os.replace(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            raise _store_error(target, "link", exc) from None
        finally:
            os.close(dir_fd)

    # -- index ---------------------------------------------------------------------------------
    def write_index(self) -> Path:
        """Publish the store as Spack reads it: the v3 index of its v3 builds, the v2 index of
        its v2 builds, its trusted signers' keys (see :mod:`cacheclient.store.publish`)."""
        from cacheclient.store.publish import publish  # noqa: PLC0415 - publish imports Store

        return self.root / publish(self).index_v3
