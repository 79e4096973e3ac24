"""What pushing one stored build needs, whatever the destination: its spec and its closure.

:func:`prepare` reads a build's spec from the store (v3 spec blob, v2 spec file or OCI config),
finds the tarballs of its link/run closure in the store (dependencies first, the build's own
tarball last, externals left out, as Spack orders an image's layers) and checks each is there.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cacheclient.errors import MetadataError, StoreError
from cacheclient.metadata.oci_image import OCI_LAYOUT, read_config_spec
from cacheclient.metadata.specfile import SpecFile, read_specfile
from cacheclient.model import BlobRef, BuildRecord
from cacheclient.store import Store, StoredBuild

__all__ = ["PreparedBuild", "prepare", "uncompressed_digest"]


def __dir__() -> list[str]:
    return __all__


@dataclass(frozen=True, kw_only=True, slots=True)
class PreparedBuild:
    """One stored build ready to push."""

    build: StoredBuild
    spec: SpecFile
    document: Mapping[str, Any]
    """The spec JSON object (``{"spec": {"_meta": ..., "nodes": [...]}, ...}``)."""
    layers: tuple[tuple[BuildRecord, BlobRef], ...]
    """The closure's tarballs, dependencies first, this build's own last."""

    @property
    def record(self) -> BuildRecord:
        return self.spec.root

    @property
    def label(self) -> str:
        return f"{self.build.name}@{self.build.version}/{self.build.hash[:7]}"


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check_record(store: Store, build: StoredBuild) -> None:
    """The store's record of a build is data on disk, untrusted like any: its digests must be
    digests (they become paths and URLs)."""
    for blob in (build.tarball, build.spec_blob):
        if blob.checksum_algorithm != "sha256" or not _HEX64.match(blob.checksum):
            raise StoreError(
                f"{store.root}: the record of {build.name}/{build.hash} is damaged "
                f"(checksum {blob.checksum!r:.80}); run `cacheclient verify --repair`"
            )


def _spec_of(store: Store, build: StoredBuild) -> tuple[SpecFile, dict[str, Any]]:
    path = store.blob_path(build.spec_blob.checksum)
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StoreError(
            f"{where}: cannot read the spec of {build.name}/{build.hash}: {exc.strerror or exc}"
        ) from None
    if hashlib.sha256(raw).hexdigest() != build.spec_blob.checksum:
        raise StoreError(f"{where}: the stored spec blob does not match its digest")
    spec = read_config_spec(raw, where) if build.layout == OCI_LAYOUT else read_specfile(raw, where)
    if spec.root.hash != build.hash:
        raise MetadataError(where, "spec", f"describes {spec.root.hash}, not {build.hash}")
    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    if text.startswith(b"-----BEGIN PGP SIGNED MESSAGE-----"):
        from cacheclient.metadata.clearsign import split_clearsigned  # noqa: PLC0415

        text = split_clearsigned(text.decode("utf-8"), where).payload.encode("utf-8")
    document = json.loads(text)
    return spec, document


def _closure(spec: SpecFile) -> list[BuildRecord]:
    """Runtime (link/run) closure of the root, dependencies first, root last, no externals."""
    order: list[BuildRecord] = []
    seen: set[str] = set()

    def visit(record: BuildRecord) -> None:
        if record.hash in seen:
            return
        seen.add(record.hash)
        for dep in record.runtime_dependencies():
            child = spec.nodes.get(dep.hash)
            if child is not None:
                visit(child)
        if not record.is_external:
            order.append(record)

    visit(spec.root)
    return order


def prepare(store: Store, dag_hash: str) -> PreparedBuild:
    """The build *dag_hash* from *store*, with every tarball its image needs.

    :raises StoreError: the build, or a dependency's tarball, is not in the store.
    """
    build = store.load_build(dag_hash)
    if build is None:
        raise StoreError(f"{store.root}: build {dag_hash} is not in the store (fetch it first)")
    _check_record(store, build)
    spec, document = _spec_of(store, build)
    layers: list[tuple[BuildRecord, BlobRef]] = []
    for node in _closure(spec):
        stored = build if node.hash == build.hash else store.load_build(node.hash)
        if stored is None or not store.has_blob(stored.tarball.checksum):
            what = (
                "its own tarball"
                if node.hash == build.hash
                else (f"the tarball of its dependency {node.name}@{node.version}/{node.hash[:7]}")
            )
            raise StoreError(
                f"{store.root}: cannot push {build.name}@{build.version}/{build.hash[:7]}: "
                f"{what} is not in the store (warm or fetch it first)"
            )
        _check_record(store, stored)
        layers.append((node, stored.tarball))
    return PreparedBuild(build=build, spec=spec, document=document, layers=tuple(layers))


def uncompressed_digest(path: Path, expect: str | None = None) -> str:
    """``sha256:<hex>`` of a gzip file's uncompressed content (an OCI ``diff_id``); with
    *expect*, the file itself must hash to that sha256 (both come from one read).

    :raises StoreError: unreadable, or not the expected bytes (a damaged store copy).
    """
    digest = hashlib.sha256()
    whole = hashlib.sha256()
    inflater = zlib.decompressobj(wbits=31)
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                whole.update(chunk)
                digest.update(inflater.decompress(chunk))
                while inflater.eof and inflater.unused_data:  # concatenated gzip members
                    rest = inflater.unused_data
                    inflater = zlib.decompressobj(wbits=31)
                    digest.update(inflater.decompress(rest))
            digest.update(inflater.flush())
    except zlib.error as exc:
        if expect is not None and whole.hexdigest() != expect:
            raise StoreError(
                f"{path}: the store's copy is damaged (run `cacheclient verify --repair`)"
            ) from None
        raise MetadataError(str(path), "", f"not a gzip tarball: {exc}") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if expect is not None and whole.hexdigest() != expect:
        raise StoreError(
            f"{path}: sha256 {whole.hexdigest()}, not {expect}: the store's copy is damaged "
            "(run `cacheclient verify --repair`)"
        )
    return f"sha256:{digest.hexdigest()}"
