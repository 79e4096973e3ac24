"""Writing one download: hash and write while bytes arrive, and the partial-file bookkeeping.

:class:`Sink` hashes and writes the chunks of a download, on their own threads for large ones;
:func:`read_meta`/:func:`write_meta` keep the validator (ETag/Last-Modified) of a ``.partial``
file beside it, and :func:`hash_prefix` hashes what an interrupted run left, once, so a resumed
download never re-reads the whole file. Used by :meth:`cacheclient.transport.Transport.download`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from pathlib import Path
from typing import IO, Any

from cacheclient import safefs
from cacheclient.errors import StoreError

CHUNK_SIZE = 1 << 20
"""Bytes read at a time when hashing an existing partial file."""

__all__ = [
    "FLUSH_EVERY",
    "PIPELINE_MIN",
    "Sink",
    "hash_prefix",
    "open_partial",
    "read_meta",
    "write_meta",
]


def __dir__() -> list[str]:
    return __all__


PIPELINE_MIN = 8 << 20
"""Downloads larger than this hash and write on their own threads (see :class:`Sink`)."""
FLUSH_EVERY = 128 << 20
"""A pipelined download asks the kernel to write back its data after this many bytes, so the
final fsync has little left to do."""


class Sink:
    """Hashes and writes the chunks of one download.

    Small downloads do both inline. Large ones use two threads fed through bounded queues
    (hashlib and file writes release the GIL), so receiving, hashing and writing overlap, plus a
    third that calls ``fdatasync`` every :data:`FLUSH_EVERY` bytes. Memory stays bounded by the
    queue sizes. A write error is raised as :class:`StoreError` by :meth:`feed` or :meth:`close`.
    """

    def __init__(self, out: IO[bytes], hasher: Any, *, pipelined: bool) -> None:
        self.out = out
        self.hasher = hasher
        self.pipelined = pipelined
        self.error: OSError | None = None
        self._threads: list[threading.Thread] = []
        self._queues: list[queue.Queue[bytes | None]] = []
        self._flush = threading.Event()
        self._closing = False
        if pipelined:
            hash_q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
            write_q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
            self._queues = [hash_q, write_q]
            for target, q in ((self._hash_loop, hash_q), (self._write_loop, write_q)):
                thread = threading.Thread(target=target, args=(q,), daemon=True)
                thread.start()
                self._threads.append(thread)
            flusher = threading.Thread(target=self._flush_loop, daemon=True)
            flusher.start()
            self._flusher = flusher

    def _write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:  # unbuffered file: what was received is on disk for a later resume
            view = view[self.out.write(view) or 0 :]

    def _hash_loop(self, q: queue.Queue[bytes | None]) -> None:
        while (chunk := q.get()) is not None:
            self.hasher.update(chunk)

    def _write_loop(self, q: queue.Queue[bytes | None]) -> None:
        pending = 0
        while (chunk := q.get()) is not None:
            if self.error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self._write(chunk)
            except OSError as exc:
                self.error = exc
                continue
            pending += len(chunk)
            if pending >= FLUSH_EVERY:
                pending = 0
                self._flush.set()

    def _flush_loop(self) -> None:
        while True:
            self._flush.wait()
            self._flush.clear()
            if self._closing:
                return
            with contextlib.suppress(OSError, ValueError):
                os.fdatasync(self.out.fileno())

    def _raise(self) -> None:
        if self.error is not None:
            name = getattr(self.out, "name", "?")
            raise StoreError(f"{name}: cannot write: {self.error.strerror or self.error}")

    def feed(self, chunk: bytes) -> None:
        if not self.pipelined:
            self.hasher.update(chunk)
            try:
                self._write(chunk)
            except OSError as exc:
                self.error = exc
            self._raise()
            return
        self._raise()
        for q in self._queues:
            q.put(chunk)

    def close(self) -> None:
        if self.pipelined:
            for q in self._queues:
                q.put(None)
            for thread in self._threads:
                thread.join()
            self._closing = True
            self._flush.set()
            self._flusher.join()
            self.pipelined = False
        self._raise()


_META_LIMIT = 64 << 10


def read_meta(path: Path) -> dict[str, Any]:
    """The sidecar of a partial download ({} when missing or unreadable). It is opened without
    following a symlink or waiting on a FIFO: a planted one is refused (StoreError)."""
    try:
        fd = safefs.open_leaf(path)
    except StoreError:
        raise
    except OSError:
        return {}
    try:
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read(_META_LIMIT))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def write_meta(path: Path, data: dict[str, Any]) -> None:
    """Replace the sidecar atomically: a new file (never an existing name, which might be a
    planted link) renamed over it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with contextlib.suppress(OSError):
        fd = os.open(tmp, flags, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(data).encode())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def open_partial(partial: Path, *, resume: bool) -> int:
    """The partial file for writing: the existing one to continue (*resume*: a regular file
    with no other hard link, else refused), or a fresh one (whatever was there is unlinked,
    never truncated or followed)."""
    if resume:
        return safefs.open_leaf(partial, os.O_WRONLY, single_link=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(partial, flags, 0o644)


def hash_prefix(partial: Path, hasher: Any, expected_size: int | None) -> int:
    """Feed the existing partial file to *hasher* once; 0 (start again) if it is too long.
    A symlink, FIFO or device in its place is refused (StoreError), never followed or read."""
    try:
        fd = safefs.open_leaf(partial)
    except StoreError:
        raise
    except OSError:
        return 0
    with os.fdopen(fd, "rb") as handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            if expected_size is not None and size > expected_size:
                return 0
            while chunk := handle.read(CHUNK_SIZE):
                hasher.update(chunk)
        except OSError:
            return 0
    return size


# ---------------------------------------------------------------------------------------------
# file:// and plain paths
