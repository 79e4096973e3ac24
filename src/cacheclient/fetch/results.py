"""What a fetch produces: builds whose metadata verified and whose blobs sit in the store.

:func:`cacheclient.fetch.fetch_builds` returns a :class:`FetchResult`; the installer, ``warm``
and the CLI read it without needing the fetch engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cacheclient.metadata.specfile import SpecFile
from cacheclient.model import BlobRef, BuildRecord

__all__ = [
    "FetchResult",
    "FetchedBlob",
    "FetchedBuild",
    "PendingBuild",
]


def __dir__() -> list[str]:
    return __all__


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchedBlob:
    """One blob a build needs, as it sits in the store."""

    kind: str  # "tarball" or "spec"
    ref: BlobRef
    path: Path
    mirror: str
    already_present: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "digest": f"{self.ref.checksum_algorithm}:{self.ref.checksum}",
            "size": self.ref.size,
            "media_type": self.ref.media_type,
            "path": str(self.path),
            "mirror": self.mirror,
            "already_present": self.already_present,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchedBuild:
    """A build whose metadata verified and whose tarball sits verified in the store."""

    record: BuildRecord
    spec: SpecFile
    tarball_path: Path
    tarball: BlobRef
    manifest_path: Path
    """The manifest (v3) or spec file (v2) in the store, byte-for-byte as fetched."""
    mirror: str
    signer: str | None
    """Fingerprint of the key that signed the metadata; None when it was not checked."""
    already_present: bool
    layout: int = 3
    blobs: tuple[FetchedBlob, ...] = ()

    @property
    def signature_checked(self) -> bool:
        return self.signer is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.record.name,
            "version": self.record.version,
            "hash": self.record.hash,
            "spec": self.record.format(),
            "mirror": self.mirror,
            "layout": self.layout,
            "signed": self.signer is not None,
            "signer": self.signer,
            "already_present": self.already_present,
            "manifest_path": str(self.manifest_path),
            "tarball_path": str(self.tarball_path),
            "blobs": [b.to_dict() for b in self.blobs],
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchResult:
    """Every requested build, in request order, plus what was downloaded."""

    items: list[FetchedBuild]
    store: Path
    downloaded_bytes: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def unsigned(self) -> list[FetchedBuild]:
        """Builds whose signature was not checked (allowed with ``--allow-unsigned``)."""
        return [item for item in self.items if item.signer is None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": str(self.store),
            "builds": [item.to_dict() for item in self.items],
            "not_signature_checked": [
                f"{i.record.name}@{i.record.version}/{i.record.hash}" for i in self.unsigned
            ],
            "downloaded_bytes": self.downloaded_bytes,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class PendingBuild:
    """A build whose metadata verified on one mirror; only its tarball is still to come."""

    record: BuildRecord
    mirror: str
    layout: int
    relative: str
    """The metadata file (v3 manifest or v2 spec file) relative to the mirror and the store."""
    raw: bytes
    """The metadata exactly as fetched (stored byte-for-byte so its signature still verifies)."""
    signer: str | None
    spec: SpecFile
    spec_blob: FetchedBlob
    tarball: BlobRef
    """The tarball's record (``size`` is -1 for v2, whose spec files do not give it)."""
    tarball_rel: str
    extra_blobs: tuple[FetchedBlob, ...] = ()
    """More blobs the build's metadata pins (an OCI image manifest: ``fetch/oci_source.py``)."""
