"""Lockfiles: the exact builds a warm run selected, per host profile, byte-for-byte reproducible.

A lock names, per profile and requested spec, the selected root hash and its runtime closure;
per build, the manifest path, blob digests and sizes, the signer and the mirror it came from.
The same inputs and the same mirror state give a byte-identical file (no timestamps, sorted
keys), and :meth:`Lock.cache_key` is a digest CI systems can use as their cache key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cacheclient.ci.manifest import MirrorEntry, Profile
from cacheclient.errors import MetadataError, redact
from cacheclient.metadata.layout import OCI_LAYOUT, spec_manifest_path
from cacheclient.model import BlobRef, BuildRecord, is_valid_hash

__all__ = ["LOCK_VERSION", "Lock", "LockedBuild", "LockedProfile", "LockedSpec"]


def __dir__() -> list[str]:
    return __all__


LOCK_VERSION = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class LockedBuild:
    hash: str
    name: str
    version: str
    platform: str
    os: str
    target: str
    mirror: str
    manifest: str | None
    layout: int
    signer: str | None
    blobs: tuple[BlobRef, ...]
    compiler: str | None = None
    """Needed to spell v2 file names (``<arch>-<compiler>-<version>-...``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "compiler": self.compiler,
            "version": self.version,
            "platform": self.platform,
            "os": self.os,
            "target": self.target,
            "mirror": redact(self.mirror),  # never user:password@ (use ~/.netrc)
            "manifest": self.manifest,
            "layout": self.layout,
            "signer": self.signer,
            "blobs": [
                {
                    "mediaType": b.media_type,
                    "checksumAlgorithm": b.checksum_algorithm,
                    "checksum": b.checksum,
                    "size": b.size,
                    "compression": b.compression,
                }
                for b in self.blobs
            ],
        }

    def to_record(self) -> BuildRecord:
        """A BuildRecord the fetcher can use without any index."""
        return BuildRecord(
            name=self.name,
            version=self.version,
            hash=self.hash,
            platform=self.platform,
            os=self.os,
            target=self.target,
            compiler=self.compiler,
            stacks=(self.mirror,),
            manifest_path=self.manifest if self.layout == 3 else None,
            blobs=self.blobs,
            dependencies_known=False,  # the lock pins the closure; the signed specs hold edges
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LockedSpec:
    request: str
    root: str | None
    closure: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class LockedProfile:
    profile: Profile
    specs: tuple[LockedSpec, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Lock:
    mirrors: tuple[MirrorEntry, ...]
    profiles: tuple[LockedProfile, ...]
    builds: Mapping[str, LockedBuild] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lock_version": LOCK_VERSION,
            "mirrors": [{"url": redact(m.url), "signed": m.signed} for m in self.mirrors],
            "profiles": [
                {
                    "profile": p.profile.to_dict(),
                    "specs": [
                        {"request": s.request, "root": s.root, "closure": list(s.closure)}
                        for s in p.specs
                    ],
                }
                for p in self.profiles
            ],
            "builds": {h: self.builds[h].to_dict() for h in sorted(self.builds)},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def cache_key(self) -> str:
        """``sha256:<hex>`` of the lock's canonical content."""
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()
        return f"sha256:{digest}"

    def all_hashes(self) -> list[str]:
        return sorted(self.builds)

    @classmethod
    def from_json(cls, text: str, source: str) -> Lock:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"not a JSON lockfile: {exc.msg} at line {exc.lineno}"
            raise MetadataError(source, "", problem) from None
        except (ValueError, RecursionError) as exc:  # too-long numbers, too-deep nesting
            raise MetadataError(source, "", f"not a usable lockfile: {str(exc)[:80]}") from None
        return _LockReader(source).read(data)


class _LockReader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> MetadataError:
        return MetadataError(self.source, path, problem)

    def get(self, obj: Any, key: str, path: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise self.fail(path, "missing")
        value = obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(path, f"has the wrong type ({type(value).__name__})")
        return value

    def opt_str(self, obj: dict[str, Any], key: str, path: str) -> str | None:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(path, "must be a string or null")
        return value

    def read(self, data: Any) -> Lock:
        version = self.get(data, "lock_version", "lock_version", int)
        if version != LOCK_VERSION:
            raise self.fail("lock_version", f"unsupported lock version {version}")
        mirrors = tuple(
            MirrorEntry(
                url=self.get(m, "url", f"mirrors[{i}].url", str),
                signed=self.get(m, "signed", f"mirrors[{i}].signed", bool),
            )
            for i, m in enumerate(self.get(data, "mirrors", "mirrors", list))
        )
        builds: dict[str, LockedBuild] = {}
        for h, raw in self.get(data, "builds", "builds", dict).items():
            builds[h] = self.read_build(h, raw, f"builds.{h}")
        profiles = []
        for i, raw in enumerate(self.get(data, "profiles", "profiles", list)):
            path = f"profiles[{i}]"
            prof = self.get(raw, "profile", f"{path}.profile", dict)
            profile = Profile(
                platform=self.get(prof, "platform", f"{path}.profile.platform", str),
                os=self.get(prof, "os", f"{path}.profile.os", str),
                target=self.get(prof, "target", f"{path}.profile.target", str),
                os_compat=self.get(prof, "os_compat", f"{path}.profile.os_compat", str),
                libc=self.opt_str(prof, "libc", f"{path}.profile.libc"),
            )
            specs = []
            for j, s in enumerate(self.get(raw, "specs", f"{path}.specs", list)):
                spath = f"{path}.specs[{j}]"
                root = self.opt_str(s, "root", f"{spath}.root")
                closure = tuple(self.get(s, "closure", f"{spath}.closure", list))
                for k, h in enumerate(closure):
                    if h not in builds:
                        raise self.fail(f"{spath}.closure[{k}]", f"{h!r} is not in builds")
                if root is not None and root not in builds:
                    raise self.fail(f"{spath}.root", f"{root!r} is not in builds")
                specs.append(
                    LockedSpec(
                        request=self.get(s, "request", f"{spath}.request", str),
                        root=root,
                        closure=closure,
                    )
                )
            profiles.append(LockedProfile(profile=profile, specs=tuple(specs)))
        return Lock(mirrors=mirrors, profiles=tuple(profiles), builds=builds)

    def read_build(self, h: str, raw: Any, path: str) -> LockedBuild:
        if not is_valid_hash(h):
            raise self.fail(path, "is not a 32-character DAG hash")
        blobs = []
        for i, b in enumerate(self.get(raw, "blobs", f"{path}.blobs", list)):
            bpath = f"{path}.blobs[{i}]"
            checksum = self.get(b, "checksum", f"{bpath}.checksum", str)
            algorithm = self.get(b, "checksumAlgorithm", f"{bpath}.checksumAlgorithm", str)
            if algorithm != "sha256" or len(checksum) != 64 or not _is_hex(checksum):
                raise self.fail(f"{bpath}.checksum", "must be a sha256 hex digest")
            size = self.get(b, "size", f"{bpath}.size", int)
            if size < 0:
                raise self.fail(f"{bpath}.size", "must not be negative")
            blobs.append(
                BlobRef(
                    media_type=self.get(b, "mediaType", f"{bpath}.mediaType", str),
                    checksum=checksum,
                    checksum_algorithm=algorithm,
                    size=size,
                    compression=self.get(b, "compression", f"{bpath}.compression", str),
                )
            )
        manifest = self.opt_str(raw, "manifest", f"{path}.manifest")
        if manifest is not None and (manifest.startswith("/") or ".." in manifest.split("/")):
            raise self.fail(f"{path}.manifest", "must be a relative path inside the mirror")
        name = self.get(raw, "name", f"{path}.name", str)
        version = self.get(raw, "version", f"{path}.version", str)
        layout = self.get(raw, "layout", f"{path}.layout", int)
        pinned = {b.checksum for b in blobs}
        if manifest is not None and not _layout_path(manifest, layout, name, version, h, pinned):
            raise self.fail(
                f"{path}.manifest",
                f"{manifest!r} is not the layout-{layout} metadata path of {name}/{h}",
            )
        return LockedBuild(
            hash=h,
            name=name,
            version=version,
            platform=self.get(raw, "platform", f"{path}.platform", str),
            os=self.get(raw, "os", f"{path}.os", str),
            target=self.get(raw, "target", f"{path}.target", str),
            mirror=self.get(raw, "mirror", f"{path}.mirror", str),
            manifest=manifest,
            layout=layout,
            signer=self.opt_str(raw, "signer", f"{path}.signer"),
            blobs=tuple(blobs),
            compiler=self.opt_str(raw, "compiler", f"{path}.compiler"),
        )


def _layout_path(  # noqa: PLR0917 - the fields of one lock entry
    manifest: str, layout: int, name: str, version: str, dag_hash: str, pinned: set[str]
) -> bool:
    """Whether *manifest* is where a mirror of *layout* keeps the metadata of this build: the
    v3 spec manifest path exactly, a v2 ``build_cache/...-<hash>.spec.json[.sig]``, or for a
    registry the stored image manifest ``oci/manifests/sha256/<digest>.json`` of a digest the
    lock pins."""
    if layout == OCI_LAYOUT:
        found = _OCI_MANIFEST.match(manifest)
        return found is not None and found.group(1) in pinned
    if layout == 3:
        try:
            return manifest == spec_manifest_path(name, version, dag_hash)
        except MetadataError:
            return False
    if layout == 2:
        parts = manifest.split("/")
        return (
            len(parts) == 2
            and parts[0] == "build_cache"
            and parts[1].endswith((f"-{dag_hash}.spec.json", f"-{dag_hash}.spec.json.sig"))
        )
    return False


_OCI_MANIFEST = re.compile(r"^oci/manifests/sha256/([0-9a-f]{64})\.json$")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
