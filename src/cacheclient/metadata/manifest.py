"""v3 manifests: ``{"version": 3, "data": [<blob record>, ...]}`` (FORMATS §2.2).

Spec manifests may be clear-signed; index and key manifests are plain JSON. Every field of
every record is checked, and errors name the key path (``data[1].checksum``). Media types
carry versions that will change, so consumers select blobs by prefix
(:meth:`~cacheclient.model.Manifest.find`), never by exact match.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cacheclient.errors import MetadataError
from cacheclient.metadata.clearsign import is_clearsigned, split_clearsigned
from cacheclient.model import BlobRef, Manifest

__all__ = [
    "CHECKSUM_LENGTHS",
    "MANIFEST_VERSION",
    "MEDIA_DB",
    "MEDIA_INSTALL",
    "MEDIA_SPEC",
    "decode_text",
    "manifest_to_json",
    "parse_manifest",
]


def __dir__() -> list[str]:
    return __all__


MANIFEST_VERSION = 3
MEDIA_INSTALL = "application/vnd.spack.install."
MEDIA_SPEC = "application/vnd.spack.spec."
MEDIA_DB = "application/vnd.spack.db."

CHECKSUM_LENGTHS = {"sha256": 64, "sha512": 128, "sha384": 96, "sha224": 56, "sha1": 40}
"""Hex digest length per ``checksumAlgorithm`` name (``hashlib`` names)."""

_HEX = re.compile(r"^[0-9a-f]+$")


def decode_text(data: bytes | str, source: str) -> str:
    """UTF-8 text of *data* (a leading BOM dropped); :class:`MetadataError` if it is not UTF-8."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetadataError(source, "", f"not UTF-8 text (byte {exc.start})") from None


def _record(raw: Any, path: str, source: str) -> BlobRef:
    if not isinstance(raw, dict):
        raise MetadataError(source, path, f"expected an object, got {type(raw).__name__}")

    def text(key: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            got = "missing" if key not in raw else f"{type(value).__name__} {value!r:.40}"
            raise MetadataError(source, f"{path}.{key}", f"expected a non-empty string, got {got}")
        return value

    length = raw.get("contentLength")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        got = "missing" if "contentLength" not in raw else repr(length)[:40]
        raise MetadataError(source, f"{path}.contentLength", f"expected an integer >= 0, got {got}")
    media_type = text("mediaType")
    compression = text("compression")
    algorithm = text("checksumAlgorithm").lower()
    checksum = text("checksum")
    want = CHECKSUM_LENGTHS.get(algorithm)
    if want is None:
        raise MetadataError(
            source, f"{path}.checksumAlgorithm", f"unsupported checksum algorithm {algorithm!r}"
        )
    if len(checksum) != want or not _HEX.match(checksum):
        raise MetadataError(
            source,
            f"{path}.checksum",
            f"expected {want} lowercase hex characters for {algorithm}, got {checksum!r:.80}",
        )
    return BlobRef(
        media_type=media_type,
        checksum=checksum,
        size=length,
        checksum_algorithm=algorithm,
        compression=compression,
    )


def parse_manifest(data: bytes | str, source: str) -> Manifest:
    """Parse a v3 manifest, clear-signed or plain. No signature or checksum is verified.

    >>> m = parse_manifest('{"version": 3, "data": []}', "x.json")
    >>> m.version, m.blobs
    (3, ())

    :raises MetadataError: on bad UTF-8, bad JSON, a version other than 3, or a bad record.
    """
    text = decode_text(data, source)
    if is_clearsigned(text):
        text = split_clearsigned(text, source).payload
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MetadataError(source, "", f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MetadataError(source, "", f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise MetadataError(source, "version", f"expected an integer, got {version!r:.40}")
    if version != MANIFEST_VERSION:
        raise MetadataError(
            source,
            "version",
            f"manifest version {version} is not supported (only {MANIFEST_VERSION})"
            + ("; a newer cacheclient is needed" if version > MANIFEST_VERSION else ""),
        )
    records = obj.get("data")
    if not isinstance(records, list):
        raise MetadataError(source, "data", f"expected a list, got {type(records).__name__}")
    blobs = tuple(_record(raw, f"data[{i}]", source) for i, raw in enumerate(records))
    return Manifest(version=version, blobs=blobs)


def manifest_to_json(manifest: Manifest) -> str:
    """Serialise *manifest* the way Spack does (one element per line, no indentation)."""
    obj = {
        "version": manifest.version,
        "data": [
            {
                "contentLength": b.size,
                "mediaType": b.media_type,
                "compression": b.compression,
                "checksumAlgorithm": b.checksum_algorithm,
                "checksum": b.checksum,
            }
            for b in manifest.blobs
        ],
    }
    return json.dumps(obj, indent=0, separators=(",", ":"))
