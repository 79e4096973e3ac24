"""Opening files in a directory other people can write to, without following what they planted.

The store and the install root may be shared (a team volume, a CI cache restored from any
branch), so every path below them is untrusted: a component may have been replaced by a
symlink leading elsewhere, a file by a FIFO (an ``open`` would wait forever), a device or a
hard link to somebody's file. Everything here works relative to a trusted *base* directory:

* :func:`open_dir` walks the components below *base* with ``O_DIRECTORY | O_NOFOLLOW``
  (each one opened relative to the previous one), creating missing ones, so no symlinked
  directory is ever followed;
* :func:`open_file` opens the last component ``O_NOFOLLOW | O_NONBLOCK`` in that directory and
  checks with ``fstat`` that it is a regular file (and, for writing, has no other hard link);
* :func:`inside` decides whether a relative path read from metadata names something inside
  *base* (by components, after resolving symlinks) and outside its ``.cacheclient/`` bookkeeping.

A refusal is a :class:`~cacheclient.errors.StoreError` (exit 8) saying what was found where.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from cacheclient.errors import StoreError, UsageError, printable

__all__ = [
    "PRIVATE",
    "describe",
    "expand_path",
    "inside",
    "open_dir",
    "open_file",
    "open_leaf",
    "read_file",
    "relative_parts",
    "unlink",
]


def __dir__() -> list[str]:
    return __all__


PRIVATE = ".cacheclient"
"""The bookkeeping directory of a store or root; never named by a path read from metadata."""

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def describe(mode: int) -> str:
    """What kind of file *mode* is, for messages."""
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a regular file" if stat.S_ISREG(mode) else "an unknown kind of file"


def _refuse(path: Path | str, found: str, *, extra: str = "") -> StoreError:
    tail = f"; {extra}" if extra else ""
    return StoreError(f"{path}: is {found}, refusing to follow or use it (planted?){tail}")


def expand_path(value: str | os.PathLike[str], what: str = "path") -> Path:
    """A path given by the user (``~`` expanded): UsageError (exit 2) for ``~nouser/...`` or a
    path that is not valid UTF-8 (it could be neither recorded nor shown)."""
    text = os.fspath(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} {printable(ascii(text))}: not valid UTF-8") from None
    if "\0" in text:
        raise UsageError(f"{what} {text!a}: contains a NUL character")
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise UsageError(f"{what} {text!r}: cannot expand '~' (no such user)") from None


def relative_parts(base: Path, path: Path) -> tuple[str, ...]:
    """The components of *path* below *base* (``ValueError`` when it is not below)."""
    return path.relative_to(base).parts


def open_dir(base: Path, parts: Sequence[str], *, create: bool = False, mode: int = 0o755) -> int:
    """A descriptor of ``base/parts...`` reached without following any symlink below *base*.

    Missing directories are created with *create* (else ``FileNotFoundError``). A component
    that is a symlink or not a directory is refused (StoreError).
    """
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if create and exc.errno == errno.ENOENT:
            base.mkdir(parents=True, exist_ok=True)
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            raise
    here = base
    try:
        for name in parts:
            here = here / name
            _check_component(name, here)
            try:
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, mode, dir_fd=fd)
                nfd = _reopen_dir(fd, name, here)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _not_a_dir(fd, name, here) from None
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_component(name: str, here: Path) -> None:
    if name in ("", ".", "..") or "/" in name:
        raise StoreError(f"{here}: refusing a path component {name!r}")


def _reopen_dir(fd: int, name: str, here: Path) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _not_a_dir(fd, name, here) from None
        raise


def _not_a_dir(fd: int, name: str, here: Path) -> StoreError:
    try:
        found = describe(os.lstat(name, dir_fd=fd).st_mode)
    except OSError:
        found = "not a directory"
    return _refuse(here, found, extra="expected a directory")


def open_file(
    path: Path,
    flags: int = os.O_RDONLY,
    mode: int = 0o644,
    *,
    base: Path,
    single_link: bool = False,
) -> int:
    """Open *path* (below *base*) without following symlinks or blocking on a FIFO.

    The result is checked to be a regular file; with *single_link* (for anything we write,
    truncate or chmod) also that no other name links to it. Directories on the way are
    created when ``O_CREAT`` is in *flags*. ``FileNotFoundError`` passes through.
    """
    parts = relative_parts(base, path)
    dfd = open_dir(base, parts[:-1], create=bool(flags & os.O_CREAT))
    try:
        try:
            fd = os.open(parts[-1], flags | _NOFOLLOW | os.O_NONBLOCK, mode, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refuse(path, "a symlink") from None
            if exc.errno == errno.ENXIO:  # a FIFO without a reader, or a device
                raise _refuse(path, describe(os.lstat(parts[-1], dir_fd=dfd).st_mode)) from None
            raise
    finally:
        os.close(dfd)
    return _regular(fd, path, single_link=single_link)


def _regular(fd: int, path: Path, *, single_link: bool) -> int:
    """*fd* once it is proven a regular file (and blocking again); closed when it is not."""
    try:
        _check_regular(fd, path, single_link=single_link)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(fd: int, path: Path, *, single_link: bool) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, describe(info.st_mode))
    if single_link and info.st_nlink > 1:
        raise _refuse(path, f"a file with {info.st_nlink} hard links")


def open_leaf(
    path: Path, flags: int = os.O_RDONLY, mode: int = 0o644, *, single_link: bool = False
) -> int:
    """:func:`open_file` for a path whose directory the caller already checked: only the last
    component is guarded (no symlink followed, no FIFO waited on, regular files only)."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "a symlink") from None
        if exc.errno == errno.ENXIO:
            raise _refuse(path, describe(os.lstat(path).st_mode)) from None
        raise
    return _regular(fd, path, single_link=single_link)


def read_file(path: Path, *, base: Path, limit: int | None = None) -> bytes | None:
    """The bytes of the regular file *path* below *base*; None when it (or a parent) is
    missing. More than *limit* bytes is a StoreError."""
    try:
        fd = open_file(path, base=base)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise StoreError(f"{path}: larger than {limit} bytes; refusing to read it")
    return data


def inside(base: Path, relative: str, *, what: str, private_ok: bool = False) -> Path:
    """``base/relative`` after checking that *relative*, a path read from metadata, names
    something inside *base*: relative, no ``..``, no NUL, every existing parent resolving
    (symlinks followed) inside *base*, and not in *base*'s ``.cacheclient/``.

    The last component is *not* resolved (the caller opens or unlinks it without following).
    """
    if not relative or "\0" in relative:
        raise StoreError(f"{base}: {what} {relative!r} is not a usable path")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or any(p in ("..",) for p in pure.parts):
        raise StoreError(f"{base}: {what} {relative!r} leads outside {base}; refusing it")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts:
        raise StoreError(f"{base}: {what} {relative!r} is not a usable path")
    if parts[0] == PRIVATE and not private_ok:
        raise StoreError(f"{base}: {what} {relative!r} names the store's own bookkeeping")
    real_base = Path(os.path.realpath(base))
    parent = Path(os.path.realpath(base.joinpath(*parts[:-1])))
    if not parent.is_relative_to(real_base):
        raise StoreError(
            f"{base}: {what} {relative!r} leads outside {base} (through a symlink to {parent})"
        )
    below = parent.relative_to(real_base).parts
    if below and below[0] == PRIVATE and not private_ok:
        raise StoreError(f"{base}: {what} {relative!r} names the store's own bookkeeping")
    return base.joinpath(*parts)


def unlink(path: Path, *, base: Path) -> bool:
    """Remove the file *path* below *base* (never through a symlinked directory; a symlink at
    the end is removed itself, not its target). False when it was not there."""
    parts = relative_parts(base, path)
    try:
        dfd = open_dir(base, parts[:-1])
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        os.unlink(parts[-1], dir_fd=dfd)
    except FileNotFoundError:
        return False
    finally:
        os.close(dfd)
    return True


@contextlib.contextmanager
def opened_dir(base: Path, parts: Sequence[str], *, create: bool = False) -> Iterator[int]:
    """:func:`open_dir` as a context manager."""
    fd = open_dir(base, parts, create=create)
    try:
        yield fd
    finally:
        os.close(fd)
