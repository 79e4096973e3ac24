"""Push stored builds to an OCI registry, laid out exactly as Spack lays out an OCI build cache.

For each build: its closure's tarballs as layers (dependencies first, its own last), a config
blob holding the spec, an image manifest tagged ``<name>-<version>-<hash>.spack``; then the
``index.spack`` image is brought up to date. The order keeps the registry consistent at every
moment: blobs before the manifest that names them, tags before the index that lists them, so a
push interrupted anywhere leaves nothing that points at something missing.

Blobs the repository already has are not uploaded (HEAD), nor is a tag that already names the
same manifest: a second push of the same builds uploads nothing. Blobs another repository of the
same registry holds are mounted (``mount_from``) instead of uploaded.

Registries have no compare-and-swap on tags, so the index is merged, not overwritten: a pusher
re-reads the index and the tag list, adds every build tag the index misses (its own and anybody
else's), writes the union, and repeats until a re-read shows nothing missing. Whoever writes last
then also sees the tags of every pusher that finished before, so concurrent pushers from several
runners never lose each other's builds.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import archspec.cpu

from cacheclient.errors import CacheClientError, MetadataError, VerificationError
from cacheclient.events import get_logger
from cacheclient.metadata.oci_image import (
    EMPTY_CONFIG,
    INDEX_TAG,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    blob_relative,
    build_config,
    build_manifest,
    build_tag,
    index_image,
    is_build_tag,
    oci_architecture,
    parse_image_manifest,
    read_config_spec,
)
from cacheclient.mirrors.oci_index import database_json
from cacheclient.mirrors.push_prepare import PreparedBuild, uncompressed_digest
from cacheclient.model import BlobRef
from cacheclient.store import Store
from cacheclient.transport import join_url
from cacheclient.transport.oci import OciRef, OciTransport

__all__ = ["PushReport", "PushedBuild", "push_to_registry"]


def __dir__() -> list[str]:
    return __all__


_LOG = get_logger("cacheclient.push")
INDEX_ROUNDS = 8
"""How many times the index is re-read and merged before giving up."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PushedBuild:
    hash: str
    name: str
    version: str
    tag: str
    manifest_digest: str
    blobs_uploaded: int
    blobs_skipped: int
    bytes_uploaded: int
    tagged: bool
    """False when the tag already named this exact manifest."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "name": self.name,
            "version": self.version,
            "tag": self.tag,
            "manifest_digest": self.manifest_digest,
            "blobs_uploaded": self.blobs_uploaded,
            "blobs_skipped": self.blobs_skipped,
            "bytes_uploaded": self.bytes_uploaded,
            "tagged": self.tagged,
        }


@dataclass(kw_only=True)
class PushReport:
    destination: str
    builds: list[PushedBuild] = field(default_factory=list)
    index_written: bool = False
    index_builds: int = 0
    index_rounds: int = 0

    @property
    def blobs_uploaded(self) -> int:
        return sum(b.blobs_uploaded for b in self.builds)

    @property
    def bytes_uploaded(self) -> int:
        return sum(b.bytes_uploaded for b in self.builds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "oci",
            "destination": self.destination,
            "builds": [b.to_dict() for b in self.builds],
            "blobs_uploaded": self.blobs_uploaded,
            "bytes_uploaded": self.bytes_uploaded,
            "index_written": self.index_written,
            "index_builds": self.index_builds,
            "index_rounds": self.index_rounds,
        }


def _architecture(target: str) -> str:
    known = archspec.cpu.TARGETS.get(target)
    family = str(known.family) if known is not None else target
    return oci_architecture(family)


def _description(prepared: PreparedBuild) -> str:
    root = prepared.record
    parts = [f"{root.name}@={root.version}", *root.variant_strings()]
    parts += [f"platform={root.platform}", f"os={root.os}", f"target={root.target}"]
    return " ".join(parts)


class _Pusher:
    def __init__(
        self,
        transport: OciTransport,
        ref: OciRef,
        store: Store,
        *,
        mount_from: str | None,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.transport = transport
        self.ref = ref
        self.store = store
        self.mount_from = mount_from
        self.progress = progress or (lambda _message: None)
        self._diff_ids: dict[str, str] = {}
        self._blob_locks: dict[str, threading.Lock] = {}
        self._pushed: set[str] = set()
        self._lock = threading.Lock()

    def _push_once(self, digest: str, size: int, source: Path | bytes) -> bool:
        """Make sure the repository has *digest*; True when this call uploaded it. Parallel
        builds sharing a layer wait for the one thread that pushes it."""
        with self._lock:
            blob_lock = self._blob_locks.setdefault(digest, threading.Lock())
        with blob_lock:
            if digest in self._pushed:
                return False
            result = self.transport.push_blob(
                self.ref, digest, size, source, mount_from=self.mount_from
            )
            self._pushed.add(digest)
            return result.uploaded

    def diff_id(self, blob: BlobRef) -> str:
        found = self._diff_ids.get(blob.checksum)
        if found is None:
            found = uncompressed_digest(self.store.blob_path(blob.checksum), blob.checksum)
            self._diff_ids[blob.checksum] = found
        return found

    def push_build(self, prepared: PreparedBuild) -> PushedBuild:
        uploaded = skipped = sent = 0
        layers = [blob for _node, blob in prepared.layers]
        diff_ids = [self.diff_id(blob) for blob in layers]  # reads and checks every layer
        for blob in layers:
            path = self.store.blob_path(blob.checksum)
            if self._push_once(f"sha256:{blob.checksum}", blob.size, path):
                uploaded += 1
                sent += blob.size
            else:
                skipped += 1
        config = build_config(
            prepared.document,
            architecture=_architecture(prepared.record.target),
            diff_ids=diff_ids,
            tarball=layers[-1],
        )
        config_ref = BlobRef(
            media_type=OCI_CONFIG, checksum=hashlib.sha256(config).hexdigest(), size=len(config)
        )
        if self._push_once(f"sha256:{config_ref.checksum}", config_ref.size, config):
            uploaded += 1
            sent += config_ref.size
        else:
            skipped += 1
        layer_refs = [
            BlobRef(media_type=OCI_LAYER, checksum=b.checksum, size=b.size, compression="gzip")
            for b in layers
        ]
        manifest = build_manifest(config_ref, layer_refs, description=_description(prepared))
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        tag = build_tag(prepared.build.name, prepared.build.version, prepared.build.hash)
        current = self.transport.manifest(self.ref, tag)
        tagged = current is None or current[1] != digest
        if tagged:
            self.transport.put_manifest(self.ref, tag, manifest, OCI_MANIFEST)
        self.progress(
            f"pushed {prepared.label} as {tag}: {uploaded} blob(s) uploaded, {skipped} present"
        )
        return PushedBuild(
            hash=prepared.build.hash,
            name=prepared.build.name,
            version=prepared.build.version,
            tag=tag,
            manifest_digest=digest,
            blobs_uploaded=uploaded,
            blobs_skipped=skipped,
            bytes_uploaded=sent,
            tagged=tagged,
        )

    # -- the index ------------------------------------------------------------------------------
    def _read_index(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """``(nodes by hash, hashes in the cache)`` of the current ``index.spack`` (empty if
        there is none)."""
        got = self.transport.manifest(self.ref, INDEX_TAG)
        if got is None:
            return {}, set()
        where = join_url(self.ref.url, f"manifests/{INDEX_TAG}")
        manifest = parse_image_manifest(got[0], where)
        blob_url = join_url(self.ref.url, blob_relative(manifest.layers[0].checksum))
        data = self.transport.read(blob_url)
        if data is None:
            return {}, set()
        try:
            installs = json.loads(data)["database"]["installs"]
        except (ValueError, KeyError, TypeError):
            raise MetadataError(blob_url, "database.installs", "not a Spack database") from None
        nodes: dict[str, dict[str, Any]] = {}
        held: set[str] = set()
        if isinstance(installs, dict):
            for dag_hash, entry in installs.items():
                if isinstance(entry, dict) and isinstance(entry.get("spec"), dict):
                    nodes[str(dag_hash)] = entry["spec"]
                    if entry.get("in_buildcache"):
                        held.add(str(dag_hash))
        return nodes, held

    def _tag_nodes(self, tag: str) -> tuple[str, list[dict[str, Any]]] | None:
        """The hash and spec nodes of the build a tag names, or ``None`` if it is not one."""
        got = self.transport.manifest(self.ref, tag)
        if got is None:
            return None
        try:
            manifest = parse_image_manifest(got[0], tag)
            config_url = join_url(self.ref.url, blob_relative(manifest.config.checksum))
            config = self.transport.read(config_url)
            if config is None:
                return None
            spec = read_config_spec(config, config_url)
        except CacheClientError:
            return None
        if build_tag(spec.root.name, spec.root.version, spec.root.hash) != tag:
            return None
        nodes = json.loads(config)["spec"]["nodes"]
        return spec.root.hash, [n for n in nodes if isinstance(n, dict)]

    @staticmethod
    def _tag_hash(tag: str) -> str | None:
        last = tag[: -len(".spack")].rsplit("-", 1)[-1]
        return last if len(last) == 32 else None

    def update_index(self, pushed: Sequence[PreparedBuild], report: PushReport) -> None:
        ours: dict[str, list[dict[str, Any]]] = {
            p.build.hash: list(p.document["spec"]["nodes"]) for p in pushed
        }
        for round_number in range(1, INDEX_ROUNDS + 1):
            report.index_rounds = round_number
            try:
                nodes, held = self._read_index()
            except (MetadataError, VerificationError) as exc:
                # A broken index is rebuilt from the tags (every build tag is "missing").
                _LOG.warning("index.spack unreadable, rebuilding it from the tags: %s", exc)
                nodes, held = {}, set()
            missing: dict[str, list[dict[str, Any]]] = {
                h: n for h, n in ours.items() if h not in held
            }
            for tag in self.transport.list_tags(self.ref):
                if not is_build_tag(tag):
                    continue
                tag_hash = self._tag_hash(tag)
                if tag_hash is not None and (tag_hash in held or tag_hash in missing):
                    continue
                found = self._tag_nodes(tag)
                if found is not None and found[0] not in held:
                    missing[found[0]] = found[1]
            report.index_builds = len(held)
            if not missing:
                return
            for dag_hash, spec_nodes in missing.items():
                for node in spec_nodes:
                    node_hash = node.get("hash")
                    if isinstance(node_hash, str):
                        nodes.setdefault(node_hash, node)
                held.add(dag_hash)
            self._write_index(nodes, held)
            report.index_written = True
            report.index_builds = len(held)
            self.progress(f"index.spack now lists {len(held)} build(s)")
            time.sleep(random.uniform(0.05, 0.25))  # noqa: S311 - jitter between pushers
        raise CacheClientError(
            f"{self.ref.url}: the index kept changing under concurrent pushes "
            f"({INDEX_ROUNDS} rounds); run the push again"
        )

    def _write_index(self, nodes: dict[str, dict[str, Any]], held: set[str]) -> None:
        data = database_json(nodes, held)
        db = BlobRef(
            media_type=OCI_LAYER, checksum=hashlib.sha256(data).hexdigest(), size=len(data)
        )
        self._push_once(f"sha256:{db.checksum}", db.size, data)
        empty = hashlib.sha256(EMPTY_CONFIG).hexdigest()
        self._push_once(f"sha256:{empty}", len(EMPTY_CONFIG), EMPTY_CONFIG)
        self.transport.put_manifest(self.ref, INDEX_TAG, index_image(db), OCI_MANIFEST)


def push_to_registry(
    builds: Sequence[PreparedBuild],
    ref: OciRef,
    transport: OciTransport,
    store: Store,
    *,
    update_index: bool = True,
    mount_from: str | None = None,
    progress: Callable[[str], None] | None = None,
    jobs: int = 8,
) -> PushReport:
    """Push *builds* to the repository *ref*, then merge them into its ``index.spack``."""
    pusher = _Pusher(transport, ref, store, mount_from=mount_from, progress=progress)
    report = PushReport(destination=ref.url)
    # Builds go up in parallel; a layer two of them share may be uploaded twice at worst (the
    # registry keeps one copy). Each build's tag is written only after its own blobs.
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        report.builds.extend(pool.map(pusher.push_build, builds))
    if update_index:
        pusher.update_index(builds, report)
    return report
