"""An on-disk cache of a parsed index, keyed by the index checksum, for fast warm lookups.

A 60,000-record index costs seconds to parse (``json.load`` alone). After the first parse the
index is written once to ``<dir>/<checksum>.sqlite`` (table ``records``: hash, name,
in_buildcache, node JSON; indexed by name). A warm lookup then opens that file and reads only
the rows it needs: resolving one package touches its own records and its runtime dependencies,
never the other 60,000. The file is written to a temporary name and renamed into place, so a
crash never leaves a half-written cache; a corrupt file is rebuilt.

:class:`StoredCatalog` offers what the resolver needs
(:class:`cacheclient.resolution.resolve.CatalogLike`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cacheclient.errors import MetadataError, StoreError
from cacheclient.metadata.database import check_db_version, load_json, record_from_node
from cacheclient.model import BuildRecord

__all__ = ["StoredCatalog", "build_index_store", "index_checksum", "open_index_store"]


def __dir__() -> list[str]:
    return __all__


_SCHEMA = (
    "CREATE TABLE records (hash TEXT PRIMARY KEY, name TEXT NOT NULL, "
    "in_buildcache INTEGER NOT NULL, node TEXT NOT NULL)",
    "CREATE INDEX records_name ON records (name)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def index_checksum(data: bytes) -> str:
    """The sha256 (hex) of an index's bytes: the cache key when no manifest gives one."""
    return hashlib.sha256(data).hexdigest()


def _rows(obj: Any, source: str) -> Iterator[tuple[str, str, int, str]]:
    db = obj.get("database") if isinstance(obj, dict) else None
    if not isinstance(db, dict):
        raise MetadataError(source, "database", "expected an object")
    check_db_version(db, source)  # an unknown DB version is refused here too, never guessed
    installs = db.get("installs")
    if not isinstance(installs, dict):
        raise MetadataError(source, "database.installs", "expected an object")
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for dag_hash, entry in installs.items():
        spec = entry.get("spec") if isinstance(entry, dict) else None
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            raise MetadataError(source, f"database.installs.{dag_hash}.spec.name", "missing")
        in_cache = entry.get("in_buildcache", True)
        yield dag_hash, name, 1 if in_cache is True else 0, dumps(spec)


def build_index_store(data: bytes, directory: Path, checksum: str, source: str) -> Path:
    """Parse *data* (Database JSON) once and write ``<directory>/<checksum>.sqlite``."""
    obj = load_json(data, source)
    target = directory / f"{checksum}.sqlite"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=".sqlite")
        os.close(fd)
    except OSError as exc:
        raise StoreError(f"{directory}: cannot write the index cache: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        conn = sqlite3.connect(tmp)
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?,?)", _rows(obj, source))
            conn.execute("INSERT INTO meta VALUES ('source', ?)", (source,))
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


class StoredCatalog:
    """A read-only catalog over an index store; records are built only when asked for."""

    def __init__(
        self,
        path: Path,
        *,
        source: str,
        stacks: tuple[str, ...] = (),
        manifest_path_for: Callable[[str, str, str], str] | None = None,
    ) -> None:
        self.path = path
        self.source = source
        self.warnings: tuple[str, ...] = ()
        self._stacks = stacks
        self._manifest_path_for = manifest_path_for
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._cache: dict[str, BuildRecord | None] = {}
        self._nodes: dict[str, tuple[Mapping[str, Any], bool] | None] = {}

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StoredCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        """``sqlite3.DatabaseError`` (connection closed) if the file is not a usable store."""
        try:
            self._conn.execute("SELECT hash, name, in_buildcache, node FROM records LIMIT 1")
        except sqlite3.DatabaseError:
            self._conn.close()
            raise

    def _node(self, dag_hash: str) -> tuple[Mapping[str, Any], bool] | None:
        if dag_hash not in self._nodes:
            row = self._conn.execute(
                "SELECT node, in_buildcache FROM records WHERE hash = ?", (dag_hash,)
            ).fetchone()
            self._nodes[dag_hash] = None if row is None else (json.loads(row[0]), bool(row[1]))
        return self._nodes[dag_hash]

    def _lookup(self, dag_hash: str) -> Mapping[str, Any] | None:
        found = self._node(dag_hash)
        return None if found is None else found[0]

    def get(self, dag_hash: str) -> BuildRecord | None:
        if dag_hash not in self._cache:
            found = self._node(dag_hash)
            self._cache[dag_hash] = (
                None
                if found is None
                else record_from_node(
                    found[0],
                    path=f"database.installs.{dag_hash}.spec",
                    source=self.source,
                    lookup=self._lookup,
                    installable=found[1],
                    stacks=self._stacks,
                    manifest_path_for=self._manifest_path_for,
                    expected_hash=dag_hash,
                )
            )
        return self._cache[dag_hash]

    def _records(self, hashes: list[str]) -> list[BuildRecord]:
        out = []
        for h in hashes:
            record = self.get(h)
            if record is not None:
                out.append(record)
        return out

    def by_name(self, name: str) -> list[BuildRecord]:
        rows = self._conn.execute("SELECT hash FROM records WHERE name = ?", (name,)).fetchall()
        return self._records([r[0] for r in rows])

    def find_prefix(self, prefix: str) -> list[BuildRecord]:
        rows = self._conn.execute(
            "SELECT hash FROM records WHERE hash >= ? AND hash < ?", (prefix, prefix + "\x7f")
        ).fetchall()
        return self._records([r[0] for r in rows])

    def hashes_by_name(self) -> dict[str, list[str]]:
        """``name -> [hash, ...]`` for every record, without building any record."""
        out: dict[str, list[str]] = {}
        for name, dag_hash in self._conn.execute("SELECT name, hash FROM records ORDER BY hash"):
            out.setdefault(name, []).append(dag_hash)
        return out

    def names(self) -> list[str]:
        rows = self._conn.execute("SELECT DISTINCT name FROM records ORDER BY name").fetchall()
        return [r[0] for r in rows]

    def __len__(self) -> int:
        row = self._conn.execute("SELECT COUNT(*) FROM records").fetchone()
        return int(row[0])


def open_index_store(
    directory: Path,
    checksum: str,
    *,
    source: str,
    data: Callable[[], bytes] | None = None,
    stacks: tuple[str, ...] = (),
    manifest_path_for: Callable[[str, str, str], str] | None = None,
) -> StoredCatalog:
    """The stored catalog for *checksum*, building it from ``data()`` when absent or corrupt.

    :raises MetadataError: no store exists and *data* is None, or the index is malformed.
    """
    path = directory / f"{checksum}.sqlite"
    for attempt in (1, 2):
        if path.exists():
            try:
                catalog = StoredCatalog(
                    path, source=source, stacks=stacks, manifest_path_for=manifest_path_for
                )
                catalog.check()
            except sqlite3.DatabaseError:
                path.unlink(missing_ok=True)
            else:
                return catalog
        if attempt == 2 or data is None:
            break
        build_index_store(data(), directory, checksum, source)
    raise MetadataError(source, "", f"no usable index cache for checksum {checksum[:12]}")
