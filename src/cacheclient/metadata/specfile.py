"""Spec metadata: v2 ``*.spec.json`` / ``*.spec.json.sig`` and v3 spec blobs (FORMATS §4).

Accepted input: plain JSON, clear-signed JSON, or gzip bytes of either (v3 spec blobs are
gzip-compressed; they are recognised by the magic bytes ``1f 8b``, not by the manifest's
``compression`` field). Specfile formats 2-5 are read; the very old format 1 and the legacy
``spec.yaml`` (layout 0, Spack <= 0.17) are refused with a clear message.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cacheclient.errors import MetadataError
from cacheclient.metadata.clearsign import is_clearsigned, split_clearsigned
from cacheclient.metadata.database import load_json, record_from_node
from cacheclient.metadata.manifest import decode_text
from cacheclient.model import BuildRecord, is_valid_hash

__all__ = [
    "MAX_LAYOUT_VERSION",
    "MAX_SPEC_BYTES",
    "SUPPORTED_FORMATS",
    "SpecFile",
    "read_specfile",
]


def __dir__() -> list[str]:
    return __all__


MAX_LAYOUT_VERSION = 2
"""Highest ``buildcache_layout_version`` inside spec JSON that URL mirrors use (pitfall 6)."""
SUPPORTED_FORMATS = (2, 3, 4, 5)
MAX_SPEC_BYTES = 256 * 1024 * 1024
"""Refuse to decompress a spec blob beyond this size (a gzip bomb guard)."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecFile:
    """A parsed spec file: the root build and every node of its DAG.

    ``nodes`` maps hash to record and includes the root. ``tarball_sha256`` is the v2
    ``binary_cache_checksum`` (``None`` in v3 spec blobs, whose manifest holds checksums).
    ``layout_version`` is ``buildcache_layout_version`` (0 when absent).
    """

    root: BuildRecord
    nodes: Mapping[str, BuildRecord]
    format_version: int
    tarball_sha256: str | None
    layout_version: int


def _gunzip(data: bytes, source: str) -> bytes:
    try:
        decomp = zlib.decompressobj(wbits=31)
        out = decomp.decompress(data, MAX_SPEC_BYTES)
        if decomp.unconsumed_tail:
            raise MetadataError(source, "", f"gzip data expands beyond {MAX_SPEC_BYTES} bytes")
        if not decomp.eof:
            raise MetadataError(source, "", "truncated gzip data")
    except (zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise MetadataError(source, "", f"invalid gzip data: {exc}") from None
    return out


def _looks_like_yaml_spec(text: str) -> bool:
    return text.lstrip().startswith("spec:") or "\nspec:\n" in text[:200]


def _int(value: Any, path: str, source: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise MetadataError(source, path, f"expected an integer, got {value!r:.40}")
    return value


def read_specfile(data: bytes | str, source: str) -> SpecFile:
    """Parse a spec file or spec blob.

    :raises MetadataError: malformed input, an unsupported format, or metadata whose
        ``buildcache_layout_version`` is too new.
    """
    if isinstance(data, bytes) and data[:2] == b"\x1f\x8b":
        data = _gunzip(data, source)
    text = decode_text(data, source)
    if is_clearsigned(text):
        text = split_clearsigned(text, source).payload
    if _looks_like_yaml_spec(text):
        raise MetadataError(
            source,
            "",
            "legacy spec.yaml metadata (build cache layout 0, Spack <= 0.17) is not "
            "supported; only spec.json (layouts 1-3) can be read",
        )
    obj = load_json(text, source)
    if not isinstance(obj, dict):
        raise MetadataError(source, "", f"expected a JSON object, got {type(obj).__name__}")
    layout = _int(obj.get("buildcache_layout_version"), "buildcache_layout_version", source, 0)
    if layout > MAX_LAYOUT_VERSION:
        raise MetadataError(
            source,
            "buildcache_layout_version",
            f"layout version {layout} is too new (this cacheclient reads up to "
            f"{MAX_LAYOUT_VERSION}); a newer cacheclient is needed",
        )
    spec = obj.get("spec")
    if isinstance(spec, list):
        raise MetadataError(source, "spec", "specfile format 1 (Spack < 0.17) is not supported")
    if not isinstance(spec, dict):
        raise MetadataError(source, "spec", f"expected an object, got {type(spec).__name__}")
    meta = spec.get("_meta")
    if not isinstance(meta, dict):
        raise MetadataError(source, "spec._meta", "expected an object")
    fmt = _int(meta.get("version"), "spec._meta.version", source)
    if fmt not in SUPPORTED_FORMATS:
        newer = "; a newer cacheclient is needed" if fmt > SUPPORTED_FORMATS[-1] else ""
        raise MetadataError(
            source, "spec._meta.version", f"specfile format {fmt} is not supported{newer}"
        )
    raw_nodes = spec.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise MetadataError(source, "spec.nodes", "expected a non-empty list of nodes")
    by_hash: dict[str, Mapping[str, Any]] = {}
    for i, node in enumerate(raw_nodes):
        if not isinstance(node, dict):
            raise MetadataError(source, f"spec.nodes[{i}]", "expected an object")
        h = node.get("hash")
        if not is_valid_hash(h):
            raise MetadataError(
                source, f"spec.nodes[{i}].hash", f"not a 32-character DAG hash: {h!r:.40}"
            )
        assert isinstance(h, str)  # noqa: S101 - narrowing after is_valid_hash
        by_hash.setdefault(h, node)
    records: dict[str, BuildRecord] = {}
    for i, node in enumerate(raw_nodes):
        record = record_from_node(node, path=f"spec.nodes[{i}]", source=source, lookup=by_hash.get)
        records.setdefault(record.hash, record)
    root = records[raw_nodes[0]["hash"]]
    return SpecFile(
        root=root,
        nodes=records,
        format_version=fmt,
        tarball_sha256=_checksum(obj.get("binary_cache_checksum"), source),
        layout_version=layout,
    )


def _checksum(raw: Any, source: str) -> str | None:
    if raw is None:
        return None
    path = "binary_cache_checksum"
    if not isinstance(raw, dict):
        raise MetadataError(source, path, "expected an object")
    algorithm = raw.get("hash_algorithm", "sha256")
    if algorithm != "sha256":
        raise MetadataError(
            source, f"{path}.hash_algorithm", f"unsupported algorithm {algorithm!r:.40}"
        )
    value = raw.get("hash")
    if not isinstance(value, str) or not _SHA256.match(value):
        raise MetadataError(
            source, f"{path}.hash", f"expected 64 hex characters, got {value!r:.80}"
        )
    return value
