"""An immutable, lazily materialised collection of :class:`~cacheclient.model.BuildRecord`.

Real indexes hold 60,000+ records. A reader therefore hands the catalog only a cheap map
``name -> [hash, ...]`` and a function that builds one record from its hash; records are built
on first access (``by_name``, ``get``, iteration) and cached. Catalogs built from several
sources are merged with :meth:`Catalog.merge`: records with the same hash are one record whose
``stacks`` are the union of theirs. A catalog may also sit on a :class:`RecordIndex` (the
on-disk parsed index of a mirror): names, hashes and prefixes are then looked up in it, and
nothing is loaded up front; merging catalogs is lazy too. A runtime-closure walk asks for
:class:`~cacheclient.model.ClosureNode` summaries (:meth:`Catalog.walk_many`), which such an index
reads without decoding full records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from cacheclient.errors import MetadataError
from cacheclient.model import BuildRecord, ClosureNode

__all__ = ["Catalog", "RecordBuilder", "RecordIndex"]


def __dir__() -> list[str]:
    return __all__


RecordBuilder = Callable[[str], "BuildRecord | None"]
"""Builds the record of a hash, or returns ``None`` when the source does not hold it. May raise
:class:`~cacheclient.errors.MetadataError` when the record is malformed."""


class RecordIndex(Protocol):
    """What a catalog needs from where its records live (a dict, a parsed-index file)."""

    def names(self) -> Iterable[str]:
        """Every package name (any order)."""
        ...

    def hashes(self, name: str) -> Sequence[str]:
        """The hashes of *name* (empty if none)."""
        ...

    def all_hashes(self) -> Iterable[str]:
        """Every hash, each once."""
        ...

    def with_prefix(self, prefix: str) -> Iterable[str]:
        """The hashes that start with *prefix*."""
        ...

    def size(self) -> int:
        """How many hashes."""
        ...

    def build(self, dag_hash: str) -> BuildRecord | None:
        """The record of *dag_hash* (see :data:`RecordBuilder`)."""
        ...

    def build_many(self, hashes: Sequence[str]) -> dict[str, BuildRecord]:
        """The records of those *hashes* the source holds (an on-disk index reads them in a
        few queries rather than one each)."""
        ...

    def walk_many(self, hashes: Sequence[str]) -> dict[str, ClosureNode | None]:
        """The closure summaries of those *hashes* the source holds; ``None`` for a hash held
        but not summarised (a malformed record: :meth:`build` says what is wrong with it)."""
        ...


class _MapIndex:
    """A :class:`RecordIndex` over ``name -> [hash, ...]`` and a builder."""

    __slots__ = ("_by_name", "build")

    def __init__(self, by_name: Mapping[str, Sequence[str]], build: RecordBuilder) -> None:
        self._by_name = by_name
        self.build = build

    def names(self) -> Iterable[str]:
        return self._by_name.keys()

    def hashes(self, name: str) -> Sequence[str]:
        return self._by_name.get(name, ())

    def all_hashes(self) -> Iterator[str]:
        return (h for hashes in self._by_name.values() for h in hashes)

    def with_prefix(self, prefix: str) -> list[str]:
        return [h for h in self.all_hashes() if h.startswith(prefix)]

    def size(self) -> int:
        return sum(len(v) for v in self._by_name.values())

    def build_many(self, hashes: Sequence[str]) -> dict[str, BuildRecord]:
        return _each(self.build, hashes)

    def walk_many(self, hashes: Sequence[str]) -> dict[str, ClosureNode | None]:
        found: dict[str, ClosureNode | None] = {}
        for dag_hash in hashes:
            try:
                record = self.build(dag_hash)
            except MetadataError:
                found[dag_hash] = None
                continue
            if record is not None:
                found[dag_hash] = ClosureNode.of(record)
        return found


class _MergedIndex:
    """The union of several catalogs, computed lazily (first catalog wins, see ``merge``)."""

    __slots__ = ("_parts",)

    def __init__(self, parts: Sequence[Catalog]) -> None:
        self._parts = parts

    def names(self) -> list[str]:
        return list(dict.fromkeys(n for part in self._parts for n in part._index.names()))

    def hashes(self, name: str) -> list[str]:
        return list(dict.fromkeys(h for part in self._parts for h in part._index.hashes(name)))

    def all_hashes(self) -> Iterator[str]:
        return iter(dict.fromkeys(h for part in self._parts for h in part._index.all_hashes()))

    def with_prefix(self, prefix: str) -> list[str]:
        return list(
            dict.fromkeys(h for part in self._parts for h in part._index.with_prefix(prefix))
        )

    def size(self) -> int:
        return sum(1 for _ in self.all_hashes())

    def build(self, dag_hash: str) -> BuildRecord | None:
        found: BuildRecord | None = None
        for part in self._parts:
            record = part.get(dag_hash)
            if record is not None:
                found = record if found is None else _union(found, record)
        return found

    def build_many(self, hashes: Sequence[str]) -> dict[str, BuildRecord]:
        found: dict[str, BuildRecord] = {}
        for part in self._parts:  # the merged catalog keeps what it needs, the parts need not
            for dag_hash, record in part.get_many(hashes, keep=False).items():
                first = found.get(dag_hash)
                found[dag_hash] = record if first is None else _union(first, record)
        return found

    def walk_many(self, hashes: Sequence[str]) -> dict[str, ClosureNode | None]:
        # A hash held by one part only is that part's summary; one held by several parts is
        # their union, which only the full records give: None (the walker builds it).
        found: dict[str, ClosureNode | None] = {}
        for part in self._parts:
            for dag_hash, node in part._walk(hashes).items():
                found[dag_hash] = None if dag_hash in found else node
        return found


class Catalog:
    """An immutable collection of build records from one or more sources.

    >>> from cacheclient.model import BuildRecord
    >>> r = BuildRecord(name="zlib", version="1.3", hash="a" * 32, platform="linux",
    ...                 os="debian12", target="x86_64")
    >>> c = Catalog([r], source="demo")
    >>> [x.version for x in c.by_name("zlib")], len(c), c.get("a" * 32) is r
    (['1.3'], 1, True)
    """

    __slots__ = ("_cache", "_index", "_len", "_nodes", "source", "warnings")

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
        self._init(source, warnings, _MapIndex(by_name, cache.get), cache)

    def _init(
        self,
        source: str,
        warnings: Sequence[str],
        index: RecordIndex,
        cache: dict[str, BuildRecord],
    ) -> None:
        self.source = source
        self.warnings = tuple(warnings)
        self._index = index
        self._cache = cache
        self._nodes: dict[str, ClosureNode | None] = {}
        self._len: int | None = None

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
        return cls.over(_MapIndex(by_name, build), source=source, warnings=warnings)

    @classmethod
    def over(cls, index: RecordIndex, *, source: str, warnings: Sequence[str] = ()) -> Catalog:
        """A catalog on a :class:`RecordIndex`: nothing is read until it is asked for."""
        self = cls.__new__(cls)
        self._init(source, warnings, index, {})
        return self

    def _get_known(self, dag_hash: str) -> BuildRecord | None:
        record = self._cache.get(dag_hash)
        if record is None:
            record = self._index.build(dag_hash)
            if record is not None:
                self._cache[dag_hash] = record
        return record

    def get_many(self, hashes: Iterable[str], *, keep: bool = True) -> dict[str, BuildRecord]:
        """The records of those *hashes* the catalog holds (missing ones are left out); those
        not read yet are read together. With ``keep=False`` they are not kept for later calls
        (a pass over a whole large index then holds one batch at a time)."""
        cache = self._cache
        wanted = list(dict.fromkeys(hashes))
        todo = [h for h in wanted if h not in cache]
        read = self._index.build_many(todo) if todo else {}
        if keep:
            cache.update(read)
        return {h: r for h in wanted if (r := cache.get(h) or read.get(h)) is not None}

    def walk_many(self, hashes: Iterable[str]) -> dict[str, ClosureNode]:
        """The closure summaries of those *hashes* that can be given without their full
        records (on a parsed index: all but malformed ones; in a merged catalog: those one part
        holds). A hash left out is missing or needs :meth:`get`, which says which."""
        return {h: node for h, node in self._walk(hashes).items() if node is not None}

    def _walk(self, hashes: Iterable[str]) -> dict[str, ClosureNode | None]:
        nodes, cache = self._nodes, self._cache
        wanted = list(dict.fromkeys(hashes))
        todo = []
        for dag_hash in wanted:
            if dag_hash in nodes:
                continue
            record = cache.get(dag_hash)
            if record is not None:
                nodes[dag_hash] = ClosureNode.of(record)
            else:
                todo.append(dag_hash)
        if todo:
            nodes.update(self._index.walk_many(todo))
        return {h: nodes[h] for h in wanted if h in nodes}

    def _records(self, hashes: Iterable[str]) -> list[BuildRecord]:
        out = []
        for h in hashes:
            record = self._get_known(h)
            if record is not None:
                out.append(record)
        return out

    def names(self) -> list[str]:
        """Sorted package names."""
        return sorted(self._index.names())

    def by_name(self, name: str) -> list[BuildRecord]:
        """Every record of package *name* (empty if none); cheap."""
        return self._records(self._index.hashes(name))

    def hashes(self, name: str | None = None) -> list[str]:
        """The hashes of *name* (all hashes when ``None``) without building any record."""
        if name is not None:
            return list(self._index.hashes(name))
        return list(self._index.all_hashes())

    def count(self, name: str) -> int:
        """How many records *name* has, without building them."""
        return len(self._index.hashes(name))

    def get(self, dag_hash: str) -> BuildRecord | None:
        """The record with this full hash, or ``None``."""
        return self._get_known(dag_hash)

    def __contains__(self, dag_hash: object) -> bool:
        return isinstance(dag_hash, str) and self.get(dag_hash) is not None

    def find_prefix(self, prefix: str) -> list[BuildRecord]:
        """Records whose hash starts with *prefix* (for ``/abc1234`` requests)."""
        return self._records(self._index.with_prefix(prefix))

    def __len__(self) -> int:
        if self._len is None:
            self._len = self._index.size()
        return self._len

    def __iter__(self) -> Iterator[BuildRecord]:
        for h in self._index.all_hashes():
            record = self._get_known(h)
            if record is not None:
                yield record

    def __repr__(self) -> str:
        return f"<Catalog {self.source!r}: {len(self)} records>"

    @classmethod
    def merge(cls, catalogs: Sequence[Catalog]) -> Catalog:
        """One catalog holding every record of *catalogs* (nothing is read up front).

        For a hash present in several catalogs, the first catalog's record wins, its
        ``stacks`` become the union of all (in order), and fields it lacks (manifest path,
        blobs, libc, target info) are taken from the others. Warnings are concatenated.
        """
        parts = list(catalogs)
        if len(parts) == 1:
            return parts[0]
        return cls.over(
            _MergedIndex(parts),
            source=" + ".join(p.source for p in parts),
            warnings=[w for p in parts for w in p.warnings],
        )


def _each(build: RecordBuilder, hashes: Iterable[str]) -> dict[str, BuildRecord]:
    found = {}
    for dag_hash in hashes:
        record = build(dag_hash)
        if record is not None:
            found[dag_hash] = record
    return found


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
