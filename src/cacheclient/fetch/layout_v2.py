"""Layout v2 (Spack 0.20-0.23): ``build_cache/<...>.spec.json.sig`` and the ``.spack`` tarball.

The clear-signed spec file is verified (a plain ``.spec.json`` is read only when unsigned builds
are allowed), parsed from the verified payload, and its ``binary_cache_checksum`` pins the
tarball. The spec JSON is kept in the store as a blob of its own, like a v3 spec blob.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from cacheclient.errors import CacheClientError, MetadataError, VerificationError
from cacheclient.fetch.results import PendingBuild
from cacheclient.fetch.routing import NotHere
from cacheclient.metadata.clearsign import is_clearsigned, split_clearsigned
from cacheclient.metadata.layout import v2_specfile_paths, v2_tarball_path
from cacheclient.metadata.manifest import decode_text
from cacheclient.metadata.specfile import read_specfile
from cacheclient.model import BlobRef, BuildRecord
from cacheclient.resolution.agreement import signed_record
from cacheclient.transport import join_url

if TYPE_CHECKING:
    from cacheclient.fetch.fetcher import Fetcher

__all__ = ["V2_TARBALL_MEDIA_TYPE", "plan_v2"]


def __dir__() -> list[str]:
    return __all__


V2_TARBALL_MEDIA_TYPE = "application/vnd.spack.install.v1.tar+gzip"


def plan_v2(fetcher: Fetcher, record: BuildRecord, mirror: str) -> PendingBuild:
    try:
        signed_rel, plain_rel = v2_specfile_paths(record)
        tarball_rel = v2_tarball_path(record)
    except CacheClientError:
        raise NotHere(mirror) from None
    transport = fetcher._transport(mirror)
    url = join_url(mirror, signed_rel)
    relative = signed_rel
    raw = transport.read(url, retry_not_found=True)
    if raw is None:
        plain_url = join_url(mirror, plain_rel)
        plain = transport.read(plain_url)
        if plain is None:
            raise NotHere(url)
        if fetcher._needs_signature(mirror):
            raise VerificationError(
                f"{plain_url}: mirror {mirror} has no signed metadata for "
                f"{record.name}/{record.hash} (use --allow-unsigned to accept it)",
                url=plain_url,
                mirror=mirror,
            )
        raw, url, relative = plain, plain_url, plain_rel
    try:
        payload, signer = fetcher._verify(raw, url, mirror)
        spec = read_specfile(payload, url)
    except (VerificationError, MetadataError):
        again = transport.read(url)  # once more, as for v3 manifests
        if again is None or again == raw:
            raise
        raw = again
        payload, signer = fetcher._verify(raw, url, mirror)
        spec = read_specfile(payload, url)
    fetcher._check_root(spec, record, url, mirror)
    if spec.tarball_sha256 is None:
        raise MetadataError(url, "binary_cache_checksum", "missing: cannot verify the tarball")
    spec_json = payload
    if signer is None:  # not verified: keep the JSON inside the (unchecked) wrapper
        text = decode_text(raw, url)
        if is_clearsigned(text):
            spec_json = split_clearsigned(text, url).payload.encode("utf-8")
    spec_digest = hashlib.sha256(spec_json).hexdigest()
    present = fetcher.store.has_blob(spec_digest)
    fetcher.store.put_blob(spec_json, checksum=spec_digest, pin=True)
    fetcher.store.pin(spec_digest)
    spec_ref = BlobRef(
        media_type=f"application/vnd.spack.spec.v{spec.format_version}+json",
        checksum=spec_digest,
        size=len(spec_json),
    )
    return PendingBuild(
        record=signed_record(record, spec.root),
        mirror=mirror,
        layout=2,
        relative=relative,
        raw=raw,
        signer=signer,
        spec=spec,
        spec_blob=fetcher._fetched_blob("spec", spec_ref, mirror, present=present),
        tarball=BlobRef(media_type=V2_TARBALL_MEDIA_TYPE, checksum=spec.tarball_sha256, size=-1),
        tarball_rel=tarball_rel,
    )
