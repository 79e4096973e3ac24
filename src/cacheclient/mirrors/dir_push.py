"""Push stored builds to a directory (a path or ``file://`` URL) as a Spack layout-v3 mirror.

An air-gapped site carries such a directory on a disk and serves it (or reads it) like any
mirror; Spack reads it too. Per build: the tarball and spec blobs under ``blobs/sha256/``, and
the spec manifest under ``v3/manifests/spec/<name>/``. A build fetched from a v3 mirror keeps
its manifest byte-for-byte, so a signed build stays signed; builds that came from v2 or OCI get
an unsigned manifest and a gzip spec blob made from their spec. Then the index
(``v3/manifests/index/index.manifest.json`` and its database blob) is merged with what the
directory already lists, under an exclusive ``flock`` on the directory, so concurrent pushers
to one directory keep each other's builds.

Every file is written to a temporary name in its directory, fsynced and renamed into place, and
blobs go first, manifests next, the index last, so a reader never sees a manifest naming a blob
that is not there.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cacheclient.errors import MetadataError, StoreError, UsageError
from cacheclient.metadata.layout import INDEX_V3, LAYOUT_JSON, blob_path, spec_manifest_path
from cacheclient.mirrors.oci_index import database_json
from cacheclient.mirrors.push_prepare import PreparedBuild
from cacheclient.model import BlobRef
from cacheclient.store import Store

__all__ = ["DirPushReport", "directory_of", "push_to_directory"]


def __dir__() -> list[str]:
    return __all__


MEDIA_SPEC_V5 = "application/vnd.spack.spec.v5+json"
MEDIA_INSTALL_V2 = "application/vnd.spack.install.v2.tar+gzip"
MEDIA_DB_V8 = "application/vnd.spack.db.v8+json"


@dataclass(kw_only=True)
class DirPushReport:
    destination: str
    builds: list[dict[str, Any]] = field(default_factory=list)
    files_written: int = 0
    bytes_written: int = 0
    index_builds: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "directory",
            "destination": self.destination,
            "builds": self.builds,
            "files_written": self.files_written,
            "bytes_written": self.bytes_written,
            "index_builds": self.index_builds,
        }


def directory_of(destination: str) -> Path:
    """The directory a path or ``file://`` URL names."""
    if destination.startswith("file:"):
        parts = urllib.parse.urlsplit(destination)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"{destination}: only local file:// URLs can be pushed to")
        return Path(urllib.request.url2pathname(parts.path))
    if "://" in destination:
        raise UsageError(f"{destination}: push goes to oci://, oci+http://, file:// or a path")
    return Path(destination).expanduser()


def _record(blob: BlobRef) -> dict[str, Any]:
    return {
        "contentLength": blob.size,
        "mediaType": blob.media_type,
        "compression": blob.compression,
        "checksumAlgorithm": blob.checksum_algorithm,
        "checksum": blob.checksum,
    }


def _copy(out: IO[bytes], source: Path | None, data: bytes | None) -> str:
    """Write *source*'s bytes (or *data*) to *out*, fsynced; their sha256."""
    digest = hashlib.sha256()
    if source is not None:
        with open(source, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    else:
        digest.update(data or b"")
        out.write(data or b"")
    out.flush()
    os.fsync(out.fileno())
    return digest.hexdigest()


class _Writer:
    def __init__(self, root: Path, report: DirPushReport) -> None:
        self.root = root
        self.report = report

    def write(
        self,
        relative: str,
        data: bytes | None = None,
        *,
        source: Path | None = None,
        replace: bool = True,
        expect: str | None = None,
    ) -> bool:
        """Write a file atomically; False when *replace* is off and it exists already. With
        *expect*, the bytes must hash to that sha256 (a damaged store copy is not spread)."""
        target = self.root / relative
        if not replace and target.is_file():
            return False
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-push-")
        except OSError as exc:
            raise StoreError(f"{target}: cannot write: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                actual = _copy(out, source, data)
            if expect is None or actual == expect:
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
        except OSError as exc:
            raise StoreError(f"{target}: cannot write: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # gone already when it was renamed into place
        if expect is not None and actual != expect:
            raise StoreError(
                f"{source or relative}: sha256 {actual}, not {expect}: the store's copy is "
                "damaged (run `cacheclient verify --repair`)"
            )
        self.report.files_written += 1
        self.report.bytes_written += target.stat().st_size
        return True

    def blob(self, blob: BlobRef, *, data: bytes | None = None, source: Path | None = None) -> None:
        self.write(
            blob_path(blob.checksum), data, source=source, replace=False, expect=blob.checksum
        )


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    try:
        fd = os.open(root, os.O_RDONLY)
    except OSError as exc:
        raise StoreError(f"{root}: cannot open: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _spec_blob(prepared: PreparedBuild) -> tuple[BlobRef, bytes]:
    document = {"spec": prepared.document["spec"], "buildcache_layout_version": 2}
    data = gzip.compress(
        json.dumps(document, separators=(",", ":"), sort_keys=True).encode(), mtime=0
    )
    ref = BlobRef(
        media_type=MEDIA_SPEC_V5,
        checksum=hashlib.sha256(data).hexdigest(),
        size=len(data),
        compression="gzip",
    )
    return ref, data


def _read_index(root: Path) -> tuple[dict[str, dict[str, Any]], set[str]]:
    manifest_path = root / INDEX_V3
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except FileNotFoundError:
        return {}, set()
    except (OSError, ValueError) as exc:
        raise MetadataError(str(manifest_path), "", f"cannot read the index: {exc}") from None
    try:
        record = next(
            r
            for r in manifest["data"]
            if str(r["mediaType"]).startswith("application/vnd.spack.db")
        )
        data = (root / blob_path(str(record["checksum"]))).read_bytes()
        installs = json.loads(data)["database"]["installs"]
    except (StopIteration, KeyError, TypeError, OSError, ValueError):
        raise MetadataError(str(manifest_path), "data", "not a readable index") from None
    nodes: dict[str, dict[str, Any]] = {}
    held: set[str] = set()
    for dag_hash, entry in installs.items():
        if isinstance(entry, dict) and isinstance(entry.get("spec"), dict):
            nodes[str(dag_hash)] = entry["spec"]
            if entry.get("in_buildcache"):
                held.add(str(dag_hash))
    return nodes, held


def push_to_directory(
    builds: Sequence[PreparedBuild],
    destination: str,
    store: Store,
    *,
    progress: Callable[[str], None] | None = None,
) -> DirPushReport:
    """Write *builds* into the v3 mirror at *destination* and merge them into its index."""
    root = directory_of(destination)
    say = progress or (lambda _message: None)
    report = DirPushReport(destination=str(root))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{root}: cannot create: {exc.strerror or exc}") from None
    writer = _Writer(root, report)
    writer.write(LAYOUT_JSON, b'{"signing": "gpg"}\n', replace=False)
    for prepared in builds:
        build = prepared.build
        relative = spec_manifest_path(build.name, build.version, build.hash)
        writer.blob(build.tarball, source=store.blob_path(build.tarball.checksum))
        stored = store.read_file(build.metadata_path) if build.layout == 3 else None
        if stored is not None:
            writer.blob(build.spec_blob, source=store.blob_path(build.spec_blob.checksum))
            manifest = stored
        else:
            spec_ref, spec_data = _spec_blob(prepared)
            writer.blob(spec_ref, data=spec_data)
            tarball = BlobRef(
                media_type=MEDIA_INSTALL_V2,
                checksum=build.tarball.checksum,
                size=build.tarball.size,
                compression="gzip",
            )
            manifest = json.dumps(
                {"version": 3, "data": [_record(tarball), _record(spec_ref)]}, indent=0
            ).encode()
        writer.write(relative, manifest)
        report.builds.append(
            {
                "hash": build.hash,
                "name": build.name,
                "version": build.version,
                "manifest": relative,
                "signed": stored is not None and build.signer is not None,
            }
        )
        say(f"wrote {prepared.label} to {root}")
    with _locked(root):
        nodes, held = _read_index(root)
        for prepared in builds:
            for node in prepared.document["spec"]["nodes"]:
                if isinstance(node, dict) and isinstance(node.get("hash"), str):
                    nodes.setdefault(node["hash"], node)
            held.add(prepared.build.hash)
        data = database_json(nodes, held)
        db = BlobRef(
            media_type=MEDIA_DB_V8, checksum=hashlib.sha256(data).hexdigest(), size=len(data)
        )
        writer.blob(db, data=data)
        index = json.dumps({"version": 3, "data": [_record(db)]}, indent=0).encode()
        writer.write(INDEX_V3, index)
        report.index_builds = len(held)
    return report
