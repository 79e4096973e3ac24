"""Spack build caches in OCI registries: image manifests, configs and tags (FORMATS §7).

Pure logic, no I/O. One image per build, tagged ``<name>-<version>-<hash>.spack``: its config
blob is an OCI image config *plus* the spec (``spec``, ``buildcache_layout_version``,
``binary_cache_checksum``...), its layers are the gzip tarballs of the build's link/run closure,
dependencies first, so the build's own tarball is the last layer. The tag ``index.spack`` holds
a fake image whose only layer is the Spack database JSON (uncompressed, whatever its media type
says). Readers: :func:`parse_image_manifest`, :func:`read_config_spec`; writers (for
``cacheclient push``): :func:`build_config`, :func:`build_manifest`, :func:`index_image`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cacheclient.errors import MetadataError
from cacheclient.metadata.layout import OCI_LAYOUT, is_oci_url  # here too: a registry's names
from cacheclient.metadata.specfile import SpecFile, read_specfile
from cacheclient.model import BlobRef

__all__ = [
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "INDEX_TAG",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYOUT",
    "OCI_MANIFEST",
    "ImageManifest",
    "blob_relative",
    "build_config",
    "build_manifest",
    "build_tag",
    "ensure_valid_tag",
    "index_image",
    "is_build_tag",
    "is_oci_url",
    "oci_architecture",
    "parse_image_manifest",
    "read_config_spec",
]


def __dir__() -> list[str]:
    return __all__


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
INDEX_TAG = "index.spack"
MAX_CONFIG_LAYOUT = 3
"""``buildcache_layout_version`` that OCI configs carry: 1 (Spack 0.22), 2 (0.23), 3 (1.x)."""

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_NOT_TAG = re.compile(r"[^\w.-]")


def ensure_valid_tag(tag: str) -> str:
    """Spack's tag spelling: characters outside ``[\\w.-]`` become ``_``; a tag longer than
    128 characters keeps its first and last 64.

    >>> ensure_valid_tag("foo-git.main=1.2-abc.spack")
    'foo-git.main_1.2-abc.spack'
    """
    sanitized = _NOT_TAG.sub("_", tag)
    if len(sanitized) > 128:
        return sanitized[:64] + sanitized[-64:]
    return sanitized


def build_tag(name: str, version: str, dag_hash: str) -> str:
    """The tag of one build: ``<name>-<version>-<hash>.spack``.

    >>> build_tag("zlib", "1.3.1", "a" * 32)
    'zlib-1.3.1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.spack'
    """
    return ensure_valid_tag(f"{name}-{version}-{dag_hash}.spack")


def is_build_tag(tag: str) -> bool:
    """Whether *tag* names a build (ends with ``.spack`` and is not the index)."""
    return tag.endswith(".spack") and tag != INDEX_TAG


def blob_relative(digest_hex: str) -> str:
    """A blob's path below an ``oci://`` mirror URL: ``blobs/sha256:<hex>``."""
    return f"blobs/sha256:{digest_hex}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageManifest:
    """A parsed image manifest: the config blob and the layers, in order."""

    media_type: str
    config: BlobRef
    layers: tuple[BlobRef, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def tarball(self) -> BlobRef:
        """The build's own tarball: the last layer."""
        return self.layers[-1]


def _descriptor(raw: Any, path: str, source: str, *, compression: str) -> BlobRef:
    if not isinstance(raw, dict):
        raise MetadataError(source, path, "expected an object")
    digest = raw.get("digest")
    match = _DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:
        raise MetadataError(source, f"{path}.digest", f"not a sha256 digest: {digest!r:.80}")
    size = raw.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise MetadataError(source, f"{path}.size", f"not a size: {size!r:.40}")
    media = raw.get("mediaType")
    if not isinstance(media, str):
        raise MetadataError(source, f"{path}.mediaType", "missing")
    return BlobRef(media_type=media, checksum=match.group(1), size=size, compression=compression)


def _load_object(data: bytes, source: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise MetadataError(source, "", "not valid JSON") from None
    if not isinstance(obj, dict):
        raise MetadataError(source, "", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_image_manifest(data: bytes, source: str) -> ImageManifest:
    """Parse an OCI or Docker v2 image manifest.

    :raises MetadataError: not JSON, an image index or list (a multi-platform image, which is
        not how Spack stores a build), or malformed descriptors.
    """
    obj = _load_object(data, source)
    media = obj.get("mediaType", OCI_MANIFEST)
    if media in (OCI_INDEX, DOCKER_LIST) or "manifests" in obj:
        raise MetadataError(
            source, "mediaType", "an image index (several platforms), not a Spack build image"
        )
    if media not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise MetadataError(source, "mediaType", f"unsupported manifest type {media!r:.80}")
    if obj.get("schemaVersion") != 2:
        raise MetadataError(source, "schemaVersion", "expected 2")
    config = _descriptor(obj.get("config"), "config", source, compression="none")
    raw_layers = obj.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise MetadataError(source, "layers", "expected a non-empty list")
    layers = tuple(
        _descriptor(layer, f"layers[{i}]", source, compression="gzip")
        for i, layer in enumerate(raw_layers)
    )
    raw_annotations = obj.get("annotations") or {}
    annotations = (
        {str(k): str(v) for k, v in raw_annotations.items()}
        if isinstance(raw_annotations, dict)
        else {}
    )
    return ImageManifest(
        media_type=str(media), config=config, layers=layers, annotations=annotations
    )


def read_config_spec(data: bytes, source: str) -> SpecFile:
    """The spec inside an image config blob (FORMATS §7), as a :class:`SpecFile`.

    ``tarball_sha256`` is the config's ``binary_cache_checksum`` (the last layer's digest).
    :raises MetadataError: not a Spack image config, or a layout newer than 3.
    """
    obj = _load_object(data, source)
    layout = obj.get("buildcache_layout_version", 0)
    if not isinstance(layout, int) or isinstance(layout, bool):
        raise MetadataError(source, "buildcache_layout_version", "expected an integer")
    if layout > MAX_CONFIG_LAYOUT:
        raise MetadataError(
            source,
            "buildcache_layout_version",
            f"layout version {layout} is too new (OCI configs up to {MAX_CONFIG_LAYOUT} are "
            "read); a newer cacheclient is needed",
        )
    if "spec" not in obj:
        raise MetadataError(source, "spec", "missing: this image is not a Spack build")
    spec_only = {k: v for k, v in obj.items() if k != "buildcache_layout_version"}
    return read_specfile(json.dumps(spec_only).encode(), source)


_FAMILY_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "ppc64": "ppc64"}


def oci_architecture(family: str) -> str:
    """The OCI ``architecture`` of a target family (x86_64 -> amd64, aarch64 -> arm64)."""
    return _FAMILY_ARCH.get(family, family)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_config(
    spec_document: Mapping[str, Any],
    *,
    architecture: str,
    diff_ids: Sequence[str],
    tarball: BlobRef,
) -> bytes:
    """The config blob of one build image: an OCI image config plus the spec.

    *spec_document* is the spec JSON object (``{"spec": {"_meta": ..., "nodes": [...]}}``);
    *diff_ids* the ``sha256:`` digests of the uncompressed layers; *tarball* the build's own
    tarball (its digest becomes ``binary_cache_checksum``). The bytes are canonical JSON, so
    the same build always gives the same config digest (a repeated push uploads nothing).
    """
    config = {
        "architecture": architecture,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "config": {},
        "spec": spec_document["spec"],
        "buildcache_layout_version": MAX_CONFIG_LAYOUT,
        "binary_cache_checksum": {"hash_algorithm": "sha256", "hash": tarball.checksum},
        "archive_size": tarball.size,
        "archive_compression": "gzip",
    }
    return _canonical(config)


def build_manifest(
    config: BlobRef, layers: Sequence[BlobRef], *, description: str | None = None
) -> bytes:
    """An OCI image manifest (canonical JSON) for a config and its layers."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": f"sha256:{config.checksum}",
            "size": config.size,
        },
        "layers": [
            {"mediaType": OCI_LAYER, "digest": f"sha256:{layer.checksum}", "size": layer.size}
            for layer in layers
        ],
    }
    if description:
        manifest["annotations"] = {"org.opencontainers.image.description": description}
    return _canonical(manifest)


EMPTY_CONFIG = b"{}"


def index_image(db_json: BlobRef) -> bytes:
    """The manifest of the ``index.spack`` image: an empty ``{}`` config and the database
    JSON as its only layer (labelled tar+gzip, as Spack does, though it is plain JSON)."""
    import hashlib  # noqa: PLC0415 - only the writer needs it

    empty = BlobRef(
        media_type=OCI_CONFIG,
        checksum=hashlib.sha256(EMPTY_CONFIG).hexdigest(),
        size=len(EMPTY_CONFIG),
    )
    return build_manifest(empty, [db_json])
