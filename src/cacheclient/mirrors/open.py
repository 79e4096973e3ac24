"""Open a mirror's catalog from its index, for layout v3 (preferred) and v2 (FORMATS §2.3).

I/O goes through a ``read(relative_path) -> bytes | None`` callable (``None``: the file does
not exist), so the same code serves directories, ``file://`` and HTTP mirrors
(:func:`cacheclient.transport.reader_for`). :func:`local_reader` is the one for directories.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from cacheclient.errors import DownloadError, MetadataError, VerificationError
from cacheclient.metadata.catalog import Catalog
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.layout import (
    INDEX_V2,
    INDEX_V2_HASH,
    INDEX_V3,
    is_oci_url,
    spec_manifest_path,
)
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.model import BlobRef

__all__ = ["Reader", "check_blob", "local_reader", "local_root", "open_catalog", "read_blob"]


def __dir__() -> list[str]:
    return __all__


Reader = Callable[[str], "bytes | None"]
"""``read(relative_path) -> bytes | None``: reads one file of a mirror (None: missing)."""


def _join(mirror_url: str, relative: str) -> str:
    return f"{mirror_url.rstrip('/')}/{relative}"


def check_blob(data: bytes, blob: BlobRef, *, url: str, mirror: str | None = None) -> None:
    """Check *data* against a manifest record's length and checksum.

    :raises VerificationError: on a size or digest mismatch.
    """
    if len(data) != blob.size:
        raise VerificationError(
            f"{url}: size {len(data)} does not match the manifest's {blob.size}",
            url=url,
            mirror=mirror,
            expected=str(blob.size),
            actual=str(len(data)),
        )
    try:
        digest = hashlib.new(blob.checksum_algorithm, data).hexdigest()
    except ValueError:
        raise VerificationError(
            f"{url}: unsupported checksum algorithm {blob.checksum_algorithm!r}",
            url=url,
            mirror=mirror,
        ) from None
    if digest != blob.checksum:
        raise VerificationError(
            f"{url}: {blob.checksum_algorithm} {digest} does not match the manifest's "
            f"{blob.checksum}",
            url=url,
            mirror=mirror,
            expected=blob.checksum,
            actual=digest,
        )


def read_blob(
    read: Callable[[str], bytes | None], mirror_url: str, blob: BlobRef, *, what: str
) -> bytes:
    """Read and verify one blob of a v3 mirror.

    :raises MetadataError: the blob is missing; :raises VerificationError: it does not match.
    """
    url = _join(mirror_url, blob.path)
    data = read(blob.path)
    if data is None:
        raise MetadataError(url, "", f"{what} blob listed in the manifest does not exist")
    check_blob(data, blob, url=url, mirror=mirror_url)
    return data


def _open_v3(mirror_url: str, read: Callable[[str], bytes | None], raw: bytes) -> Catalog:
    where = _join(mirror_url, INDEX_V3)
    manifest = parse_manifest(raw, where)
    blob = manifest.index_blob
    if blob is None:
        raise MetadataError(where, "data", "no application/vnd.spack.db.* record")
    data = read_blob(read, mirror_url, blob, what="index")
    return parse_database(
        data,
        _join(mirror_url, blob.path),
        stacks=(mirror_url,),
        manifest_path_for=spec_manifest_path,
    )


def open_catalog(mirror_url: str, read: Callable[[str], bytes | None]) -> Catalog:
    """The catalog of a mirror: v3 index if present, v2 otherwise, both merged if both exist.

    Records carry ``stacks=(mirror_url,)`` and, for v3, ``manifest_path``. The v3 index blob
    is checked against its manifest (size and sha256) before it is parsed.

    :raises MetadataError: not a mirror, or a malformed index;
        :raises VerificationError: the index blob does not match its manifest.
    """
    if is_oci_url(mirror_url):  # a registry: its index.spack (mirrors/oci_index.py)
        from cacheclient.mirrors.oci_index import open_oci_catalog  # noqa: PLC0415

        return open_oci_catalog(mirror_url)
    catalogs: list[Catalog] = []
    raw3 = read(INDEX_V3)
    if raw3 is not None:
        catalogs.append(_open_v3(mirror_url, read, raw3))
    raw2 = read(INDEX_V2)
    if raw2 is not None:
        catalogs.append(parse_database(raw2, _join(mirror_url, INDEX_V2), stacks=(mirror_url,)))
    if not catalogs:
        hint = " (but build_cache/index.json.hash exists)" if read(INDEX_V2_HASH) else ""
        raise MetadataError(
            mirror_url,
            "",
            f"not a Spack binary mirror: neither {INDEX_V3} nor {INDEX_V2} found at "
            f"{mirror_url}{hint}",
        )
    catalog = Catalog.merge(catalogs)
    catalog.source = mirror_url
    return catalog


def _url2pathname(path: str) -> str:
    """``urllib.request.url2pathname`` without importing ``urllib.request`` (and with it
    ``http.client``, ``email`` and ``ssl``: a quarter of a warm command's start) on POSIX."""
    if os.name == "nt":  # pragma: no cover - POSIX CI
        from urllib.request import url2pathname  # noqa: PLC0415

        return url2pathname(path)
    return urllib.parse.unquote(path)


def local_root(root: str | Path) -> Path:
    """The directory of a local mirror given as a path or a ``file://`` URL."""
    if isinstance(root, str) and root.startswith("file:"):
        parsed = urllib.parse.urlsplit(root)
        path = _url2pathname(parsed.path)
        if parsed.netloc not in ("", "localhost"):  # file://relative/dir: read as relative
            path = _url2pathname(parsed.netloc + parsed.path)
        return Path(path)
    return Path(root)


def local_reader(root: str | Path) -> Callable[[str], bytes | None]:
    """A reader for a mirror directory (a path or a ``file://`` URL).

    The returned function reads ``root/relative`` and returns ``None`` when it does not
    exist. Relative paths that are absolute or climb out of the root with ``..`` are refused.

    >>> read = local_reader("/nonexistent-mirror")
    >>> read("v3/layout.json") is None
    True
    """
    base = local_root(root)
    where = str(root)

    def read(relative: str) -> bytes | None:
        parts = relative.replace("\\", "/").split("/")
        if relative.startswith("/") or ".." in parts or "\x00" in relative:
            raise MetadataError(where, relative, "path escapes the mirror root")
        path = base.joinpath(*[p for p in parts if p not in ("", ".")])
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise DownloadError(
                f"{path}: cannot read: {exc.strerror or exc}", url=str(path)
            ) from None

    return read
