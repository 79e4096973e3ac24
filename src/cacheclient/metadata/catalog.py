"""An immutable, lazily materialised collection of :class:`~cacheclient.model.BuildRecord`.

Real indexes hold 60,000+ records. A reader therefore hands the catalog only a cheap map
``name -> [hash, ...]`` and a function that builds one record from its hash; records are built
on first access (``by_name``, ``get``, iteration) and cached. Catalogs built from several
sources are merged with :meth:`Catalog.merge`: records with the same hash are one record whose
``stacks`` are the union of theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from cacheclient.model import BuildRecord

__all__ = ["Catalog", "RecordBuilder"]


def __dir__() -> list[str]:
    return __all__


RecordBuilder = Callable[[str], "BuildRecord | None"]
"""Builds the record of a hash, or returns ``None`` when the source does not hold it. May raise
:class:`~cacheclient.errors.MetadataError` when the record is malformed."""


class Catalog:
    """An immutable collection of build records from one or more sources.

    >>> from cacheclient.model import BuildRecord
    >>> r = BuildRecord(name="zlib", version="1.3", hash="a" * 32, platform="linux",
    ...                 os="debian12", target="x86_64")
    >>> c = Catalog([r], source="demo")
    >>> [x.version for x in c.by_name("zlib")], len(c), c.get("a" * 32) is r
    (['1.3'], 1, True)
    """

    __slots__ = ("_build", "_by_name", "_cache", "_len", "source", "warnings")

    source: str
    warnings: tuple[str, ...]

    def __init__(
        self,
        records: Iterable[BuildRecord] = (),
        *,
        source: str = "",
        warnings: Sequence[str] = (),
    ) -> None:
        by_name: dict[str, list[str]] = {}
        cache: dict[str, BuildRecord] = {}
        for record in records:
            if record.hash in cache:
                cache[record.hash] = _union(cache[record.hash], record)
                continue
            cache[record.hash] = record
            by_name.setdefault(record.name, []).append(record.hash)
        self._init(source, warnings, by_name, cache.get, cache)

    def _init(
        self,
        source: str,
        warnings: Sequence[str],
        by_name: Mapping[str, Sequence[str]],
        build: RecordBuilder,
        cache: dict[str, BuildRecord],
    ) -> None:
        self.source = source
        self.warnings = tuple(warnings)
        self._by_name = by_name
        self._build = build
        self._cache = cache
        self._len = sum(len(v) for v in by_name.values())

    @classmethod
    def lazy(
        cls,
        *,
        source: str,
        by_name: Mapping[str, Sequence[str]],
        build: RecordBuilder,
        warnings: Sequence[str] = (),
    ) -> Catalog:
        """A catalog whose records are built on first access.

        :param by_name: package name -> the hashes of its records (each hash once).
        :param build: builds the record of a hash listed in *by_name* (or returns ``None``
            for an unknown hash).
        """
        self = cls.__new__(cls)
        self._init(source, warnings, by_name, build, {})
        return self

    def _get_known(self, dag_hash: str) -> BuildRecord | None:
        record = self._cache.get(dag_hash)
        if record is None:
            record = self._build(dag_hash)
            if record is not None:
                self._cache[dag_hash] = record
        return record

    def names(self) -> list[str]:
        """Sorted package names."""
        return sorted(self._by_name)

    def by_name(self, name: str) -> list[BuildRecord]:
        """Every record of package *name* (empty if none); cheap."""
        out = []
        for h in self._by_name.get(name, ()):
            record = self._get_known(h)
            if record is not None:
                out.append(record)
        return out

    def hashes(self, name: str | None = None) -> list[str]:
        """The hashes of *name* (all hashes when ``None``) without building any record."""
        if name is not None:
            return list(self._by_name.get(name, ()))
        return [h for hashes in self._by_name.values() for h in hashes]

    def count(self, name: str) -> int:
        """How many records *name* has, without building them."""
        return len(self._by_name.get(name, ()))

    def get(self, dag_hash: str) -> BuildRecord | None:
        """The record with this full hash, or ``None``."""
        return self._get_known(dag_hash)

    def __contains__(self, dag_hash: object) -> bool:
        return isinstance(dag_hash, str) and self.get(dag_hash) is not None

    def find_prefix(self, prefix: str) -> list[BuildRecord]:
        """Records whose hash starts with *prefix* (for ``/abc1234`` requests)."""
        out = []
        for hashes in self._by_name.values():
            for h in hashes:
                if h.startswith(prefix):
                    record = self._get_known(h)
                    if record is not None:
                        out.append(record)
        return out

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[BuildRecord]:
        for hashes in self._by_name.values():
            for h in hashes:
                record = self._get_known(h)
                if record is not None:
                    yield record

    def __repr__(self) -> str:
        return f"<Catalog {self.source!r}: {self._len} records, {len(self._by_name)} names>"

    @classmethod
    def merge(cls, catalogs: Sequence[Catalog]) -> Catalog:
        """One catalog holding every record of *catalogs*.

        For a hash present in several catalogs, the first catalog's record wins, its
        ``stacks`` become the union of all (in order), and fields it lacks (manifest path,
        blobs, libc, target info) are taken from the others. Warnings are concatenated.
        """
        parts = list(catalogs)
        if len(parts) == 1:
            return parts[0]
        by_name: dict[str, list[str]] = {}
        seen: set[str] = set()
        for part in parts:
            for name, hashes in part._by_name.items():
                bucket = by_name.setdefault(name, [])
                for h in hashes:
                    if h not in seen:
                        seen.add(h)
                        bucket.append(h)

        def build(dag_hash: str) -> BuildRecord | None:
            found: BuildRecord | None = None
            for part in parts:
                record = part.get(dag_hash)
                if record is not None:
                    found = record if found is None else _union(found, record)
            return found

        return cls.lazy(
            source=" + ".join(p.source for p in parts),
            by_name=by_name,
            build=build,
            warnings=[w for p in parts for w in p.warnings],
        )


def _union(first: BuildRecord, other: BuildRecord) -> BuildRecord:
    stacks = tuple(dict.fromkeys((*first.stacks, *other.stacks)))
    changes: dict[str, object] = {}
    if stacks != first.stacks:
        changes["stacks"] = stacks
    for field in ("manifest_path", "libc", "target_info", "namespace", "compiler"):
        if getattr(first, field) is None and getattr(other, field) is not None:
            changes[field] = getattr(other, field)
    if not first.blobs and other.blobs:
        changes["blobs"] = other.blobs
    if not first.dependencies_known and other.dependencies_known:
        changes["dependencies"] = other.dependencies
        changes["dependencies_known"] = True
    elif not first.dependencies and other.dependencies:
        changes["dependencies"] = other.dependencies
    return dataclasses.replace(first, **changes) if changes else first  # type: ignore[arg-type]
