"""Safe extraction of the ``tar.gz`` archives Spack writes (FORMATS.md §6.1, §6.3, §10.13-16).

The archive is read in one streaming pass into a fresh work directory next to the
destination. Every member is checked *before* anything is written for it:

* names: no absolute paths, no ``..``, no NUL/newline, bounded depth and length;
* types: regular files, directories, symlinks and hardlinks only (no devices, FIFOs);
* modes: no setuid/setgid bits; written modes are normalised to 0644/0755 (the umask
  applies), ownership is never restored;
* nothing is written *through* a symlink or file extracted earlier, and files are created
  with ``O_EXCL|O_NOFOLLOW`` so no existing path is ever followed or overwritten;
* hardlinks must point at a regular file extracted earlier from the same archive;
* the decompressed size is bounded (gzip bombs), and a sparse member counts at its full
  (expanded) size: sparse members are refused, since writing them would need holes;
* with *expected_sha256*, the compressed bytes are hashed in the same pass, and the stream
  is read to its very end (the gzip trailer's CRC-32 and length are checked, trailing bytes
  are hashed too): a blob that changed since it was fetched is refused before the prefix
  appears (:class:`TarballMismatch`, exit 4), whatever else was wrong with it.

When the stream ends, the old prefix is located from the shortest
``*/.spack/binary_distribution`` member; every member must lie inside it (compared by path
components) or be a directory above it. Only then is ``<work>/<old prefix>`` renamed to the
destination. On any failure the work directory is removed and the destination never appears.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import queue
import secrets
import shutil
import stat
import tarfile
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from cacheclient.errors import InstallError, StoreError, UnsafeArchiveError, VerificationError
from cacheclient.installation.buildinfo import BuildInfo, parse_buildinfo

__all__ = [
    "DEFAULT_LIMITS",
    "Entry",
    "ExtractLimits",
    "ExtractedPrefix",
    "TarballMismatch",
    "extract_prefix",
]


def __dir__() -> list[str]:
    return __all__


Kind = Literal["file", "dir", "symlink", "hardlink"]

_BUILDINFO_TAIL = (".spack", "binary_distribution")
_MAX_BUILDINFO_SIZE = 4 << 20
_CHUNK = 1 << 20
_THREADED_HASH = 8 << 20
"""Archives larger than this are hashed on a thread of their own while they are extracted."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ExtractLimits:
    """Bounds on what an archive may make us write."""

    max_ratio: int = 200
    """Decompressed bytes allowed per compressed byte (beyond ``min_budget``)."""
    min_budget: int = 256 << 20
    """Decompressed bytes always allowed, whatever the compressed size."""
    max_depth: int = 128
    """Path components in a member name."""
    max_name: int = 4096
    """Bytes in a member name or link target."""
    max_members: int = 2_000_000


DEFAULT_LIMITS = ExtractLimits()


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One member, relative to the prefix. ``target``: symlink text or hardlink source path."""

    path: str
    kind: Kind
    target: str | None = None
    executable: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class ExtractedPrefix:
    """A prefix unpacked at ``path`` (not yet relocated)."""

    path: Path
    old_prefix: str
    buildinfo: BuildInfo
    entries: Mapping[str, Entry] = field(default_factory=dict)
    size: int = 0
    """Total bytes of regular files written."""
    sha256: str | None = None
    """sha256 of the whole compressed archive, computed while extracting (None when no
    *expected_sha256* was given)."""
    compressed_size: int = 0
    """Bytes of the archive read (all of them when *sha256* is set)."""


class TarballMismatch(VerificationError):
    """The archive's bytes are not the ones that were verified when it was fetched."""

    def __init__(self, message: str, *, path: str, expected: str, actual: str) -> None:
        super().__init__(message, expected=expected, actual=actual)
        self.path = path


class _Refused(Exception):
    """Internal: a member is refused (converted to UnsafeArchiveError with the archive name)."""

    def __init__(self, member: str, problem: str) -> None:
        super().__init__(problem)
        self.member = member
        self.problem = problem


class _Restart(Exception):
    """Internal: the fast path guessed the prefix wrong; extract again the general way."""


class _HashingReader:
    """The raw archive file, hashed as it is read (one pass: hash and extract together).

    For large archives the hashing runs on its own thread, fed through a bounded queue
    (``hashlib`` releases the GIL), so it overlaps decompression and writing.
    """

    def __init__(self, handle: BinaryIO, digest: Any, *, threaded: bool) -> None:
        self._handle = handle
        self._digest = digest
        self.count = 0
        self.mode = "rb"
        self._buffer = b""
        self._offset = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        q = self._queue
        if q is None:  # pragma: no cover - only started with a queue
            return
        while (chunk := q.get()) is not None:
            self._digest.update(chunk)

    def _fill(self) -> bool:
        block = self._handle.read(_CHUNK)  # large blocks: few, cheap hash updates
        if not block:
            return False
        self.count += len(block)
        if self._queue is not None:
            self._queue.put(block)
        else:
            self._digest.update(block)
        self._buffer = block
        self._offset = 0
        return True

    def read(self, size: int = -1) -> bytes:
        if self._offset >= len(self._buffer) and not self._fill():
            return b""
        end = len(self._buffer) if size < 0 else self._offset + size
        data = self._buffer[self._offset : end]
        self._offset += len(data)
        return data

    def drain(self) -> None:
        """Hash whatever follows the point where reading stopped."""
        while self.read(_CHUNK):
            pass

    def close(self) -> None:
        """Wait until everything read has been hashed (idempotent)."""
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
        self._thread = None
        self._queue = None

    def hexdigest(self) -> str:
        self.close()
        result: str = self._digest.hexdigest()
        return result


class _BudgetReader:
    """A read-only stream that refuses to yield more than *budget* bytes."""

    def __init__(self, raw: gzip.GzipFile, budget: int) -> None:
        self._raw = raw
        self._budget = budget
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        if self.count > self._budget:
            raise _Refused(
                "",
                f"decompresses to more than {self._budget} bytes "
                "(decompression ratio limit; gzip bomb?)",
            )
        return data


def _bad_text(text: str) -> bool:
    """Control characters (terminal escapes, NUL, newlines) or undecodable bytes (which
    tarfile hands over as surrogates): never in a real package, trouble in every message."""
    return any(ord(c) < 32 or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF for c in text)


def _split_name(name: str, limits: ExtractLimits, what: str = "name") -> tuple[str, ...]:
    """The components of a member name, or _Refused when it is unsafe."""
    if _bad_text(name):
        raise _Refused(
            name,
            f"{what} contains a NUL, newline, other control character or bytes that are not UTF-8",
        )
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_name:
        raise _Refused(name, f"{what} is longer than {limits.max_name} bytes")
    if name.startswith("/"):
        raise _Refused(name, f"absolute {what}")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _Refused(name, f"{what} has a '..' component")
    if not parts:
        raise _Refused(name, f"empty {what}")
    if len(parts) > limits.max_depth:
        raise _Refused(name, f"{what} is deeper than {limits.max_depth} components")
    return parts


class _Extractor:
    """The state of one streaming extraction into ``work``.

    General mode writes every member at its full name below ``work``. Fast mode guesses the
    prefix from the first member with a ``.spack`` component and writes the prefix's content
    directly into ``work`` (directories above it are only recorded), which saves creating and
    removing the long chain of parent directories; any surprise raises :class:`_Restart`.
    """

    def __init__(self, work: Path, limits: ExtractLimits, *, fast: bool) -> None:
        self.work = work
        self.limits = limits
        self.fast = fast
        self.guess: tuple[str, ...] | None = None
        self.pending: list[tuple[tuple[str, ...], str]] = []
        self.kinds: dict[tuple[str, ...], Kind] = {}
        self.order: list[tuple[tuple[str, ...], str]] = []  # (parts, raw name) in archive order
        self.link_targets: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.symlink_targets: dict[tuple[str, ...], str] = {}
        self.executable: set[tuple[str, ...]] = set()
        self.buildinfo_candidates: dict[tuple[str, ...], bytes] = {}
        self.size = 0

    def _path(self, parts: tuple[str, ...]) -> str:
        if self.guess is not None:
            return os.path.join(self.work, *parts[len(self.guess) :])
        return os.path.join(self.work, *parts)

    def _virtual(self, parts: tuple[str, ...]) -> bool:
        """Fast mode: *parts* is the guessed prefix or above it (not on disk)."""
        guess = self.guess
        return guess is not None and len(parts) <= len(guess) and guess[: len(parts)] == parts

    def _set_guess(self, guess: tuple[str, ...]) -> None:
        self.guess = guess
        below: list[tuple[tuple[str, ...], str]] = []
        for parts, name in self.pending:
            if self._virtual(parts):
                continue
            if parts[: len(guess)] != guess:
                raise _Restart
            del self.kinds[parts]  # recorded, not yet on disk
            below.append((parts, name))
        for parts, name in below:  # in any order: parents are created as needed
            if parts not in self.kinds:
                self._ensure_parents(parts, name)
                os.mkdir(self._path(parts), 0o755)
                self.kinds[parts] = "dir"
        self.pending.clear()

    def _fast_route(self, parts: tuple[str, ...], name: str, info: tarfile.TarInfo) -> bool:
        """Fast mode bookkeeping; True when the member needs nothing on disk."""
        if self.guess is None:
            if ".spack" in parts:
                cut = len(parts) - 1 - parts[::-1].index(".spack")
                self._set_guess(parts[:cut])
            elif info.isdir():
                self.pending.append((parts, name))
                self.kinds[parts] = "dir"
                self.order.append((parts, name))
                return True
            else:
                raise _Restart
        guess = self.guess
        if guess is None:  # pragma: no cover - set just above
            raise _Restart
        if self._virtual(parts):
            if not info.isdir():
                raise _Restart
            self.kinds[parts] = "dir"
            self.order.append((parts, name))
            return True
        if parts[: len(guess)] != guess:
            raise _Restart
        if info.islnk():
            target = _split_name(info.linkname, self.limits, "hardlink target")
            if target[: len(guess)] != guess:
                raise _Restart
        return False

    def _ensure_parents(self, parts: tuple[str, ...], name: str) -> None:
        for i in range(1, len(parts)):
            sub = parts[:i]
            kind = self.kinds.get(sub)
            if kind == "dir":
                continue
            if kind is None and self._virtual(sub):
                self.kinds[sub] = "dir"
                continue
            if kind == "symlink":
                raise _Refused(name, f"would be written through the symlink {'/'.join(sub)!r}")
            if kind is not None:
                raise _Refused(name, f"parent {'/'.join(sub)!r} is not a directory")
            os.mkdir(self._path(sub), 0o755)
            self.kinds[sub] = "dir"

    def add(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        name = info.name
        if len(self.order) >= self.limits.max_members:
            raise _Refused(name, f"more than {self.limits.max_members} members")
        parts = _split_name(name, self.limits)
        if info.mode & (stat.S_ISUID | stat.S_ISGID):
            raise _Refused(name, f"has setuid/setgid bits (mode {info.mode:o})")
        if info.issparse():
            raise _Refused(name, "sparse member refused (it would expand beyond its stored size)")
        if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
            what = "device file" if (info.ischr() or info.isblk()) else "FIFO"
            if not (info.ischr() or info.isblk() or info.isfifo()):
                what = f"unsupported member type {info.type!r}"
            raise _Refused(name, f"{what} refused")
        existing = self.kinds.get(parts)
        if existing is not None:
            if existing == "dir" and info.isdir():
                return  # a repeated directory entry is harmless
            raise _Refused(name, "duplicate member (would overwrite an earlier one)")
        if self.fast and self._fast_route(parts, name, info):
            return
        self._ensure_parents(parts, name)
        path = self._path(parts)
        self.order.append((parts, name))
        if info.isdir():
            os.mkdir(path, 0o755)
            self.kinds[parts] = "dir"
        elif info.issym():
            target = info.linkname
            if not target or _bad_text(target):
                raise _Refused(name, f"bad symlink target {target!a}")
            if len(target.encode("utf-8", "surrogateescape")) > self.limits.max_name:
                raise _Refused(name, "symlink target too long")
            os.symlink(target, path)
            self.kinds[parts] = "symlink"
            self.symlink_targets[parts] = target
        elif info.islnk():
            tparts = _split_name(info.linkname, self.limits, "hardlink target")
            tkind = self.kinds.get(tparts)
            if tkind == "hardlink":
                tparts = self.link_targets[tparts]
            elif tkind != "file":
                raise _Refused(
                    name, f"hardlink target {info.linkname!r} is not a file extracted earlier"
                )
            os.link(self._path(tparts), path, follow_symlinks=False)
            self.kinds[parts] = "hardlink"
            self.link_targets[parts] = tparts
        else:
            mode = 0o755 if info.mode & stat.S_IXUSR else 0o644
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            src = tar.extractfile(info)
            keep = parts[-2:] == _BUILDINFO_TAIL and info.size <= _MAX_BUILDINFO_SIZE
            with os.fdopen(fd, "wb") as out:
                if src is not None:
                    if keep:
                        data = src.read()
                        self.buildinfo_candidates[parts] = data
                        out.write(data)
                    else:
                        shutil.copyfileobj(src, out, _CHUNK)
            self.kinds[parts] = "file"
            self.size += info.size
            if mode & 0o100:
                self.executable.add(parts)

    def finish(self, tarball: str, expected_hash: str | None) -> tuple[tuple[str, ...], BuildInfo]:
        """Locate the prefix, check containment, parse and cross-check the buildinfo."""
        if not self.buildinfo_candidates:
            raise _Refused("", "no .spack/binary_distribution member: not a Spack build archive")
        best = min(self.buildinfo_candidates, key=lambda p: (len(p), p))
        prefix = best[:-2]
        if self.fast and prefix != self.guess:
            raise _Restart
        bi_name = "/".join(best)
        if not prefix:
            raise _Refused(bi_name, "binary_distribution at the archive root (no prefix)")
        n = len(prefix)
        for parts, name in self.order:
            kind = self.kinds[parts]
            inside = parts[:n] == prefix
            if not inside and not (kind == "dir" and prefix[: len(parts)] == parts):
                old = "/" + "/".join(prefix)
                raise _Refused(name, f"lies outside the package prefix {old}")
            if kind == "hardlink" and self.link_targets[parts][:n] != prefix:
                raise _Refused(name, "hardlink target lies outside the package prefix")
        if self.kinds.get(prefix, "dir") != "dir":
            raise _Refused(bi_name, "the prefix is not a directory")
        info = parse_buildinfo(self.buildinfo_candidates[best], source=tarball, member=bi_name)
        old_prefix = "/" + "/".join(prefix)
        _cross_check(info, old_prefix, bi_name, expected_hash)
        return prefix, info


def _cross_check(info: BuildInfo, old_prefix: str, member: str, expected_hash: str | None) -> None:
    """Refuse a buildinfo that disagrees with where the archive's files really are."""
    if info.buildpath and info.relative_prefix:
        claimed = f"{info.buildpath.rstrip('/')}/{info.relative_prefix}"
        if claimed != old_prefix:
            raise _Refused(
                member,
                f"buildpath/relative_prefix say {claimed} but the files are under {old_prefix}",
            )
    if not info.hash_to_prefix:
        raise _Refused(member, "has neither hash_to_prefix nor prefix_to_hash: cannot relocate")
    if expected_hash is not None:
        own = info.hash_to_prefix.get(expected_hash)
        if own is None:
            raise _Refused(member, f"does not list this build's hash {expected_hash}")
        if own != old_prefix:
            raise _Refused(
                member, f"says the prefix of {expected_hash} is {own}, archive has {old_prefix}"
            )
    elif old_prefix not in info.hash_to_prefix.values():
        raise _Refused(member, f"hash_to_prefix does not contain the archive prefix {old_prefix}")


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def _make_work_dir(dest: Path) -> Path:
    """A fresh directory next to *dest*, mode 0755 minus the umask (it may become the prefix)."""
    for _ in range(100):
        path = dest.parent / f".{dest.name}.extract-{secrets.token_hex(4)}"
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue
        except OSError as exc:
            raise InstallError(
                f"{dest.parent}: cannot create a directory: {exc.strerror}"
            ) from None
        return path
    raise InstallError(f"{dest.parent}: cannot create a unique work directory")  # pragma: no cover


def _open_archive(tarball: Path) -> BinaryIO:
    """The archive, opened without following a symlink or blocking on a FIFO planted in its
    place; anything but a regular file is refused."""
    try:
        fd = os.open(tarball, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            kind = "a symlink" if exc.errno == errno.ELOOP else "a FIFO"
            raise _NotRegular(str(tarball), kind) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
        raise _NotRegular(str(tarball), kind)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class _NotRegular(Exception):
    def __init__(self, path: str, kind: str) -> None:
        super().__init__(kind)
        self.path = path
        self.kind = kind


def _stream(raw: _HashingReader | BinaryIO, budget: int, ext: _Extractor) -> None:
    with (
        gzip.GzipFile(fileobj=raw, mode="rb") as gz,  # type: ignore[arg-type]
        tarfile.open(fileobj=_BudgetReader(gz, budget), mode="r|") as tar,  # type: ignore[call-overload]
    ):
        for info in tar:
            ext.add(tar, info)
        if isinstance(raw, _HashingReader):
            # tarfile stops at the end-of-archive blocks: read the rest of the gzip stream so
            # its CRC-32 and length are checked (BadGzipFile / EOFError otherwise).
            while gz.read(_CHUNK):
                pass


def _check_digest(
    reader: _HashingReader, source: str, expected: str | None, *, drain: bool
) -> str | None:
    """After a pass: TarballMismatch when the archive's sha256 is not *expected*."""
    if expected is None:
        return None
    if drain:
        with contextlib.suppress(OSError):
            reader.drain()
    actual = reader.hexdigest()
    if actual != expected:
        raise TarballMismatch(
            f"{source}: sha256 is {actual}, expected {expected}: the archive changed after it "
            "was verified; installation refused",
            path=source,
            expected=expected,
            actual=actual,
        )
    return actual


def _one_pass(
    tarball: Path, source: str, budget: int, ext: _Extractor, expected_sha256: str | None
) -> str | None:
    """Stream the archive once into *ext*; with *expected_sha256*, hash it in the same pass and
    return the digest (TarballMismatch when it differs, checked before any other failure)."""
    try:
        handle = _open_archive(tarball)
    except _NotRegular as exc:
        raise TarballMismatch(
            f"{source}: is {exc.kind}, not the archive that was verified; installation refused",
            path=source,
            expected=expected_sha256 or "",
            actual=exc.kind,
        ) from None
    with handle:
        if expected_sha256 is None:
            _stream(handle, budget, ext)
            return None
        size = os.fstat(handle.fileno()).st_size
        reader = _HashingReader(handle, hashlib.sha256(), threaded=size > _THREADED_HASH)
        try:
            _stream(reader, budget, ext)
        except (_Refused, tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError):
            # A tampered blob is a verification failure first, whatever it contains.
            _check_digest(reader, source, expected_sha256, drain=True)
            raise
        except BaseException:
            reader.close()  # the hashing thread ends with the pass
            raise
        return _check_digest(reader, source, expected_sha256, drain=True)


def extract_prefix(
    tarball: Path,
    dest: Path,
    *,
    expected_hash: str | None = None,
    expected_sha256: str | None = None,
    limits: ExtractLimits = DEFAULT_LIMITS,
) -> ExtractedPrefix:
    """Unpack the Spack build archive *tarball* so that its prefix becomes *dest*.

    *dest* must not exist; its parent must. With *expected_hash*, the archive's
    ``binary_distribution`` must map that hash to the archive's own prefix. With
    *expected_sha256*, the archive is hashed while it is extracted and read to its end (gzip
    CRC and length); a different digest raises :class:`TarballMismatch` (exit 4), also when
    the archive was refused for another reason.
    Raises :class:`UnsafeArchiveError` (naming the member) for anything unsafe or
    inconsistent, :class:`InstallError` for an unreadable archive; in every case nothing is
    left behind.
    """
    source = str(tarball)
    if dest.exists() or dest.is_symlink():
        raise InstallError(f"{dest}: already exists; refusing to extract {source} over it")
    try:
        compressed = tarball.stat().st_size
    except OSError as exc:
        raise InstallError(f"{source}: cannot read archive: {exc.strerror}") from None
    budget = max(limits.min_budget, compressed * limits.max_ratio)
    actual: str | None = None
    for fast in (True, False):
        work = _make_work_dir(dest)
        try:
            ext = _Extractor(work, limits, fast=fast)
            try:
                actual = _one_pass(tarball, source, budget, ext, expected_sha256)
                prefix, info = ext.finish(source, expected_hash)
            except _Restart:
                continue
            except _Refused as exc:
                member = exc.member
                where = f"member {member!r}: " if member else ""
                raise UnsafeArchiveError(
                    f"{source}: {where}{exc.problem}; installation refused",
                    archive=source,
                    member=member or None,
                ) from None
            except (tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
                raise UnsafeArchiveError(
                    f"{source}: not a valid tar.gz archive: {str(exc) or type(exc).__name__}",
                    archive=source,
                ) from None
            except OSError as exc:
                message = f"{source}: extraction into {dest.parent} failed: {exc.strerror or exc}"
                if exc.errno in _DISK_ERRNOS:  # the root is unusable (exit 8), not the archive
                    raise StoreError(message) from None
                raise InstallError(message) from None
            os.rename(work if fast else os.path.join(work, *prefix), dest)
            break
        finally:
            shutil.rmtree(work, ignore_errors=True)
    else:  # pragma: no cover - the general mode never restarts
        raise InstallError(f"{source}: extraction did not converge")
    n = len(prefix)
    entries: dict[str, Entry] = {}
    for parts, kind in ext.kinds.items():
        if parts[:n] != prefix or len(parts) == n:
            continue
        rel = "/".join(parts[n:])
        target: str | None = None
        if kind == "symlink":
            target = ext.symlink_targets[parts]
        elif kind == "hardlink":
            target = "/".join(ext.link_targets[parts][n:])
        entries[rel] = Entry(path=rel, kind=kind, target=target, executable=parts in ext.executable)
    return ExtractedPrefix(
        path=dest,
        old_prefix="/" + "/".join(prefix),
        buildinfo=info,
        entries=entries,
        size=ext.size,
        sha256=actual,
        compressed_size=compressed,
    )
