"""Fetching a build from an OCI registry mirror: the fetcher's OCI branch (FORMATS §7).

The fetcher (:mod:`.fetcher`) calls :func:`plan_oci` for a mirror whose URL is ``oci://`` or
``oci+http://`` and :func:`oci_from_store` for a stored build that came from one; everything
OCI-specific lives here. The result objects are the fetcher's own, so the rest of the pipeline
(install, warm, locks) does not know where a build came from.

* The image manifest is read by tag (``<name>-<version>-<hash>.spack``), or by digest when the
  record carries one (a lock pins it); the transport checks its bytes against the digest.
* OCI caches carry no signatures: a build from one is accepted only with ``--allow-unsigned`` or
  a mirror marked ``signed: false``, and is reported as not signature-checked. Trust rests on
  the registry's TLS, and on the digests a lock pins.
* The config blob (the spec) and the last layer (the tarball) go through the fetcher's verified
  blob download: streamed into the store's partial file, sha256 checked, ``Range`` resumed.
* The manifest itself is kept in the store (``oci/manifests/sha256/<hex>.json``) and listed
  among the build's blobs, so a lock records the manifest, config and layer digests.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from cacheclient.errors import MetadataError, VerificationError
from cacheclient.fetch.results import FetchedBlob, FetchedBuild, PendingBuild
from cacheclient.fetch.routing import NotHere
from cacheclient.metadata.oci_image import (
    DOCKER_MANIFEST,
    OCI_LAYOUT,
    OCI_MANIFEST,
    blob_relative,
    build_tag,
    is_oci_url,
    parse_image_manifest,
    read_config_spec,
)
from cacheclient.metadata.specfile import MAX_SPEC_BYTES
from cacheclient.model import BlobRef, BuildRecord
from cacheclient.resolution.agreement import signed_record
from cacheclient.store import StoredBuild
from cacheclient.transport import join_url

if TYPE_CHECKING:
    from cacheclient.fetch.fetcher import Fetcher

__all__ = ["OCI_LAYOUT", "is_oci_url", "manifest_store_path", "oci_from_store", "plan_oci"]


def __dir__() -> list[str]:
    return __all__


_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
_STORED = re.compile(r"^oci/manifests/sha256/([0-9a-f]{64})\.json$")


def manifest_store_path(digest_hex: str) -> str:
    """Where the store keeps an image manifest (relative to the store root)."""
    return f"oci/manifests/sha256/{digest_hex}.json"


def _unsigned_refused(record: BuildRecord, mirror: str) -> VerificationError:
    return VerificationError(
        f"{record.name}@{record.version}/{record.hash}: {mirror} is an OCI registry, whose "
        "build caches are not signed: pass --allow-unsigned, or mark the mirror `signed: false`, "
        "to accept its builds (they are then listed as not signature-checked)",
        mirror=mirror,
    )


def _pinned_manifest(record: BuildRecord) -> BlobRef | None:
    for blob in record.blobs:
        if blob.media_type in _MANIFEST_TYPES:
            return blob
    return None


def plan_oci(fetcher: Fetcher, record: BuildRecord, mirror: str) -> PendingBuild:
    """Phase 1 on an OCI mirror: the manifest, then the config blob (the spec), verified."""
    if fetcher._needs_signature(mirror):
        raise _unsigned_refused(record, mirror)
    pinned = _pinned_manifest(record)
    reference = (
        f"sha256:{pinned.checksum}"
        if pinned is not None
        else build_tag(record.name, record.version, record.hash)
    )
    url = join_url(mirror, f"manifests/{reference}")
    raw = fetcher._transport(url).read(url, retry_not_found=True)
    if raw is None:
        raise NotHere(url)
    digest_hex = hashlib.sha256(raw).hexdigest()
    manifest = parse_image_manifest(raw, url)
    if manifest.config.size > MAX_SPEC_BYTES:
        raise MetadataError(url, "config.size", f"{manifest.config.size} bytes is not a spec")
    config_url = join_url(mirror, blob_relative(manifest.config.checksum))
    config = BlobRef(
        media_type=manifest.config.media_type,
        checksum=manifest.config.checksum,
        size=manifest.config.size,
    )
    spec_blob = fetcher._ensure_blob(record, "spec", config, mirror, blob_relative(config.checksum))
    try:
        data = spec_blob.path.read_bytes()
    except OSError as exc:
        from cacheclient.errors import StoreError  # noqa: PLC0415

        raise StoreError(f"{spec_blob.path}: cannot read: {exc.strerror}") from None
    spec = read_config_spec(data, config_url)
    fetcher._check_root(spec, record, url, mirror)
    tarball = manifest.tarball
    if spec.tarball_sha256 is not None and spec.tarball_sha256 != tarball.checksum:
        raise VerificationError(
            f"{url}: the config's binary_cache_checksum {spec.tarball_sha256} is not the last "
            f"layer {tarball.checksum}",
            url=url,
            mirror=mirror,
            expected=spec.tarball_sha256,
            actual=tarball.checksum,
        )
    relative = manifest_store_path(digest_hex)
    present = fetcher.store.read_file(relative) is not None
    manifest_blob = FetchedBlob(
        kind="manifest",
        ref=BlobRef(media_type=manifest.media_type, checksum=digest_hex, size=len(raw)),
        path=fetcher.store.root / relative,
        mirror=mirror,
        already_present=present,
    )
    return PendingBuild(
        record=signed_record(record, spec.root),
        mirror=mirror,
        layout=OCI_LAYOUT,
        relative=relative,
        raw=raw,
        signer=None,
        spec=spec,
        spec_blob=spec_blob,
        tarball=BlobRef(
            media_type=tarball.media_type,
            checksum=tarball.checksum,
            size=tarball.size,
            compression="gzip",
        ),
        tarball_rel=blob_relative(tarball.checksum),
        extra_blobs=(manifest_blob,),
    )


def oci_from_store(
    fetcher: Fetcher, record: BuildRecord, build: StoredBuild
) -> FetchedBuild | None:
    """A stored build that came from an OCI mirror, re-checked: the manifest's digest, its
    config and last layer against the store's record, the spec's root hash. ``None`` when
    something is missing (the fetcher then goes to the mirrors)."""
    store = fetcher.store
    if fetcher._needs_signature(build.mirror):
        raise _unsigned_refused(record, build.mirror)
    match = _STORED.match(build.metadata_path)
    if match is None:
        return None
    raw = store.read_file(build.metadata_path)
    if raw is None or hashlib.sha256(raw).hexdigest() != match.group(1):
        return None
    where = str(store.root / build.metadata_path)
    try:
        manifest = parse_image_manifest(raw, where)
    except MetadataError:
        return None
    if (
        manifest.config.checksum != build.spec_blob.checksum
        or manifest.tarball.checksum != build.tarball.checksum
    ):
        return None
    config = store.read_blob(build.spec_blob.checksum)  # hashed as it is read back
    if config is None:
        return None
    spec = read_config_spec(config, where)
    fetcher._check_root(spec, record, where, build.mirror)
    manifest_blob = FetchedBlob(
        kind="manifest",
        ref=BlobRef(media_type=manifest.media_type, checksum=match.group(1), size=len(raw)),
        path=store.root / build.metadata_path,
        mirror=build.mirror,
        already_present=True,
    )
    return fetcher._stored(record, build, spec, None, extra_blobs=(manifest_blob,))
