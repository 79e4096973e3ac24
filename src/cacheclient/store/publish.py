"""Publish a store (or an exported copy of it) the way each Spack reads a binary mirror.

What is written, from the builds a directory holds (FORMATS §2, Spack 1.1 and 0.23 readers):

- **v3** (builds that came from layout-v3 mirrors): ``v3/manifests/index/index.manifest.json``
  and its ``db.v8`` blob, every node in specfile-5 form (:mod:`cacheclient.metadata.indexdoc`).
  Always written, empty when no v3 build is held, so the v3 index never lists a build the v3
  layout does not have.
- **v2** (builds that came from layout-v2 mirrors, kept byte-for-byte in ``build_cache/``):
  ``build_cache/index.json`` at the database version their spec files need (7 for Spack
  0.21-0.23 caches, 8 when one of them is specfile format 5) and ``index.json.hash``. Spack 1.1
  reads both indexes of one mirror and lists the union; Spack 0.23 reads only this one.
- **keys**: for every key that signed a held build *and* is trusted by the store, the armoured
  public key where each Spack looks: ``v3/manifests/key/<FPR>.key.manifest.json`` (blob
  ``application/pgp-keys``) with ``v3/manifests/key/keys.manifest.json`` (blob
  ``application/vnd.spack.keyindex.v1+json``) for signers of v3 builds, and
  ``build_cache/_pgp/<FPR>.pub`` with ``build_cache/_pgp/index.json`` for signers of v2 builds.
  A key the store does not trust is never published; a key no longer trusted, or no longer
  signing any held build, is withdrawn.
- **hygiene**: index and key blobs that no manifest names any more (superseded by this
  publication or an earlier one) are removed, unless some process still uses them, so Spack's
  ``buildcache prune`` finds no orphan. A store also lists
  the blobs of its v2 builds (their tarball, whose v2 name is a hard link to it, and their
  verified spec JSON) in ``.cacheclient/v2-blobs.manifest.json``, a manifest in the v3 format
  that no Spack command reads except ``prune``, which then counts them as referenced.

Every file is replaced atomically, under the store's ``index`` lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cacheclient.errors import CacheClientError
from cacheclient.metadata.armor import armor_public_key
from cacheclient.metadata.indexdoc import IndexedSpec, index_document, indexed_spec
from cacheclient.metadata.layout import INDEX_V2, INDEX_V2_HASH, INDEX_V3, KEYS_V3
from cacheclient.model import BlobRef, is_valid_hash
from cacheclient.store.core import Store, StoredBuild
from cacheclient.trust import TrustStore

__all__ = [
    "KEY_INDEX_V2",
    "MEDIA_DB_PREFIX",
    "MEDIA_KEY",
    "MEDIA_KEY_INDEX",
    "V2_BLOBS_MANIFEST",
    "PublishReport",
    "is_fingerprint",
    "key_manifest_path",
    "key_pub_path",
    "publish",
    "publish_mirror",
    "published_blobs",
    "spec_of",
    "well_formed",
]


def __dir__() -> list[str]:
    return __all__


MEDIA_DB_PREFIX = "application/vnd.spack.db.v"
MEDIA_KEY = "application/pgp-keys"
MEDIA_KEY_INDEX = "application/vnd.spack.keyindex.v1+json"
KEY_INDEX_V2 = "build_cache/_pgp/index.json"
V2_BLOBS_MANIFEST = ".cacheclient/v2-blobs.manifest.json"
_KEY_DIR_V3 = "v3/manifests/key"
_KEY_DIR_V2 = "build_cache/_pgp"


def key_manifest_path(fingerprint: str) -> str:
    return f"{_KEY_DIR_V3}/{fingerprint}.key.manifest.json"


def key_pub_path(fingerprint: str) -> str:
    return f"{_KEY_DIR_V2}/{fingerprint}.pub"


@dataclass(frozen=True, kw_only=True, slots=True)
class PublishReport:
    """What one publication wrote (paths relative to the mirror root)."""

    index_v3: str
    builds_v3: int
    index_v2: str | None
    db_version_v2: str | None
    builds_v2: int
    keys_v3: tuple[str, ...]
    keys_v2: tuple[str, ...]
    withheld_keys: tuple[str, ...]
    """Signers of held builds that the store does not trust: never published."""
    pruned_blobs: tuple[str, ...] = ()

    @property
    def index_manifest(self) -> str:
        return self.index_v3

    def to_dict(self) -> dict[str, Any]:
        return {
            "index_v3": self.index_v3,
            "builds_v3": self.builds_v3,
            "index_v2": self.index_v2,
            "db_version_v2": self.db_version_v2,
            "builds_v2": self.builds_v2,
            "keys_v3": list(self.keys_v3),
            "keys_v2": list(self.keys_v2),
            "withheld_keys": list(self.withheld_keys),
            "pruned_blobs": list(self.pruned_blobs),
        }


def _manifest(records: Iterable[BlobRef]) -> bytes:
    """A v3 manifest as Spack writes it (one element per line, no indent)."""
    doc = {
        "version": 3,
        "data": [
            {
                "contentLength": r.size,
                "mediaType": r.media_type,
                "compression": r.compression,
                "checksumAlgorithm": r.checksum_algorithm,
                "checksum": r.checksum,
            }
            for r in records
        ],
    }
    return json.dumps(doc, indent=0, separators=(",", ":")).encode() + b"\n"


def _manifest_checksums(raw: bytes | None) -> set[str]:
    """The blob checksums an (unsigned) manifest we wrote names; empty when unreadable."""
    if raw is None:
        return set()
    try:
        data = json.loads(raw)
        return {str(r["checksum"]) for r in data["data"] if isinstance(r, dict)}
    except (ValueError, KeyError, TypeError):
        return set()


_FINGERPRINT = re.compile(r"^[0-9A-F]{40}(?:[0-9A-F]{24})?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_fingerprint(value: str) -> bool:
    """Whether *value* is a full OpenPGP fingerprint (v4: 40, v5: 64 upper-case hex digits)."""
    return bool(_FINGERPRINT.match(value))


def _inside(relative: str | None, prefix: str) -> bool:
    if relative is None:
        return False
    parts = relative.split("/")
    clean = ".." not in parts and "" not in parts and not any(c in relative for c in "\\\0")
    return relative.startswith(prefix) and clean


def well_formed(build: StoredBuild) -> bool:
    """Whether a build record (read back from the store, so untrusted) names only paths inside
    its layout, sha256 blobs and a well-formed signer: anything else is never published."""
    blobs_ok = all(
        r.checksum_algorithm == "sha256" and _SHA256.match(r.checksum)
        for r in (build.tarball, build.spec_blob)
    )
    if build.layout == 3:
        paths_ok = _inside(build.metadata_path, "v3/manifests/spec/")
    elif build.layout == 2:
        paths_ok = _inside(build.metadata_path, "build_cache/") and _inside(
            build.tarball_alias, "build_cache/"
        )
    else:
        paths_ok = False
    signer_ok = build.signer is None or is_fingerprint(build.signer)
    return is_valid_hash(build.hash) and blobs_ok and paths_ok and signer_ok


def spec_of(store: Store, build: StoredBuild) -> IndexedSpec | None:
    """The nodes of a stored build's spec blob, re-hashed; ``None`` when it cannot be read,
    does not hash to its name, or describes another build."""
    path = store.blob_path(build.spec_blob.checksum)
    try:
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != build.spec_blob.checksum:
            return None
        spec = indexed_spec(raw, str(path))
    except (OSError, CacheClientError):
        return None
    return spec if spec.root_hash == build.hash else None


class _Writer:
    """Writes into a store-shaped directory and remembers the blobs it put there."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.blobs: set[str] = set()

    def blob(self, data: bytes, media_type: str) -> BlobRef:
        digest = self.store.put_blob(data, pin=True)
        self.blobs.add(digest)
        return BlobRef(media_type=media_type, checksum=digest, size=len(data))

    def file(self, relative: str, data: bytes) -> None:
        if self.store.read_file(relative) != data:
            self.store.write_file(relative, data)

    def remove(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.store.root / relative).unlink()


def _listing(folder: Path, suffix: str) -> list[str]:
    try:
        return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))
    except OSError:
        return []


def publish_mirror(
    target: Store,
    builds: Sequence[StoredBuild],
    specs: Mapping[str, IndexedSpec],
    keys: Mapping[str, bytes],
    *,
    v2_blobs_manifest: bool = True,
) -> tuple[PublishReport, set[str]]:
    """Write indexes and keys for *builds* into *target* (a store, or an export directory).

    :param specs: the spec nodes of each build, by hash (builds without one are left out).
    :param keys: binary or armoured public key by fingerprint: the trusted signers to publish.
    :param v2_blobs_manifest: list the v2 builds' blobs in :data:`V2_BLOBS_MANIFEST`.
    :returns: the report and the blobs the publication references (index, keys).
    """
    writer = _Writer(target)
    v3 = [b for b in builds if b.layout == 3 and b.hash in specs]
    v2 = [b for b in builds if b.layout == 2 and b.hash in specs]

    # v3 index: always present, only v3 builds in it.
    version, db = index_document([specs[b.hash] for b in v3], {b.hash for b in v3}, "8")
    index_ref = writer.blob(db, f"{MEDIA_DB_PREFIX}{version}+json")
    writer.file(INDEX_V3, _manifest([index_ref]))

    # v2 index: only when v2 builds are held, at the DB version their spec files need.
    index_v2: str | None = None
    db_v2: str | None = None
    if v2:
        db_v2, db2 = index_document([specs[b.hash] for b in v2], {b.hash for b in v2})
        writer.file(INDEX_V2, db2)
        writer.file(INDEX_V2_HASH, hashlib.sha256(db2).hexdigest().encode() + b"\n")
        index_v2 = INDEX_V2
    else:
        writer.remove(INDEX_V2_HASH)
        writer.remove(INDEX_V2)

    # Keys: trusted signers only, per layout.
    signers3 = sorted({b.signer for b in v3 if b.signer})
    signers2 = sorted({b.signer for b in v2 if b.signer})
    withheld = tuple(sorted({s for s in (*signers3, *signers2) if s not in keys}))
    keys3 = tuple(s for s in signers3 if s in keys)
    keys2 = tuple(s for s in signers2 if s in keys)
    for fpr in keys3:
        ref = writer.blob(armor_public_key(keys[fpr]).encode(), MEDIA_KEY)
        writer.file(key_manifest_path(fpr), _manifest([ref]))
    for stale in _listing(target.root / _KEY_DIR_V3, ".key.manifest.json"):
        if stale not in keys3:
            writer.remove(key_manifest_path(stale))
    if keys3:
        index = json.dumps({"keys": {fpr: {} for fpr in keys3}}).encode()
        writer.file(KEYS_V3, _manifest([writer.blob(index, MEDIA_KEY_INDEX)]))
    else:
        writer.remove(KEYS_V3)
    for fpr in keys2:
        writer.file(key_pub_path(fpr), armor_public_key(keys[fpr]).encode())
    for stale in _listing(target.root / _KEY_DIR_V2, ".pub"):
        if stale not in keys2:
            writer.remove(key_pub_path(stale))
    if keys2:
        writer.file(KEY_INDEX_V2, json.dumps({"keys": {fpr: {} for fpr in keys2}}).encode())
    else:
        writer.remove(KEY_INDEX_V2)

    # The v2 builds' own blobs, named in a manifest so Spack's prune sees them referenced.
    held = [ref for b in v2 for ref in (b.tarball, b.spec_blob) if target.has_blob(ref.checksum)]
    if v2_blobs_manifest and held:
        writer.file(V2_BLOBS_MANIFEST, _manifest(held))
    else:
        writer.remove(V2_BLOBS_MANIFEST)

    report = PublishReport(
        index_v3=INDEX_V3,
        builds_v3=len(v3),
        index_v2=index_v2,
        db_version_v2=db_v2,
        builds_v2=len(v2),
        keys_v3=keys3,
        keys_v2=keys2,
        withheld_keys=withheld,
    )
    return report, writer.blobs


def published_blobs(store: Store) -> set[str]:
    """The blobs the current publication references (index, key index, keys): ``gc`` keeps
    them, as the manifests naming them must stay valid."""
    out = _manifest_checksums(store.read_file(INDEX_V3))
    out |= _manifest_checksums(store.read_file(KEYS_V3))
    for fpr in _listing(store.root / _KEY_DIR_V3, ".key.manifest.json"):
        out |= _manifest_checksums(store.read_file(key_manifest_path(fpr)))
    return out


def _trusted_keys(trust: TrustStore, fingerprints: Iterable[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for fpr in sorted({f for f in fingerprints if is_fingerprint(f)}):
        data = trust.public_key(fpr)
        if data is not None:
            out[fpr] = data
    return out


_OURS = (b'{"database":', b'{"keys":', b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
"""How the blobs only a publication writes begin (index, key index, armoured key)."""


def _is_publication_blob(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(40)
    except OSError:
        return False
    return head.startswith(_OURS)


def publish(
    store: Store,
    *,
    trust: TrustStore | None = None,
    spec_reader: Callable[[Store, StoredBuild], IndexedSpec | None] = spec_of,
) -> PublishReport:
    """Publish *store* (indexes of both layouts, trusted keys) and prune what it supersedes.

    Builds whose tarball or spec blob is gone are left out. Index and key blobs no manifest
    names any more are removed, unless a process uses them (then the next publication does).
    """
    trust = trust or TrustStore(store.trust_dir)
    with store.named_lock("index"):
        builds = [
            b
            for b in store.builds()
            if well_formed(b)
            and store.has_blob(b.tarball.checksum)
            and store.has_blob(b.spec_blob.checksum)
        ]
        specs: dict[str, IndexedSpec] = {}
        for build in builds:
            spec = spec_reader(store, build)
            if spec is not None:
                specs[build.hash] = spec
        keys = _trusted_keys(trust, (b.signer for b in builds if b.signer))
        report, written = publish_mirror(store, builds, specs, keys)
        for digest in written:
            store.unpin(digest)  # the manifests name them now, and gc keeps those
        referenced = published_blobs(store) | {
            ref.checksum for b in store.builds() for ref in (b.tarball, b.spec_blob)
        }
        pruned = [
            digest
            for digest, path in store.iter_blobs()
            if digest not in referenced
            and _is_publication_blob(path)
            and store.remove_blob(digest)  # not while some process uses it
        ]
    return PublishReport(
        index_v3=report.index_v3,
        builds_v3=report.builds_v3,
        index_v2=report.index_v2,
        db_version_v2=report.db_version_v2,
        builds_v2=report.builds_v2,
        keys_v3=report.keys_v3,
        keys_v2=report.keys_v2,
        withheld_keys=report.withheld_keys,
        pruned_blobs=tuple(pruned),
    )
