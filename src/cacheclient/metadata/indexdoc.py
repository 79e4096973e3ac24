"""Buildcache index documents written in the form their declared database version allows.

Spack reads an index with the specfile reader its ``database.version`` names (FORMATS §3.1):
6 -> specfile format 3, 7 -> format 4, 8 -> format 5. Format 5 forbids a ``compiler`` key on a
node (Spack 1.1 rejects the whole index: "The 'compiler' option is unexpected in specfiles at
v5 or greater"), and formats 4-5 spell dependency edges as ``parameters.deptypes`` where
formats 2-3 used ``type``. So a node is written in the form of the index it goes into:

- into a ``db.v8`` index, a node of an older format gets the rewrite Spack 1.x itself applies
  when it re-indexes old specs (``buildcache migrate``, ``update-index``): ``compiler:
  {name, version}`` becomes ``annotations.compiler = "name@=version"`` with
  ``annotations.original_specfile_version``;
- into a DB 6 or 7 index, nodes keep their own (older) form, edges spelled for the version.

:func:`db_version_for` picks the version an index of some specs needs: the newest of their
specfile formats' versions (a set of format-4 specs stays at DB 7, readable by Spack 0.21-0.23;
one format-5 spec lifts the whole index to DB 8, and the older nodes are rewritten as above).
Pure logic: no I/O.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cacheclient.errors import MetadataError
from cacheclient.metadata.clearsign import is_clearsigned, split_clearsigned
from cacheclient.metadata.database import load_json
from cacheclient.metadata.manifest import decode_text
from cacheclient.metadata.specfile import MAX_SPEC_BYTES
from cacheclient.model import is_valid_hash

__all__ = [
    "DB_FOR_FORMAT",
    "IndexedSpec",
    "db_version_for",
    "index_document",
    "indexed_spec",
    "node_for_db",
]


def __dir__() -> list[str]:
    return __all__


DB_FOR_FORMAT = {2: "6", 3: "6", 4: "7", 5: "8"}
"""Specfile format -> the database version whose reader expects that form (Spack's mapping)."""

_FORMAT_FOR_DB = {"6": 3, "7": 4, "8": 5}


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexedSpec:
    """The nodes of one build's spec file (root first) and the specfile format they are in."""

    format_version: int
    nodes: tuple[Mapping[str, Any], ...]

    @property
    def root_hash(self) -> str:
        return str(self.nodes[0]["hash"])


def indexed_spec(data: bytes, source: str) -> IndexedSpec:
    """Read a spec blob or spec file (gzip, clear-signed or plain JSON) into an IndexedSpec.

    The caller has verified *data* already (signature, checksum); this only parses it.

    :raises MetadataError: malformed JSON, an unknown format, or nodes without a DAG hash.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            decomp = zlib.decompressobj(wbits=31)
            data = decomp.decompress(data, MAX_SPEC_BYTES)
            if decomp.unconsumed_tail or not decomp.eof:
                raise MetadataError(source, "", "truncated or oversized gzip data")
        except zlib.error as exc:
            raise MetadataError(source, "", f"invalid gzip data: {exc}") from None
    text = decode_text(data, source)
    if is_clearsigned(text):
        text = split_clearsigned(text, source).payload
    doc = load_json(text, source)
    spec = doc.get("spec") if isinstance(doc, dict) else None
    meta = spec.get("_meta") if isinstance(spec, dict) else None
    fmt = meta.get("version") if isinstance(meta, dict) else None
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt not in DB_FOR_FORMAT:
        raise MetadataError(source, "spec._meta.version", f"unsupported specfile format {fmt!r}")
    assert isinstance(spec, dict)  # noqa: S101 - narrowed above
    nodes = spec.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise MetadataError(source, "spec.nodes", "expected a non-empty list of nodes")
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not is_valid_hash(node.get("hash")):
            raise MetadataError(source, f"spec.nodes[{i}]", "expected a node with a DAG hash")
    return IndexedSpec(format_version=fmt, nodes=tuple(nodes))


def db_version_for(specs: Sequence[IndexedSpec]) -> str:
    """The database version an index of *specs* is written at (``"8"`` when empty)."""
    if not specs:
        return "8"
    return max((DB_FOR_FORMAT[s.format_version] for s in specs), key=int)


def _edge(edge: Any) -> Any:
    """A dependency edge spelled as formats 4-5 do (``parameters.deptypes``)."""
    if not isinstance(edge, dict) or "parameters" in edge or "type" not in edge:
        return edge
    out = {k: v for k, v in edge.items() if k != "type"}
    deptypes = edge["type"]
    out["parameters"] = {
        "deptypes": list(deptypes) if isinstance(deptypes, (list, tuple)) else [deptypes],
        "virtuals": [],
    }
    return out


def _compiler_string(raw: Any) -> str | None:
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, dict):
        return None
    name, version = raw.get("name"), raw.get("version")
    if isinstance(version, list) and version:
        version = version[0]
    if not isinstance(name, str):
        return None
    return f"{name}@={str(version).lstrip('=')}" if isinstance(version, str) else name


def node_for_db(node: Mapping[str, Any], format_version: int, db_version: str) -> dict[str, Any]:
    """A copy of *node* (from a spec file of *format_version*) in the form *db_version* reads.

    >>> old = {"name": "z", "compiler": {"name": "gcc", "version": "10.2.1"}, "hash": "h"}
    >>> node_for_db(old, 4, "8")["annotations"]
    {'original_specfile_version': 4, 'compiler': 'gcc@=10.2.1'}
    >>> "compiler" in node_for_db(old, 4, "8"), node_for_db(old, 4, "7") == old
    (False, True)
    """
    target = _FORMAT_FOR_DB.get(db_version)
    if target is None:
        raise ValueError(f"unknown database version {db_version!r}")
    out = dict(node)
    if target >= 4 and isinstance(out.get("dependencies"), list):
        out["dependencies"] = [_edge(e) for e in out["dependencies"]]
    if target >= 5 and "compiler" in out:
        compiler = _compiler_string(out.pop("compiler"))
        annotations = dict(out.get("annotations") or {})
        annotations.setdefault("original_specfile_version", min(format_version, 4))
        if compiler is not None:
            annotations.setdefault("compiler", compiler)
        out.pop("annotations", None)
        out.pop("hash", None)
        out["annotations"] = annotations
        out["hash"] = node["hash"]  # Spack writes annotations, then hash, last
    return out


def index_document(
    specs: Sequence[IndexedSpec], held: Collection[str], db_version: str | None = None
) -> tuple[str, bytes]:
    """``(db_version, bytes)`` of a buildcache index holding every node of *specs*.

    A node is ``in_buildcache`` when its hash is in *held* (this layout has its binary); other
    nodes (dependencies held elsewhere, externals, build-only compilers) are listed with
    ``in_buildcache: false``, as Spack lists them. ``ref_count`` counts the records of this
    index that depend on the node. Minified JSON, records sorted by hash (reproducible).
    """
    version = db_version or db_version_for(specs)
    nodes: dict[str, dict[str, Any]] = {}
    for spec in specs:
        for node in spec.nodes:
            h = str(node["hash"])
            if h not in nodes:
                nodes[h] = node_for_db(node, spec.format_version, version)
    ref_count = dict.fromkeys(nodes, 0)
    for node in nodes.values():
        for dep in node.get("dependencies") or []:
            if isinstance(dep, dict) and dep.get("hash") in ref_count:
                ref_count[str(dep["hash"])] += 1
    installs = {
        h: {"spec": nodes[h], "ref_count": ref_count[h], "in_buildcache": h in held}
        for h in sorted(nodes)
    }
    doc = {"database": {"version": version, "installs": installs}}
    return version, json.dumps(doc, separators=(",", ":")).encode()
