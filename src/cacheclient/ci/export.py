"""Export builds of a store, with their runtime closures, as a standalone Spack mirror.

For an air-gapped site or a release bundle: :func:`select_builds` picks builds (by lock, by
request, or all), :func:`export_mirror` writes them into a new directory that holds exactly
those builds and their link/run closures, each in the layout it was fetched in (v3 manifests
and blobs, v2 ``build_cache/`` files byte-for-byte), the indexes of both layouts and the public
keys of their trusted signers (:mod:`cacheclient.store.publish`). It carries no
``.cacheclient/`` directory, so it is a mirror, not a store.

Nothing read back from the store is taken on faith: every metadata file of a signed build is
verified again with the store's trusted keys, the blob checksums it names must be the ones the
store's record gives, and every blob is re-hashed while it is copied. The directory is written
under a temporary name next to *dest* and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cacheclient.errors import (
    MetadataError,
    NoMatchError,
    StoreError,
    UsageError,
    VerificationError,
)
from cacheclient.metadata.clearsign import is_clearsigned, split_clearsigned
from cacheclient.metadata.indexdoc import IndexedSpec, indexed_spec
from cacheclient.metadata.manifest import decode_text, parse_manifest
from cacheclient.metadata.specfile import SpecFile, read_specfile
from cacheclient.model import BlobRef, BuildRecord
from cacheclient.resolution.resolve import matches
from cacheclient.resolution.spec import Request
from cacheclient.store import Store, StoredBuild
from cacheclient.store.publish import PublishReport, publish_mirror, well_formed
from cacheclient.trust import TrustStore

__all__ = ["ExportReport", "export_mirror", "select_builds"]


def __dir__() -> list[str]:
    return __all__


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportReport:
    """What :func:`export_mirror` wrote."""

    dest: Path
    builds: tuple[StoredBuild, ...]
    publication: PublishReport
    bytes_copied: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "dest": str(self.dest),
            "builds": [
                {"hash": b.hash, "name": b.name, "version": b.version, "layout": b.layout}
                for b in self.builds
            ],
            "bytes_copied": self.bytes_copied,
            **self.publication.to_dict(),
        }


def _spec_file(store: Store, build: StoredBuild) -> SpecFile:
    path = store.blob_path(build.spec_blob.checksum)
    try:
        spec = read_specfile(path.read_bytes(), str(path))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the spec of {build.name}/{build.hash}: {exc}") from (
            None
        )
    if spec.root.hash != build.hash:
        raise VerificationError(f"{path}: spec is for /{spec.root.hash}, not /{build.hash}")
    return spec


def _closure(root: BuildRecord, spec: SpecFile) -> list[BuildRecord]:
    """*root* and every node it reaches through link/run edges, externals left out."""
    out: list[BuildRecord] = []
    seen: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node.hash in seen or node.is_external:
            continue
        seen.add(node.hash)
        out.append(node)
        for dep in node.runtime_dependencies():
            child = spec.nodes.get(dep.hash)
            if child is None:
                where = f"spec of {root.name}/{root.hash}"
                raise MetadataError(where, "nodes", f"no node for dependency {dep.hash}")
            stack.append(child)
    return out


def select_builds(
    store: Store,
    *,
    hashes: Sequence[str] = (),
    requests: Sequence[Request] = (),
    everything: bool = False,
) -> list[StoredBuild]:
    """The builds named (full hashes, e.g. a lock's), matched by *requests* (every build of
    the store that satisfies one), or all of them; plus their runtime closures.

    :raises NoMatchError: a hash or request matches no build of the store.
    :raises StoreError: a dependency of a selected build is not in the store.
    """
    held = {b.hash: b for b in store.builds()}
    roots: dict[str, StoredBuild] = {}
    if everything:
        roots.update(held)
    for h in hashes:
        if h not in held:
            raise NoMatchError(f"/{h} is not in the store {store.root} (fetch or warm it first)")
        roots[h] = held[h]
    specs: dict[str, SpecFile] = {}
    if requests:
        for build in held.values():
            specs[build.hash] = _spec_file(store, build)
        for req in requests:
            found = [b for b in held.values() if matches(specs[b.hash].root, req)]
            if not found:
                raise NoMatchError(f"nothing in the store {store.root} matches {req.text!r}")
            roots.update((b.hash, b) for b in found)
    selected: dict[str, StoredBuild] = {}
    for build in roots.values():
        spec = specs.get(build.hash) or _spec_file(store, build)
        for node in _closure(spec.root, spec):
            dep = held.get(node.hash)
            if dep is None:
                raise StoreError(
                    f"{node.name}/{node.hash}, a dependency of {build.name}/{build.hash}, is "
                    f"not in the store {store.root} (fetch {build.name}/{build.hash} again)"
                )
            selected[dep.hash] = dep
    return [selected[h] for h in sorted(selected)]


def _copy_verified(src: Path, dst: Path, ref: BlobRef) -> int:
    """Copy *src* to *dst* checking its sha256 and size against *ref*; returns the size."""
    digest = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                fout.write(chunk)
    except OSError as exc:
        raise StoreError(f"{src}: cannot copy to {dst}: {exc.strerror or exc}") from None
    if digest.hexdigest() != ref.checksum or size != ref.size:
        raise VerificationError(
            f"{src}: sha256 {digest.hexdigest()} ({size} bytes) in the store, expected "
            f"{ref.checksum} ({ref.size} bytes): run 'cacheclient verify --repair'"
        )
    return size


def _check_metadata(store: Store, trust: TrustStore, build: StoredBuild) -> bytes:
    """The metadata file of *build*, verified again (signature by the recorded, still trusted
    signer); the blobs it names must be the ones the store's record names."""
    where = str(store.root / build.metadata_path)
    raw = store.read_file(build.metadata_path)
    if raw is None:
        raise StoreError(f"{where}: missing (run 'cacheclient verify --repair')")
    if build.signer is not None:
        payload, signer = trust.verify_clearsigned(raw, where)
        if signer != build.signer:
            raise VerificationError(f"{where}: signed by {signer}, the store says {build.signer}")
    else:
        text = decode_text(raw, where)
        payload = (
            split_clearsigned(text, where).payload.encode("utf-8") if is_clearsigned(text) else raw
        )
    if build.layout == 3:
        manifest = parse_manifest(payload, where)
        named = (
            None if manifest.tarball is None else manifest.tarball.checksum,
            None if manifest.spec_blob is None else manifest.spec_blob.checksum,
        )
        if named != (build.tarball.checksum, build.spec_blob.checksum):
            raise VerificationError(f"{where}: names other blobs than the store's record")
    elif hashlib.sha256(payload).hexdigest() != build.spec_blob.checksum:
        raise VerificationError(f"{where}: its JSON is not the store's verified spec blob")
    return raw


def _spec_blob(store: Store, build: StoredBuild) -> IndexedSpec:
    """The stored spec blob of *build*, re-hashed and parsed."""
    path = store.blob_path(build.spec_blob.checksum)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if hashlib.sha256(data).hexdigest() != build.spec_blob.checksum:
        raise VerificationError(f"{path}: corrupt (run 'cacheclient verify --repair')")
    spec = indexed_spec(data, str(path))
    if spec.root_hash != build.hash:
        raise VerificationError(f"{path}: spec is for /{spec.root_hash}, not /{build.hash}")
    return spec


def _fresh_dir(dest: Path) -> Path:
    """A new empty directory beside *dest* (mode from the umask) to build the export in."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest}: exists and is not an empty directory")
    work = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work.mkdir()
    except OSError as exc:
        raise StoreError(f"{dest}: cannot create: {exc.strerror or exc}") from None
    return work


def _copy_build(store: Store, trust: TrustStore, build: StoredBuild, target: Store) -> int:
    """Copy one build's metadata file and blobs into *target*, verifying them; bytes copied."""
    if not well_formed(build):
        raise StoreError(
            f"{store.root}: the record of {build.name}/{build.hash} names paths or blobs outside "
            "the mirror layout (run 'cacheclient verify --repair')"
        )
    for ref in (build.tarball, build.spec_blob):
        if not store.pin(ref.checksum):
            raise StoreError(
                f"blob {ref.checksum} of {build.name}/{build.hash} is missing from the store "
                f"{store.root} (run 'cacheclient verify --repair', then fetch it again)"
            )
    target.write_file(build.metadata_path, _check_metadata(store, trust, build))
    if build.layout == 3:
        return sum(
            _copy_verified(store.blob_path(ref.checksum), target.root / ref.path, ref)
            for ref in (build.tarball, build.spec_blob)
        )
    if not build.tarball_alias:
        raise StoreError(f"{build.name}/{build.hash}: the store records no v2 tarball name")
    tarball = store.blob_path(build.tarball.checksum)
    return _copy_verified(tarball, target.root / build.tarball_alias, build.tarball)


def export_mirror(
    store: Store, builds: Sequence[StoredBuild], dest: Path, *, trust: TrustStore | None = None
) -> ExportReport:
    """Write *builds* (closures already included, see :func:`select_builds`) as a mirror at
    *dest*, which must not exist or be an empty directory."""
    trust = trust or TrustStore(store.trust_dir)
    dest = dest.expanduser().absolute()
    work = _fresh_dir(dest)
    try:
        target = Store(work)
        target.ensure()
        copied = 0
        specs: dict[str, IndexedSpec] = {}
        for build in builds:
            copied += _copy_build(store, trust, build, target)
            specs[build.hash] = _spec_blob(store, build)
        keys: dict[str, bytes] = {}
        for fpr in sorted({b.signer for b in builds if b.signer}):
            data = trust.public_key(fpr)
            if data is not None:
                keys[fpr] = data
        report, _ = publish_mirror(target, builds, specs, keys, v2_blobs_manifest=False)
        target.close()
        shutil.rmtree(work / ".cacheclient", ignore_errors=True)
        if dest.exists():
            dest.rmdir()
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportReport(dest=dest, builds=tuple(builds), publication=report, bytes_copied=copied)
