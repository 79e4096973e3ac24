"""Frozen value objects shared by every reader, the resolver, the fetcher and the installer."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEPTYPES",
    "HASH_RE",
    "RUNTIME_DEPTYPES",
    "BlobRef",
    "BuildRecord",
    "ClosureNode",
    "Dependency",
    "Libc",
    "Manifest",
    "VariantValue",
    "format_variant",
    "is_valid_hash",
]


def __dir__() -> list[str]:
    return __all__


HASH_RE = re.compile(r"^[a-z0-9]{32}$")
"""What Spack accepts as a DAG hash (real ones are ``[a-z2-7]{32}``, base32 of SHA-1)."""

DEPTYPES = frozenset({"build", "link", "run", "test"})
RUNTIME_DEPTYPES = frozenset({"link", "run"})

VariantValue = bool | str | tuple[str, ...]
"""A variant value: ``True``/``False`` for boolean variants, a string for single-valued
ones, a sorted tuple of strings for multi-valued ones."""


def is_valid_hash(value: object) -> bool:
    """Whether *value* is a full 32-character DAG hash."""
    return isinstance(value, str) and HASH_RE.match(value) is not None


def format_variant(name: str, value: VariantValue) -> str:
    """Render one variant the way Spack (and cache.spack.io) prints it.

    >>> format_variant("shared", True), format_variant("codecs", ("gzip", "lz4"))
    ('+shared', 'codecs=gzip,lz4')
    """
    if value is True:
        return f"+{name}"
    if value is False:
        return f"~{name}"
    if isinstance(value, tuple):
        return f"{name}={','.join(value)}"
    return f"{name}={value}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Dependency:
    """An edge of the DAG: the child's hash, the edge's types and the virtuals it provides."""

    name: str
    hash: str
    deptypes: frozenset[str]
    virtuals: tuple[str, ...] = ()

    @property
    def is_runtime(self) -> bool:
        """Whether the edge is followed for the runtime closure (link or run)."""
        return not self.deptypes.isdisjoint(RUNTIME_DEPTYPES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hash": self.hash,
            "deptypes": sorted(self.deptypes),
            "virtuals": list(self.virtuals),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class BlobRef:
    """One record of a v3 manifest: a content-addressed blob and what it holds."""

    media_type: str
    checksum: str
    size: int
    checksum_algorithm: str = "sha256"
    compression: str = "none"

    @property
    def path(self) -> str:
        """The blob's path relative to the mirror root (``blobs/sha256/ab/abcd…``)."""
        return f"blobs/{self.checksum_algorithm}/{self.checksum[:2]}/{self.checksum}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "checksum": self.checksum,
            "checksumAlgorithm": self.checksum_algorithm,
            "contentLength": self.size,
            "compression": self.compression,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest:
    """A parsed v3 manifest (``{"version": 3, "data": [...]}``)."""

    version: int
    blobs: tuple[BlobRef, ...]

    def find(self, media_type_prefix: str) -> BlobRef | None:
        """The first blob whose media type starts with *media_type_prefix*."""
        for blob in self.blobs:
            if blob.media_type.startswith(media_type_prefix):
                return blob
        return None

    @property
    def tarball(self) -> BlobRef | None:
        return self.find("application/vnd.spack.install.")

    @property
    def spec_blob(self) -> BlobRef | None:
        return self.find("application/vnd.spack.spec.")

    @property
    def index_blob(self) -> BlobRef | None:
        return self.find("application/vnd.spack.db.")


@dataclass(frozen=True, kw_only=True, slots=True)
class Libc:
    """The C library a build was linked against (from its ``libc`` virtual dependency)."""

    name: str
    version: str


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildRecord:
    """One concrete build (one DAG node) as a binary cache describes it.

    Fields the source does not know are ``None`` or empty. ``installable`` is false for
    records that are only dependencies (``in_buildcache: false``) and for externals.
    ``dependencies_known`` is false when the source lists builds without their edges (a
    cache.spack.io page): the closure then comes from the build's signed spec.
    """

    name: str
    version: str
    hash: str
    platform: str
    os: str
    target: str
    target_info: Mapping[str, Any] | None = None
    compiler: str | None = None
    variants: Mapping[str, VariantValue] = field(default_factory=dict)
    dependencies: tuple[Dependency, ...] = ()
    stacks: tuple[str, ...] = ()
    installable: bool = True
    external_path: str | None = None
    namespace: str | None = None
    libc: Libc | None = None
    manifest_path: str | None = None
    blobs: tuple[BlobRef, ...] = ()
    source: str | None = None
    dependencies_known: bool = True

    @property
    def is_external(self) -> bool:
        return self.external_path is not None

    @property
    def short_hash(self) -> str:
        return self.hash[:7]

    @property
    def arch(self) -> str:
        """``platform-os-target``, as in Spack's ``{architecture}``."""
        return f"{self.platform}-{self.os}-{self.target}"

    def runtime_dependencies(self) -> Iterable[Dependency]:
        return (d for d in self.dependencies if d.is_runtime)

    def variant_strings(self) -> list[str]:
        return [format_variant(k, v) for k, v in sorted(self.variants.items())]

    def format(self) -> str:
        """A Spack-like one-line description: ``name@version +v k=v arch=... /hash7``."""
        parts = [f"{self.name}@{self.version}", *self.variant_strings()]
        if self.compiler:
            parts.append(f"%{self.compiler}")
        parts.append(f"arch={self.arch}")
        parts.append(f"/{self.short_hash}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "hash": self.hash,
            "platform": self.platform,
            "os": self.os,
            "target": self.target,
            "compiler": self.compiler,
            "variants": self.variant_strings(),
            "dependencies": [d.to_dict() for d in self.dependencies],
            "stacks": list(self.stacks),
            "installable": self.installable,
        }
        if self.external_path is not None:
            out["external_path"] = self.external_path
        if self.libc is not None:
            out["libc"] = {"name": self.libc.name, "version": self.libc.version}
        if self.manifest_path is not None:
            out["manifest_path"] = self.manifest_path
        if self.blobs:
            out["blobs"] = [b.to_dict() for b in self.blobs]
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ClosureNode:
    """A build as a runtime-closure walk sees it: who it is, whether it can be installed, and
    the hashes of its runtime (link/run) children in the walk's order (by name, then hash).

    An on-disk parsed index keeps this summary beside each full record, so a closure of
    thousands of builds is walked and reported without decoding their full records;
    :meth:`of` gives the same summary of a :class:`BuildRecord`.
    """

    hash: str
    name: str
    version: str
    target: str
    installable: bool = True
    external: bool = False
    children: tuple[str, ...] = ()

    @property
    def short_hash(self) -> str:
        return self.hash[:7]

    @classmethod
    def of(cls, record: BuildRecord) -> ClosureNode:
        """The summary of *record* (no children when its edges are not known)."""
        return cls(
            hash=record.hash,
            name=record.name,
            version=record.version,
            target=record.target,
            installable=record.installable,
            external=record.is_external,
            children=tuple(
                d.hash
                for d in sorted(record.runtime_dependencies(), key=lambda d: (d.name, d.hash))
            ),
        )
