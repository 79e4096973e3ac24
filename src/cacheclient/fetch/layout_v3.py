"""Layout v3 (Spack >= 1.0): a build's signed spec manifest, then its spec blob.

The manifest is verified with the trusted keys (unless unsigned builds are allowed) and parsed
from the *verified* payload; the spec blob is downloaded into the store checking length and
sha256 as it streams; the signed spec must be the build that was asked for and agree with the
record that selected it (:meth:`~cacheclient.fetch.fetcher.Fetcher._check_root`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cacheclient.errors import MetadataError, StoreError, VerificationError
from cacheclient.fetch.results import PendingBuild
from cacheclient.fetch.routing import NotHere
from cacheclient.metadata.layout import spec_manifest_path
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.metadata.specfile import read_specfile
from cacheclient.model import BuildRecord
from cacheclient.resolution.agreement import signed_record
from cacheclient.transport import join_url

if TYPE_CHECKING:
    from cacheclient.fetch.fetcher import Fetcher

__all__ = ["plan_v3"]


def __dir__() -> list[str]:
    return __all__


def plan_v3(fetcher: Fetcher, record: BuildRecord, mirror: str) -> PendingBuild:
    relative = record.manifest_path or spec_manifest_path(record.name, record.version, record.hash)
    url = join_url(mirror, relative)
    raw = fetcher._transport(url).read(url, retry_not_found=True)
    if raw is None:
        raise NotHere(url)
    try:
        payload, signer = fetcher._verify(raw, url, mirror)
        manifest = parse_manifest(payload, url)
    except (VerificationError, MetadataError):
        # Read it once more: a body without Content-Length cut short looks complete, and
        # a mirror may be caught mid-push. A second identical copy fails the same way.
        again = fetcher._transport(url).read(url)
        if again is None or again == raw:
            raise
        raw = again
        payload, signer = fetcher._verify(raw, url, mirror)
        manifest = parse_manifest(payload, url)
    tarball, spec_ref = manifest.tarball, manifest.spec_blob
    if tarball is None or spec_ref is None:
        missing = "tarball" if tarball is None else "spec"
        raise MetadataError(url, "data", f"no {missing} record in the spec manifest")
    spec_blob = fetcher._ensure_blob(record, "spec", spec_ref, mirror, spec_ref.path)
    try:
        spec = read_specfile(spec_blob.path.read_bytes(), join_url(mirror, spec_ref.path))
    except OSError as exc:
        raise StoreError(f"{spec_blob.path}: cannot read: {exc.strerror}") from None
    fetcher._check_root(spec, record, url, mirror)
    return PendingBuild(
        record=signed_record(record, spec.root),
        mirror=mirror,
        layout=3,
        relative=relative,
        raw=raw,
        signer=signer,
        spec=spec,
        spec_blob=spec_blob,
        tarball=tarball,
        tarball_rel=tarball.path,
    )
