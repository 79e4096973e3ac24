"""Database JSON (index) → build records, fast: the reader behind the on-disk parsed index.

:func:`parse_database` (:mod:`cacheclient.metadata.database`) keeps a whole index as Python
objects, which costs seconds and about 8x the file in memory for a 60,000-record index. This
reader decodes the top level only, keeping each record as a slice of the input
(``msgspec.Raw``), then decodes one record at a time into typed structs holding just the fields a
:class:`~cacheclient.model.BuildRecord` needs. Peak memory is the input plus one record; no
cyclic-GC pass walks millions of fresh containers (the caller turns the collector off).

The typed structs accept a strict subset of what :func:`record_from_node` accepts; a record
outside it (an old specfile format, an odd value, a malformed field) is read by
:func:`record_from_node` itself, so both readers give the same record or the same
:class:`MetadataError`. A malformed top level is explained by the same checks as
:func:`parse_database`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from cacheclient.errors import MetadataError
from cacheclient.metadata.database import (
    COMPILER_FLAGS,
    catalog_from_database,
    check_db_version,
    explain_bad_entry,
    load_json,
    record_from_node,
    variant_value,
)
from cacheclient.model import is_valid_hash

__all__ = ["DatabaseEntry", "read_records"]


def __dir__() -> list[str]:
    return __all__


DatabaseEntry = tuple[str, str, "dict[str, Any] | MetadataError"]
"""``(hash, package name, fields)``: *fields* are the record's :class:`BuildRecord` fields as
plain data (lists for tuples and sets, dicts for dependencies and libc; what
``msgspec.to_builtins`` makes of a record, and ``msgspec.convert(fields, BuildRecord)`` turns
back into one). A record that cannot be read is its error, raised when it is asked for (as
:func:`parse_database` does)."""

_UNSET = msgspec.UNSET
_Unset = msgspec.UnsetType


class _Entry(msgspec.Struct):
    spec: msgspec.Raw
    in_buildcache: Any = True


class _Database(msgspec.Struct):
    installs: dict[str, _Entry]
    version: Any = None


class _Document(msgspec.Struct):
    database: _Database


class _Named(msgspec.Struct):
    name: Any = None
    version: Any = None


class _EdgeParameters(msgspec.Struct):
    deptypes: str | list[str] = []
    virtuals: list[str] = []


class _Edge(msgspec.Struct):
    name: str
    hash: str | _Unset = _UNSET
    full_hash: str | _Unset = _UNSET
    build_hash: str | _Unset = _UNSET
    parameters: _EdgeParameters | None = None
    type: str | list[str] | _Unset = _UNSET


class _Arch(msgspec.Struct):
    platform: str
    platform_os: str
    target: msgspec.Raw


class _External(msgspec.Struct):
    path: str | None = None


class _Annotations(msgspec.Struct):
    compiler: str | _Unset = _UNSET


class _Node(msgspec.Struct):
    name: str
    arch: _Arch
    version: str | int | _Unset = _UNSET
    hash: str | _Unset = _UNSET
    parameters: dict[str, Any] = {}
    dependencies: list[_Edge] = []
    compiler: _Unset | None = _UNSET
    annotations: _Annotations | None = None
    external: _External | None = None
    namespace: Any = None


_document = msgspec.json.Decoder(_Document)
_node = msgspec.json.Decoder(_Node)
_named = msgspec.json.Decoder(_Named)
_any = msgspec.json.Decoder()
_COMPILER_VIRTUALS = ("c", "cxx", "fortran")


class _Slow(Exception):
    """This record is outside the fast subset: read it with :func:`record_from_node`."""


def read_records(
    data: bytes | memoryview,
    source: str,
    *,
    stacks: tuple[str, ...] = (),
    manifest_path_for: Callable[[str, str, str], str] | None = None,
    part: tuple[int, int] = (0, 1),
) -> Iterator[DatabaseEntry]:
    """Every record of an index (Database JSON, versions 6-8), one at a time; with *part*
    ``(k, n)``, only the *k*-th of *n* equal runs of them, in index order (the whole index is
    still checked).

    :raises MetadataError: malformed JSON or top level, or an unknown database version
        (before the first record is yielded).
    """
    try:
        doc = _document.decode(data)
    except (msgspec.DecodeError, RecursionError):
        # Explained by the full reader, which names the problem the same way it always has.
        catalog_from_database(load_json(bytes(data), source), source)
        raise MetadataError(source, "", "malformed index") from None
    check_db_version({"version": doc.database.version}, source)
    installs = doc.database.installs
    for dag_hash in installs:
        if not is_valid_hash(dag_hash):
            path = f"database.installs.{dag_hash[:40]}"
            raise MetadataError(source, path, f"not a 32-character DAG hash: {dag_hash!r:.40}")
    reader = _Reader(installs, source, stacks, manifest_path_for)
    k, n = part
    entries: Iterable[tuple[str, _Entry]] = installs.items()
    if n > 1:
        start, stop = len(installs) * k // n, len(installs) * (k + 1) // n
        entries = itertools.islice(entries, start, stop)
    for dag_hash, entry in entries:
        yield reader.read(dag_hash, entry)


class _Reader:
    def __init__(
        self,
        installs: dict[str, _Entry],
        source: str,
        stacks: tuple[str, ...],
        manifest_path_for: Callable[[str, str, str], str] | None,
    ) -> None:
        self.installs = installs
        self.source = source
        self.stacks = stacks
        self.manifest_path_for = manifest_path_for
        self.targets: dict[bytes, tuple[str, dict[str, Any] | None]] = {}
        self.named: dict[str, _Named | None] = {}

    def read(self, dag_hash: str, entry: _Entry) -> DatabaseEntry:
        try:
            node = _node.decode(entry.spec)
            return dag_hash, node.name, self._record(dag_hash, node, entry.in_buildcache)
        except (msgspec.DecodeError, RecursionError, _Slow):  # ValidationError included
            return self._slow(dag_hash, entry)

    def _slow(self, dag_hash: str, entry: _Entry) -> DatabaseEntry:
        path = f"database.installs.{dag_hash}"
        try:
            spec = _any.decode(entry.spec)
        except (msgspec.DecodeError, RecursionError):
            spec = None
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            explain_bad_entry(dag_hash, {"spec": spec}, self.source)
            raise MetadataError(self.source, f"{path}.spec.name", "expected a string")
        in_cache = entry.in_buildcache
        if not isinstance(in_cache, bool):
            problem = MetadataError(self.source, f"{path}.in_buildcache", "expected true or false")
            return dag_hash, name, problem
        try:
            record = record_from_node(
                spec,
                path=f"{path}.spec",
                source=self.source,
                lookup=self._lookup,
                installable=in_cache,
                stacks=self.stacks,
                manifest_path_for=self.manifest_path_for,
                expected_hash=dag_hash,
            )
        except MetadataError as exc:
            return dag_hash, name, exc
        return dag_hash, name, msgspec.to_builtins(record)

    def _lookup(self, dag_hash: str) -> dict[str, Any] | None:
        entry = self.installs.get(dag_hash)
        if entry is None:
            return None
        try:
            spec = _any.decode(entry.spec)
        except (msgspec.DecodeError, RecursionError):
            return None
        return spec if isinstance(spec, dict) else None

    def _provider(self, dag_hash: str) -> _Named | None:
        if dag_hash not in self.named:
            entry = self.installs.get(dag_hash)
            found: _Named | None = None
            if entry is not None:
                try:
                    found = _named.decode(entry.spec)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    found = None
            self.named[dag_hash] = found
        return self.named[dag_hash]

    def _target(self, raw: msgspec.Raw) -> tuple[str, dict[str, Any] | None]:
        key = bytes(raw)
        found = self.targets.get(key)
        if found is None:
            value = _any.decode(key)
            if isinstance(value, str) and value:
                found = (value, None)
            elif isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"]:
                found = (value["name"], value)
            else:
                raise _Slow
            self.targets[key] = found
        return found

    def _record(self, dag_hash: str, node: _Node, in_cache: Any) -> dict[str, Any]:
        arch = node.arch
        if (
            not node.name
            or in_cache.__class__ is not bool
            or node.compiler is not _UNSET
            or not arch.platform
            or not arch.platform_os
            or node.hash not in (_UNSET, dag_hash)
        ):
            raise _Slow
        version = node.version
        if version.__class__ is int:
            version = str(version)
        elif version.__class__ is not str or not version:
            raise _Slow
        target, target_info = self._target(arch.target)
        variants: dict[str, Any] = {}
        flags = COMPILER_FLAGS
        for key, value in node.parameters.items():
            kind = value.__class__
            if kind is bool or kind is str:
                if key not in flags:
                    variants[key] = value
            elif key in flags:
                continue
            elif kind is list:
                # All strings, the usual case: sorted as variant_value sorts them. A list that
                # sorts with a non-string first (numbers) or not at all goes through
                # variant_value (strings of numbers, or its error: then the slow reader).
                try:
                    items = sorted(value)
                except TypeError:
                    raise _Slow from None
                if items and items[0].__class__ is not str:
                    items = self._variant(value)
                variants[key] = items
            else:
                variants[key] = self._variant(value)
        deps = []
        known = self.installs
        compiler: str | None = None
        libc: dict[str, str] | None = None
        compiler_rank = len(_COMPILER_VIRTUALS)
        has_libc = False
        for edge in node.dependencies:
            dep_hash = edge.hash
            if dep_hash is _UNSET:
                dep_hash = edge.full_hash if edge.full_hash is not _UNSET else edge.build_hash
            if (
                not edge.name
                or dep_hash.__class__ is not str
                or (dep_hash not in known and not is_valid_hash(dep_hash))
            ):
                raise _Slow
            params = edge.parameters
            if params is not None:
                types = params.deptypes
                virtuals = params.virtuals
            else:
                types = [] if edge.type is _UNSET else edge.type
                virtuals = []
            if types.__class__ is str:
                types = [types]
            deps.append(
                {"name": edge.name, "hash": dep_hash, "deptypes": types, "virtuals": virtuals}
            )
            if virtuals:
                if not has_libc and "libc" in virtuals:
                    has_libc = True
                    libc = self._libc(dep_hash)
                if compiler_rank and "build" in types:
                    for rank, virtual in enumerate(_COMPILER_VIRTUALS[:compiler_rank]):
                        if virtual in virtuals:
                            compiler_rank = rank
                            compiler = self._compiler(edge.name, dep_hash)
                            break
        annotations = node.annotations
        if annotations is not None and annotations.compiler is not _UNSET:
            if not annotations.compiler:
                raise _Slow
            compiler = annotations.compiler
        external_path: str | None = None
        if node.external is not None:
            external_path = node.external.path or ""
        fields: dict[str, Any] = {
            "name": node.name,
            "version": version,
            "hash": dag_hash,
            "platform": arch.platform,
            "os": arch.platform_os,
            "target": target,
            "variants": variants,
            "dependencies": deps,
            "stacks": self.stacks,
            "installable": in_cache and external_path is None,
            "source": self.source,
        }
        if target_info is not None:
            fields["target_info"] = target_info
        if compiler is not None:
            fields["compiler"] = compiler
        if external_path is not None:
            fields["external_path"] = external_path
        if node.namespace.__class__ is str:
            fields["namespace"] = node.namespace
        if libc is not None:
            fields["libc"] = libc
        if self.manifest_path_for is not None and external_path is None:
            fields["manifest_path"] = self.manifest_path_for(node.name, version, dag_hash)
        return fields

    def _variant(self, value: Any) -> Any:
        try:
            return variant_value(value, "", self.source)
        except MetadataError:
            raise _Slow from None

    def _compiler(self, name: str, dag_hash: str) -> str:
        provider = self._provider(dag_hash)
        if provider is None:
            return name
        version = provider.version
        return f"{name}@={version}" if isinstance(version, str) else name

    def _libc(self, dag_hash: str) -> dict[str, str] | None:
        node = self._provider(dag_hash)
        if node is None or not isinstance(node.name, str) or not isinstance(node.version, str):
            return None
        return {"name": node.name, "version": node.version}
