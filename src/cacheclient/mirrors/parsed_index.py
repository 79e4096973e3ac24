"""The parsed index: a mirror's index kept on disk as one SQLite file of ready-made records.

A 60,000-record index is 80-185 MB of JSON; reading it takes seconds. It is read once, when its
checksum is new (:func:`build_parsed_index`, with the fast reader of
:mod:`cacheclient.metadata.database_fast`), into ``<folder>/<checksum>.sqlite``: one row per
record (hash, package name, the :class:`~cacheclient.model.BuildRecord` in msgpack, a CRC),
indexed by hash and by name, and in a table of its own the record's
:class:`~cacheclient.model.ClosureNode` summary (msgpack, a CRC of its own), indexed by hash. A
row's body leaves out what the reader knows already: the index's ``source`` and ``stacks`` (the
same for every record, checked in the file's meta) and, for a v3 index, the ``manifest_path``
(:func:`~cacheclient.metadata.layout.spec_manifest_path` of the record's name, version and
hash; the row's kind says so). A large index is read by two
processes at once on Linux (:data:`PARALLEL_ABOVE`): a forked child writes the second half of
the records into a file of its own, copied in at the end. Later commands open it
read-only and decode only the rows they touch: resolving one package reads its records and the
summaries of its runtime closure, never the rest, and parses no JSON at all.

The file lives in the store and is untrusted like everything read back from it. It is used
only when it is a regular file (not a symlink) whose SQLite header, size, application id,
format, index checksum, source and stacks match; each row's CRC (over body, kind and target)
must match and its record must decode into the expected types with the row's hash and name,
and without the fields the reader fills in; a summary's CRC must match and it must decode into a
:class:`~cacheclient.model.ClosureNode` of its row's hash. Anything else is
:class:`ParsedIndexCorrupt`, and :func:`open_parsed_index` deletes the file and builds it again
(mid-command too: a row found damaged while resolving triggers one rebuild). The file is written
under a temporary name and renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import sqlite3
import stat
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import msgspec

from cacheclient.errors import MetadataError, StoreError
from cacheclient.metadata.catalog import RecordIndex
from cacheclient.metadata.database import gc_paused
from cacheclient.metadata.layout import spec_manifest_path
from cacheclient.model import RUNTIME_DEPTYPES, BuildRecord, ClosureNode

__all__ = [
    "FORMAT",
    "ParsedIndex",
    "ParsedIndexCorrupt",
    "build_parsed_index",
    "open_parsed_index",
]


def __dir__() -> list[str]:
    return __all__


FORMAT = 5
"""Version of the file layout (``PRAGMA user_version``); another version is rebuilt."""
_APPLICATION_ID = 0x63636978  # "ccix"
_HEADER = b"SQLite format 3\x00"
_RECORD, _ERROR, _V3_RECORD = 0, 1, 2
"""Row kinds: a record; a record's error; a record whose ``manifest_path`` is
:func:`spec_manifest_path` of its name, version and hash (not stored)."""
_SCHEMA = (
    "PRAGMA page_size = 16384",  # rows are ~1.3 KB: 15% less CPU to write than 4 KB pages
    f"PRAGMA application_id = {_APPLICATION_ID}",
    f"PRAGMA user_version = {FORMAT}",
    "CREATE TABLE records (hash TEXT NOT NULL, name TEXT NOT NULL, kind INTEGER NOT NULL, "
    "body BLOB NOT NULL, target INTEGER, crc INTEGER NOT NULL)",
    # The summaries apart: a closure walk reads a few pages of them, not one of records each.
    "CREATE TABLE walks (hash TEXT NOT NULL, kind INTEGER NOT NULL, walk BLOB NOT NULL, "
    "crc INTEGER NOT NULL)",
    "CREATE TABLE targets (id INTEGER PRIMARY KEY, body BLOB NOT NULL, crc INTEGER NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_INDEXES = (
    "CREATE UNIQUE INDEX records_hash ON records (hash)",
    "CREATE INDEX records_name ON records (name)",
    "CREATE UNIQUE INDEX walks_hash ON walks (hash)",
)


_SELECT = "SELECT hash, name, kind, body, target, crc FROM records"
_SELECT_WALK = "SELECT hash, kind, walk, crc FROM walks"
"""A ``walks`` row holds a record's :class:`ClosureNode` in msgpack (empty for an error row),
decoded straight into one."""
_BATCH = 500
"""Hashes per query of :meth:`ParsedIndex.get_many` (SQLite allows at least 999 parameters)."""

_T = TypeVar("_T")


class ParsedIndexCorrupt(Exception):
    """The parsed-index file is not one this code wrote for this index: rebuild it."""


def _crc(body: bytes, kind: int, target: int | None) -> int:
    """The CRC of one row: body, kind and target id."""
    return zlib.crc32(b"%d" % (target or 0), zlib.crc32(body, kind))


PARALLEL_ABOVE = 32 * 1024 * 1024
"""Indexes larger than this (bytes) are read by two processes at once when that is safe
(:func:`_can_fork`): a forked child writes the second half of the records into a file of its
own, merged in at the end. Anything going wrong with the child costs only time: the parent
then reads that half itself."""
_CHILD_TARGETS = 1 << 24
"""The target ids a child gives start above this (they never meet the parent's)."""
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _can_fork() -> bool:
    """A second process only on Linux, with a second CPU to run it, and while this process runs
    no other thread (a fork copies one thread: another's locks would stay held in the child)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "sched_getaffinity"):
        return False
    try:
        cpus = len(os.sched_getaffinity(0))
    except OSError:
        return False
    return cpus >= 2 and threading.active_count() == 1


class _Rows:
    """The rows of one index: records (all or a part) and the target descriptions they share.

    An index has a few distinct target descriptions (archspec dicts with feature lists): each
    is stored once, under an id counted from *first_target*, and shared by the records naming
    it.
    """

    def __init__(
        self,
        data: bytes | memoryview,
        source: str,
        stacks: tuple[str, ...],
        manifest_path_for: Callable[[str, str, str], str] | None,
        first_target: int = 1,
    ) -> None:
        self.data = data
        self.source = source
        self.stacks = stacks
        # v3 manifest paths are derived again when a record is read (row kind _V3_RECORD).
        self.derived = manifest_path_for is spec_manifest_path
        self.path_for = None if self.derived else manifest_path_for
        self.encode = msgspec.msgpack.Encoder().encode
        self.targets: dict[bytes, int] = {}
        self.first_target = first_target
        self._by_object: dict[int, tuple[object, int]] = {}

    def _target_id(self, info: object) -> int:
        known = self._by_object.get(id(info))
        if known is not None and known[0] is info:
            return known[1]
        key = self.encode(info)
        found = self.targets.setdefault(key, self.first_target + len(self.targets))
        self._by_object[id(info)] = (info, found)
        return found

    def records(
        self, part: tuple[int, int]
    ) -> Iterator[tuple[tuple[str, str, int, bytes, int | None, int], tuple[str, int, bytes, int]]]:
        """``(records row, walks row)`` of each record of *part*."""
        # The fast reader's typed structs are made only when an index is read (not warm).
        from cacheclient.metadata.database_fast import read_records  # noqa: PLC0415

        encode = self.encode
        derived = self.derived
        entries = read_records(
            self.data, self.source, stacks=self.stacks, manifest_path_for=self.path_for, part=part
        )
        runtime = RUNTIME_DEPTYPES
        for dag_hash, name, record in entries:
            target: int | None = None
            if isinstance(record, MetadataError):
                kind, body, walk = _ERROR, encode((record.path, record.problem)), b""
            else:
                # ClosureNode.of(the record), from the fields the reader gives
                external = record.get("external_path") is not None
                edges = [
                    (dep["name"], dep["hash"])
                    for dep in record["dependencies"]
                    if not runtime.isdisjoint(dep["deptypes"])
                ]
                edges.sort()
                walk = encode(
                    {
                        "hash": dag_hash,
                        "name": name,
                        "version": record["version"],
                        "target": record["target"],
                        "installable": record["installable"],
                        "external": external,
                        "children": [dag for _, dag in edges],
                    }
                )
                info = record.pop("target_info", None)
                if info is not None:
                    target = self._target_id(info)
                # The same for every record: filled in when it is read.
                record.pop("source", None)
                record.pop("stacks", None)
                kind = _V3_RECORD if derived and not external else _RECORD
                body = encode(record)
            crc = _crc(body, kind, target)
            yield (
                (dag_hash, name, kind, body, target, crc),
                (dag_hash, kind, walk, zlib.crc32(walk)),
            )

    def insert(self, conn: sqlite3.Connection, part: tuple[int, int]) -> None:
        """Insert the records of *part*, their summaries and the target descriptions seen so
        far."""
        rows = self.records(part)
        while chunk := list(itertools.islice(rows, 4096)):
            conn.executemany("INSERT INTO records VALUES (?,?,?,?,?,?)", [r for r, _ in chunk])
            conn.executemany("INSERT INTO walks VALUES (?,?,?,?)", [w for _, w in chunk])
        conn.executemany(
            "INSERT OR IGNORE INTO targets VALUES (?,?,?)",
            ((n, body, _crc(body, _RECORD, n)) for body, n in self.targets.items()),
        )


def _create(path: Path) -> sqlite3.Connection:
    """A connection to the new, empty file *path* with the tables (no indexes yet)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        for statement in _SCHEMA:
            conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


class _Helper:
    """A forked child writing the second half of the records into a file of its own."""

    def __init__(self, rows: _Rows, path: Path) -> None:
        self.path = path
        # No signal may interrupt the child before it is inside its own try: it would unwind
        # through the parent's code (and clean up the parent's files).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise
        if pid == 0:  # the child: never returns
            status = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                conn = _create(path)
                try:
                    conn.execute("BEGIN")
                    rows.insert(conn, (1, 2))
                    conn.execute("COMMIT")
                finally:
                    conn.close()
                status = 0
            finally:  # no cleanup of the parent's state, no atexit, no buffered output
                os._exit(status)
        self.pid: int | None = pid
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    @classmethod
    def start(cls, rows: _Rows, folder: Path) -> _Helper | None:
        """A child writing the second half of *rows* (``None``: no file or no process for it)."""
        try:
            path = _temp_file(folder)
        except OSError:
            return None
        try:
            return cls(rows, path)
        except OSError:  # cannot fork (EAGAIN, ENOMEM): one process then
            path.unlink(missing_ok=True)
            return None

    def result(self) -> Path | None:
        """Its file once it is done, ``None`` when it failed (or the file is not one it wrote:
        the store is not trusted, not even for a moment)."""
        if self.pid is None:
            return None
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        if os.waitstatus_to_exitcode(status) != 0:
            return None
        try:
            _check_file(self.path)
        except (OSError, ParsedIndexCorrupt):
            return None
        return self.path

    def discard(self) -> None:
        """Stop it if it still runs, and remove its file."""
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(self.pid, 0)
            self.pid = None
        with contextlib.suppress(StoreError):
            _discard(self.path)


def _merge(conn: sqlite3.Connection, other: Path) -> None:
    """Copy the rows of *other* (a child's file) into *conn*'s file."""
    conn.execute("ATTACH DATABASE ? AS part", (str(other),))
    try:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO records SELECT * FROM part.records")
        conn.execute("INSERT INTO walks SELECT * FROM part.walks")
        conn.execute("INSERT INTO targets SELECT * FROM part.targets")
        conn.execute("COMMIT")
    finally:
        conn.execute("DETACH DATABASE part")


def _temp_file(folder: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=".sqlite")
    os.close(fd)
    return Path(name)


def build_parsed_index(
    data: bytes | memoryview,
    folder: Path,
    checksum: str,
    *,
    source: str,
    stacks: tuple[str, ...] = (),
    manifest_path_for: Callable[[str, str, str], str] | None = None,
) -> Path:
    """Read *data* (Database JSON) once and write ``<folder>/<checksum>.sqlite``.

    :raises MetadataError: the index is malformed; :raises StoreError: cannot write.
    """
    target = folder / f"{checksum}.sqlite"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = _temp_file(folder)
    except OSError as exc:
        raise StoreError(f"{folder}: cannot write the parsed index: {exc.strerror}") from None
    helper: _Helper | None = None
    try:
        with gc_paused():
            if len(data) > PARALLEL_ABOVE and _can_fork():
                # Forked before this process opens any SQLite file.
                child = _Rows(data, source, stacks, manifest_path_for, _CHILD_TARGETS + 1)
                helper = _Helper.start(child, folder)
            rows = _Rows(data, source, stacks, manifest_path_for)
            conn = _create(tmp)
            try:
                conn.execute("BEGIN")
                rows.insert(conn, (0, 2) if helper is not None else (0, 1))
                conn.execute("COMMIT")
                if helper is not None:
                    other = helper.result()
                    if other is not None:
                        _merge(conn, other)
                    else:  # the child failed: its half here
                        conn.execute("BEGIN")
                        rows.insert(conn, (1, 2))
                        conn.execute("COMMIT")
                conn.execute("BEGIN")
                for statement in _INDEXES:
                    conn.execute(statement)
                count = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
                meta = {
                    "checksum": checksum,
                    "source": source,
                    "stacks": json.dumps(list(stacks)),
                    "count": str(count),
                }
                conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                conn.execute("COMMIT")
            finally:
                conn.close()
        os.replace(tmp, target)
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{folder}: cannot write the parsed index: {exc}") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{folder}: cannot write the parsed index: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if helper is not None:
            helper.discard()
    return target


def _check_file(path: Path) -> os.stat_result:
    """The file's status if it looks like a complete SQLite file of ours (header and size)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP: a symlink in its place
        raise ParsedIndexCorrupt(f"cannot open: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ParsedIndexCorrupt("not a regular file")
        header = os.pread(fd, 100, 0)
    finally:
        os.close(fd)
    if len(header) < 100 or not header.startswith(_HEADER):
        raise ParsedIndexCorrupt("not an SQLite file")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid_for = int.from_bytes(header[92:96], "big")
    changes = int.from_bytes(header[24:28], "big")
    if valid_for != changes or pages * page_size != info.st_size:
        raise ParsedIndexCorrupt(f"size {info.st_size} does not match its header")
    if int.from_bytes(header[68:72], "big") != _APPLICATION_ID:
        raise ParsedIndexCorrupt("not a cacheclient parsed index")
    if int.from_bytes(header[60:64], "big") != FORMAT:
        raise ParsedIndexCorrupt("written by another version of cacheclient")
    return info


class ParsedIndex:
    """A parsed-index file opened read-only: records by hash, hashes by name or prefix.

    Every method raises :class:`ParsedIndexCorrupt` when the file turns out to be damaged or
    edited; records it has returned were checked.
    """

    def __init__(
        self,
        path: Path,
        checksum: str,
        *,
        source: str,
        stacks: tuple[str, ...] = (),
    ) -> None:
        """:raises FileNotFoundError: no file; :raises ParsedIndexCorrupt: not a good one."""
        self.path = path
        self.source = source
        self._stacks = stacks
        self._decode = msgspec.msgpack.Decoder(BuildRecord).decode
        self._decode_error = msgspec.msgpack.Decoder(tuple[str, str]).decode
        self._decode_walk = msgspec.msgpack.Decoder(ClosureNode).decode
        self._targets: dict[int, Mapping[str, Any]] | None = None
        before = _check_file(path)
        try:
            self._conn = sqlite3.connect(
                f"{path.as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ParsedIndexCorrupt(str(exc)) from None
        try:
            self._count = self._check(before, checksum)
        except BaseException:
            self._conn.close()
            raise

    def _check(self, before: os.stat_result, checksum: str) -> int:
        """The record count, once the file is known to be the one opened and ours."""
        after = os.stat(self.path, follow_symlinks=False)
        if (after.st_ino, after.st_dev) != (before.st_ino, before.st_dev):
            raise ParsedIndexCorrupt("replaced while being opened")
        meta = {str(k): v for k, v in self._query("SELECT key, value FROM meta")}
        expected = {
            "checksum": checksum,
            "source": self.source,
            "stacks": json.dumps(list(self._stacks)),
        }
        for key, value in expected.items():
            if meta.get(key) != value:
                raise ParsedIndexCorrupt(f"meta {key} does not match")
        count = meta.get("count")
        if not isinstance(count, str) or not count.isdigit():
            raise ParsedIndexCorrupt("meta count is not a number")
        return int(count)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ParsedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except (sqlite3.Error, OverflowError, MemoryError) as exc:
            raise ParsedIndexCorrupt(str(exc)) from None

    def _strings(self, rows: list[tuple[object, ...]]) -> list[str]:
        out = [row[0] for row in rows]
        if not all(isinstance(x, str) for x in out):
            raise ParsedIndexCorrupt("a hash or name is not text")
        return out  # type: ignore[return-value]

    def get(self, dag_hash: str) -> BuildRecord | None:
        """The record of *dag_hash*, ``None`` when the index does not hold it.

        :raises MetadataError: the index holds a malformed record there.
        """
        rows = self._query(f"{_SELECT} WHERE hash = ?", (dag_hash,))
        return self._record(dag_hash, rows[0]) if rows else None

    def get_many(self, hashes: Iterable[str]) -> dict[str, BuildRecord]:
        """The records of those *hashes* the index holds, read in batches (a closure of
        thousands of builds takes a few queries, not one each).

        :raises MetadataError: the index holds a malformed record for one of them.
        """
        found: dict[str, BuildRecord] = {}
        for row in self._batched(_SELECT, hashes):
            dag_hash = row[0]
            if not isinstance(dag_hash, str) or dag_hash in found:
                raise ParsedIndexCorrupt("a hash is not text, or is listed twice")
            found[dag_hash] = self._record(dag_hash, row)
        return found

    def _batched(self, select: str, hashes: Iterable[str]) -> Iterator[tuple[object, ...]]:
        """The rows *select* gives for *hashes*, :data:`_BATCH` hashes a query."""
        wanted = sorted(set(hashes))
        for start in range(0, len(wanted), _BATCH):
            chunk = wanted[start : start + _BATCH]
            yield from self._query(f"{select} WHERE hash IN ({','.join('?' * len(chunk))})", chunk)

    def walk_many(self, hashes: Iterable[str]) -> dict[str, ClosureNode | None]:
        """The closure summaries of those *hashes* the index holds (``None`` for a malformed
        record: :meth:`get` raises its error), read in batches without decoding full records."""
        found: dict[str, ClosureNode | None] = {}
        decode, crc32 = self._decode_walk, zlib.crc32
        for dag_hash, kind, walk, wcrc in self._batched(_SELECT_WALK, hashes):
            if (
                not isinstance(dag_hash, str)
                or dag_hash in found
                or not isinstance(walk, bytes)
                or wcrc != crc32(walk)
            ):
                raise ParsedIndexCorrupt(f"record {dag_hash!r:.40}: summary does not match")
            if kind == _ERROR:
                found[dag_hash] = None
                continue
            try:
                node = decode(walk)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ParsedIndexCorrupt(f"record {dag_hash}: {exc}") from None
            if node.hash != dag_hash:
                raise ParsedIndexCorrupt(f"record {dag_hash}: summary does not match its key")
            found[dag_hash] = node
        return found

    def _record(self, dag_hash: str, row: tuple[object, ...]) -> BuildRecord:
        """The checked record of one row ``(hash, name, kind, body, target, crc)``."""
        _, name, kind, body, target, crc = row
        if (
            not isinstance(name, str)
            or not isinstance(body, bytes)
            or kind not in (_RECORD, _ERROR, _V3_RECORD)
            or not (target is None or isinstance(target, int))
            or crc != _crc(body, kind, target)
        ):
            raise ParsedIndexCorrupt(f"record {dag_hash}: checksum does not match")
        try:
            if kind == _ERROR:
                path, problem = self._decode_error(body)
                raise MetadataError(self.source, path, problem)
            record = self._decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ParsedIndexCorrupt(f"record {dag_hash}: {exc}") from None
        if (
            record.hash != dag_hash
            or record.name != name
            or record.stacks
            or record.source is not None
            or record.target_info is not None
            or (
                kind == _V3_RECORD
                and (record.manifest_path is not None or record.external_path is not None)
            )
        ):
            raise ParsedIndexCorrupt(f"record {dag_hash}: does not match its key")
        # Completing the record just decoded (nobody else holds it yet) with what every record
        # of this index shares, and its derived manifest path.
        object.__setattr__(record, "stacks", self._stacks)
        object.__setattr__(record, "source", self.source)
        if kind == _V3_RECORD:
            manifest = spec_manifest_path(record.name, record.version, dag_hash)
            object.__setattr__(record, "manifest_path", manifest)
        if target is not None:
            info = self._target(target)
            if info.get("name") != record.target:
                raise ParsedIndexCorrupt(f"record {dag_hash}: target description mismatch")
            # Its target description, shared read-only with the other records of that target.
            object.__setattr__(record, "target_info", info)
        return record

    def _target(self, target: int) -> Mapping[str, Any]:
        if self._targets is None:
            decode = msgspec.msgpack.Decoder(dict[str, Any]).decode
            found: dict[int, Mapping[str, Any]] = {}
            for n, body, crc in self._query("SELECT id, body, crc FROM targets"):
                if (
                    not isinstance(n, int)
                    or not isinstance(body, bytes)
                    or crc != _crc(body, _RECORD, n)
                ):
                    raise ParsedIndexCorrupt("target description: checksum does not match")
                try:
                    found[n] = MappingProxyType(decode(body))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise ParsedIndexCorrupt(f"target description: {exc}") from None
            self._targets = found
        info = self._targets.get(target)
        if info is None:
            raise ParsedIndexCorrupt(f"unknown target description {target}")
        return info

    build = get
    build_many = get_many

    def hashes(self, name: str) -> list[str]:
        return self._strings(self._query("SELECT hash FROM records WHERE name = ?", (name,)))

    def with_prefix(self, prefix: str) -> list[str]:
        return self._strings(
            self._query(
                "SELECT hash FROM records WHERE hash >= ? AND hash < ?", (prefix, prefix + "\x7f")
            )
        )

    def names(self) -> list[str]:
        return self._strings(self._query("SELECT DISTINCT name FROM records ORDER BY name"))

    def all_hashes(self) -> list[str]:
        return self._strings(self._query("SELECT hash FROM records ORDER BY name, hash"))

    def size(self) -> int:
        return self._count


class _Healing:
    """A :class:`~cacheclient.metadata.catalog.RecordIndex` on a parsed-index file that is
    rebuilt once when it turns out to be damaged in the middle of a command."""

    def __init__(self, opener: Callable[[bool], ParsedIndex], source: str) -> None:
        self._open = opener
        self._source = source
        self._healed = False
        self.current = opener(False)

    def _call(self, method: Callable[[ParsedIndex], _T]) -> _T:
        try:
            return method(self.current)
        except ParsedIndexCorrupt as exc:
            problem = exc
        if not self._healed:
            self._healed = True
            self.current.close()
            self.current = self._open(True)
            try:
                return method(self.current)
            except ParsedIndexCorrupt as exc:
                problem = exc
        raise MetadataError(
            self._source, "", f"the parsed index is damaged again after a rebuild: {problem}"
        )

    def names(self) -> list[str]:
        return self._call(ParsedIndex.names)

    def hashes(self, name: str) -> list[str]:
        return self._call(lambda index: index.hashes(name))

    def all_hashes(self) -> list[str]:
        return self._call(ParsedIndex.all_hashes)

    def with_prefix(self, prefix: str) -> list[str]:
        return self._call(lambda index: index.with_prefix(prefix))

    def size(self) -> int:
        return self._call(ParsedIndex.size)

    def build(self, dag_hash: str) -> BuildRecord | None:
        return self._call(lambda index: index.get(dag_hash))

    def build_many(self, hashes: Sequence[str]) -> dict[str, BuildRecord]:
        return self._call(lambda index: index.get_many(hashes))

    def walk_many(self, hashes: Sequence[str]) -> dict[str, ClosureNode | None]:
        return self._call(lambda index: index.walk_many(hashes))


def _discard(path: Path) -> None:
    """Remove a damaged parsed index (a symlink itself, never what it points to)."""
    try:
        path.unlink(missing_ok=True)
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)
    except OSError as exc:
        raise StoreError(f"{path}: cannot remove a damaged parsed index: {exc.strerror}") from None


def open_parsed_index(
    folder: Path,
    checksum: str,
    *,
    source: str,
    data: Callable[[], bytes | memoryview] | None = None,
    stacks: tuple[str, ...] = (),
    manifest_path_for: Callable[[str, str, str], str] | None = None,
) -> RecordIndex:
    """The parsed index of the index with *checksum*, built from ``data()`` when it is missing
    or damaged (and rebuilt once if damage shows while it is read).

    *data* must return the index bytes already checked against *checksum*.

    :raises MetadataError: no usable file and no *data*, or the index is malformed.
    :raises StoreError: the folder cannot be written.
    """
    path = folder / f"{checksum}.sqlite"

    def opener(rebuild: bool) -> ParsedIndex:
        if rebuild:
            _discard(path)
        else:
            try:
                return ParsedIndex(path, checksum, source=source, stacks=stacks)
            except FileNotFoundError:
                pass
            except ParsedIndexCorrupt:
                _discard(path)
        if data is None:
            raise MetadataError(source, "", f"no usable parsed index for checksum {checksum[:12]}")
        build_parsed_index(
            data(),
            folder,
            checksum,
            source=source,
            stacks=stacks,
            manifest_path_for=manifest_path_for,
        )
        try:
            return ParsedIndex(path, checksum, source=source, stacks=stacks)
        except (FileNotFoundError, ParsedIndexCorrupt) as exc:
            raise StoreError(
                f"{path}: the parsed index just written cannot be read: {exc}"
            ) from None

    return _Healing(opener, source)
