"""Write Spack-style binary mirrors (layout v3, and v2 where useful) from builds you describe.

This is a library for tests and tools: it produces the same files Spack writes, so every reader,
the fetcher and the installer can be exercised on mirrors holding any hash (including the
hashes of a real cache.spack.io page). Example::

    from cacheclient.mirrors.writer import MirrorBuild, fake_hash, write_mirror
    zlib = BuildRecord(name="zlib", version="1.3", hash=fake_hash("zlib"), platform="linux",
                       os="ubuntu24.04", target="x86_64_v3")
    mirror = write_mirror(tmp_path / "m", [MirrorBuild(record=zlib,
                                                       files={"lib/libz.txt": b"hello"})])
    mirror.url  # file:///.../m, readable by cacheclient.mirrors.open.open_catalog

What is written for each installable build (``record.installable``):

- a tar.gz laid out like Spack's: member names are the absolute install prefix without its
  leading ``/``, every parent directory has its own entry, the prefix holds
  ``.spack/binary_distribution`` (YAML: ``buildpath``, ``relative_prefix``, ``hash_to_prefix``,
  ``relocate_textfiles``/``relocate_binaries``/``relocate_links``, ...) and ``.spack/spec.json``;
  modes are 0644/0755, owner 0, mtime 0 (byte-for-byte reproducible);
- layout v3: the gzip spec blob, the tarball blob, and the spec manifest (clear-signed when a
  ``signer`` is given); layout v2: ``<name>.spec.json`` (or ``.spec.json.sig`` when signed, as
  Spack pushes one or the other) with ``binary_cache_checksum`` and the ``.spack`` tarball.

Records that are not installable (``in_buildcache: false`` dependencies, externals) only appear
in the index. Per mirror: the index (``database.version`` 8) as a v3 manifest + blob and/or a v2
``index.json`` + ``index.json.hash``, ``v3/layout.json``, and the public key when given.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from cacheclient.metadata.database import COMPILER_FLAGS
from cacheclient.metadata.layout import (
    INDEX_V2,
    INDEX_V2_HASH,
    INDEX_V3,
    KEYS_V3,
    LAYOUT_JSON,
    spec_manifest_path,
    v2_specfile_paths,
    v2_tarball_path,
)
from cacheclient.metadata.manifest import manifest_to_json
from cacheclient.model import BlobRef, BuildRecord, Manifest

__all__ = [
    "DEFAULT_BUILD_ROOT",
    "MEDIA_DB_V8",
    "MEDIA_INSTALL_V2",
    "MEDIA_SPEC_V5",
    "MirrorBuild",
    "WrittenBuild",
    "WrittenMirror",
    "build_prefix",
    "fake_hash",
    "gpg_clearsigner",
    "gpg_public_key",
    "make_tarball",
    "record_to_node",
    "write_mirror",
]


def __dir__() -> list[str]:
    return __all__


DEFAULT_BUILD_ROOT = (
    "/tmp/cacheclient-build/store/__spack_path_placeholder__/__spack_path_placeholder__/__s"  # noqa: S108
)
"""A padded build root, like the public caches use, so installs can relocate to shorter roots."""

MEDIA_INSTALL_V2 = "application/vnd.spack.install.v2.tar+gzip"
MEDIA_SPEC_V5 = "application/vnd.spack.spec.v5+json"
MEDIA_DB_V8 = "application/vnd.spack.db.v8+json"
MEDIA_KEY = "application/pgp-keys"
MEDIA_KEY_INDEX = "application/vnd.spack.keyindex.v1+json"

Signer = Callable[[str], str]
"""Turns text into its clear-signed form (e.g. ``GpgKey.clearsign`` or :func:`gpg_clearsigner`)."""


def fake_hash(seed: str) -> str:
    """A realistic 32-character DAG hash (base32 of SHA-1, lowercase) derived from *seed*.

    >>> fake_hash("zlib")
    'k6li6etzq5t24xniwfnayob226oq6m4l'
    """
    digest = hashlib.sha1(seed.encode(), usedforsecurity=False).digest()
    return base64.b32encode(digest).decode().lower()


def build_prefix(record: BuildRecord, build_root: str = DEFAULT_BUILD_ROOT) -> str:
    """The install prefix a build had on the builder: ``<root>/<platform>-<target>/<n>-<v>-<h>``."""
    leaf = f"{record.name}-{record.version}-{record.hash}"
    return f"{build_root}/{record.platform}-{record.target}/{leaf}"


@dataclass(frozen=True, kw_only=True, slots=True)
class MirrorBuild:
    """One build to write.

    :param record: what the index and spec metadata say (hash, name, version, arch, variants,
        dependencies, compiler, ``installable`` ...). Dependencies should be other builds of
        the same mirror (or ``extra_records``) so their nodes can be included.
    :param files: path inside the prefix -> content (``str`` is UTF-8 encoded).
    :param symlinks: path inside the prefix -> link target (absolute or relative).
    :param executables: paths among *files* that get mode 0755.
    :param prefix: the old install prefix (default :func:`build_prefix`).
    """

    record: BuildRecord
    files: Mapping[str, bytes | str] = field(default_factory=dict)
    symlinks: Mapping[str, str] = field(default_factory=dict)
    executables: frozenset[str] = frozenset()
    prefix: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WrittenBuild:
    """Where one build ended up. ``record`` carries ``manifest_path`` and ``blobs`` (v3)."""

    record: BuildRecord
    prefix: str
    tarball: BlobRef
    spec_blob: BlobRef | None = None
    manifest_path: str | None = None
    v2_specfile: str | None = None
    v2_tarball: str | None = None
    tarball_bytes: bytes = b""


@dataclass(frozen=True, kw_only=True, slots=True)
class WrittenMirror:
    """The result of :func:`write_mirror`."""

    root: Path
    builds: Mapping[str, WrittenBuild]
    index_blob: BlobRef | None = None
    layouts: tuple[int, ...] = (3,)

    @property
    def url(self) -> str:
        """``file://`` URL of the mirror root."""
        return self.root.resolve().as_uri()


def record_to_node(record: BuildRecord) -> dict[str, Any]:
    """A Spack specfile-format-5 node dict for *record* (compiler in ``annotations``)."""
    target: Any = dict(record.target_info) if record.target_info else record.target
    params: dict[str, Any] = {}
    for key, value in sorted(record.variants.items()):
        params[key] = list(value) if isinstance(value, tuple) else value
    for flag in sorted(COMPILER_FLAGS):
        params[flag] = []
    node: dict[str, Any] = {
        "name": record.name,
        "version": record.version,
        "arch": {"platform": record.platform, "platform_os": record.os, "target": target},
        "namespace": record.namespace or "builtin",
        "parameters": params,
        "package_hash": base64.b32encode(
            hashlib.sha256(f"{record.name}@{record.version}".encode()).digest()
        )
        .decode()
        .lower(),
    }
    if record.external_path is not None:
        node["external"] = {"path": record.external_path, "module": None, "extra_attributes": {}}
    if record.dependencies:
        node["dependencies"] = [
            {
                "name": d.name,
                "hash": d.hash,
                "parameters": {"deptypes": sorted(d.deptypes), "virtuals": list(d.virtuals)},
            }
            for d in record.dependencies
        ]
    annotations: dict[str, Any] = {"original_specfile_version": 5}
    if record.compiler is not None:
        annotations["compiler"] = record.compiler
    node["annotations"] = annotations
    node["hash"] = record.hash
    return node


def _closure(root: BuildRecord, known: Mapping[str, BuildRecord]) -> list[BuildRecord]:
    out: list[BuildRecord] = []
    seen: set[str] = set()
    stack = [root]
    while stack:
        record = stack.pop()
        if record.hash in seen:
            continue
        seen.add(record.hash)
        out.append(record)
        stack.extend(known[d.hash] for d in reversed(record.dependencies) if d.hash in known)
    return out


def _json_lines(obj: Any) -> str:
    return json.dumps(obj, indent=0, separators=(",", ":"))


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=buf, mtime=0) as out:
        out.write(data)
    return buf.getvalue()


def _tar_info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = link
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def make_tarball(
    prefix: str,
    files: Mapping[str, bytes],
    *,
    symlinks: Mapping[str, str] | None = None,
    executables: Iterable[str] = (),
    with_parents: bool = True,
) -> bytes:
    """A reproducible tar.gz of an install prefix, laid out like Spack's.

    Member names are *prefix* (without its leading ``/``) joined with each path; with
    *with_parents* every parent directory of the prefix has its own entry (Spack >= 0.22).
    """
    base = prefix.strip("/")
    execs = set(executables)
    links = dict(symlinks or {})
    dirs: set[str] = set()
    parts = base.split("/")
    start = 1 if with_parents else len(parts)
    for i in range(start, len(parts) + 1):
        dirs.add("/".join(parts[:i]))
    for rel in [*files, *links]:
        rel_parts = rel.strip("/").split("/")
        for i in range(1, len(rel_parts)):
            dirs.add(f"{base}/{'/'.join(rel_parts[:i])}")
    entries: list[tuple[str, tarfile.TarInfo, bytes | None]] = []
    for d in dirs:
        entries.append((d, _tar_info(d, tarfile.DIRTYPE, 0o755), None))
    for rel, data in files.items():
        name = f"{base}/{rel.strip('/')}"
        mode = 0o755 if rel in execs else 0o644
        entries.append((name, _tar_info(name, tarfile.REGTYPE, mode, len(data)), data))
    for rel, target in links.items():
        name = f"{base}/{rel.strip('/')}"
        entries.append((name, _tar_info(name, tarfile.SYMTYPE, 0o777, link=target), None))
    entries.sort(key=lambda e: e[0])
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for _, info, content in entries:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return _gzip(raw.getvalue())


def _binary_distribution(
    prefix: str,
    build_root: str,
    hash_to_prefix: Mapping[str, str],
    files: Mapping[str, bytes],
    symlinks: Mapping[str, str],
) -> bytes:
    needles = [p.encode() for p in hash_to_prefix.values()] + [build_root.encode()]
    binaries = sorted(p for p, d in files.items() if d.startswith(b"\x7fELF"))
    texts = sorted(
        p for p, d in files.items() if not d.startswith(b"\x7fELF") and any(n in d for n in needles)
    )
    links = sorted(p for p, t in symlinks.items() if t.startswith("/"))
    relative = prefix[len(build_root) + 1 :] if prefix.startswith(build_root + "/") else prefix
    store = build_root.split("/__spack_path_placeholder__", 1)[0]
    info = {
        "sbang_install_path": f"{store}/bin/sbang",
        "buildpath": build_root,
        "spackprefix": "/opt/spack",
        "relative_prefix": relative,
        "hardlinks_deduped": True,
        "hash_to_prefix": dict(hash_to_prefix),
        "relocate_binaries": binaries,
        "relocate_links": links,
        "relocate_textfiles": texts,
    }
    return yaml.safe_dump(info, default_flow_style=True, sort_keys=False, width=10**6).encode()


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _blob(root: Path, data: bytes, media_type: str, compression: str) -> BlobRef:
    ref = BlobRef(
        media_type=media_type,
        checksum=hashlib.sha256(data).hexdigest(),
        size=len(data),
        compression=compression,
    )
    _write(root / ref.path, data)
    return ref


def _database(records: Sequence[BuildRecord]) -> bytes:
    ref_count: dict[str, int] = {r.hash: 0 for r in records}
    for record in records:
        for dep in record.dependencies:
            if dep.hash in ref_count:
                ref_count[dep.hash] += 1
    installs = {
        r.hash: {
            "spec": record_to_node(r),
            "ref_count": ref_count[r.hash],
            "in_buildcache": r.installable,
        }
        for r in records
    }
    doc = {"database": {"version": "8", "installs": installs}}
    return json.dumps(doc, separators=(",", ":")).encode()


def write_mirror(
    root: Path | str,
    builds: Sequence[MirrorBuild],
    *,
    layouts: Sequence[int] = (3,),
    signer: Signer | None = None,
    public_key: str | None = None,
    key_fingerprint: str | None = None,
    extra_records: Sequence[BuildRecord] = (),
    build_root: str = DEFAULT_BUILD_ROOT,
    write_index: bool = True,
) -> WrittenMirror:
    """Write a mirror at *root* (created if needed) and describe what was written.

    :param layouts: any of ``3`` and ``2``.
    :param signer: clear-signs v3 spec manifests and v2 spec files (``.spec.json.sig``).
    :param public_key: ASCII-armoured key published in the mirror (needs *key_fingerprint*).
    :param extra_records: index-only records (e.g. external ``glibc``, build-only compilers);
        they are also included as nodes in the spec files of builds that depend on them.
    :param write_index: ``False`` leaves the index out (for "pushed after update-index" tests).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    known: dict[str, BuildRecord] = {r.hash: r for r in extra_records}
    prefixes: dict[str, str] = {}
    for build in builds:
        known[build.record.hash] = build.record
        prefixes[build.record.hash] = build.prefix or build_prefix(build.record, build_root)
    for record in extra_records:
        prefixes.setdefault(record.hash, record.external_path or build_prefix(record, build_root))
    written: dict[str, WrittenBuild] = {}
    for build in builds:
        record = build.record
        if not record.installable:
            continue
        nodes = _closure(record, known)
        spec_doc: dict[str, Any] = {
            "spec": {"_meta": {"version": 5}, "nodes": [record_to_node(n) for n in nodes]}
        }
        prefix = prefixes[record.hash]
        files = {k: v.encode() if isinstance(v, str) else v for k, v in build.files.items()}
        hash_to_prefix = {
            n.hash: prefixes[n.hash] for n in nodes if n.hash in prefixes and n.installable
        }
        all_files = dict(files)
        all_files[".spack/spec.json"] = json.dumps(spec_doc, separators=(",", ":")).encode()
        all_files[".spack/binary_distribution"] = _binary_distribution(
            prefix, build_root, hash_to_prefix, files, build.symlinks
        )
        tarball = make_tarball(
            prefix, all_files, symlinks=build.symlinks, executables=build.executables
        )
        result = WrittenBuild(
            record=record,
            prefix=prefix,
            tarball=BlobRef(
                media_type=MEDIA_INSTALL_V2,
                checksum=hashlib.sha256(tarball).hexdigest(),
                size=len(tarball),
                compression="gzip",
            ),
            tarball_bytes=tarball,
        )
        if 3 in layouts:
            tar_ref = _blob(root, tarball, MEDIA_INSTALL_V2, "gzip")
            spec_json = _json_lines({**spec_doc, "buildcache_layout_version": 2})
            spec_ref = _blob(root, _gzip(spec_json.encode()), MEDIA_SPEC_V5, "gzip")
            manifest_text = manifest_to_json(Manifest(version=3, blobs=(tar_ref, spec_ref)))
            if signer is not None:
                manifest_text = signer(manifest_text)
            mpath = spec_manifest_path(record.name, record.version, record.hash)
            _write(root / mpath, manifest_text)
            result = replace(
                result,
                record=replace(record, manifest_path=mpath, blobs=(tar_ref, spec_ref)),
                spec_blob=spec_ref,
                manifest_path=mpath,
            )
        if 2 in layouts:
            v2_doc = {
                **spec_doc,
                "buildcache_layout_version": 2,
                "binary_cache_checksum": {
                    "hash_algorithm": "sha256",
                    "hash": result.tarball.checksum,
                },
            }
            signed_path, plain_path = v2_specfile_paths(record)
            text = _json_lines(v2_doc)
            spec_path = plain_path if signer is None else signed_path
            _write(root / spec_path, text if signer is None else signer(text))
            tar_path = v2_tarball_path(record)
            _write(root / tar_path, tarball)
            result = replace(result, v2_specfile=spec_path, v2_tarball=tar_path)
        written[record.hash] = result
    index_blob = None
    if write_index:
        index_records = [b.record for b in builds] + [
            r for r in extra_records if r.hash not in written
        ]
        db = _database(index_records)
        if 3 in layouts:
            index_blob = _blob(root, db, MEDIA_DB_V8, "none")
            _write(root / INDEX_V3, manifest_to_json(Manifest(version=3, blobs=(index_blob,))))
        if 2 in layouts:
            _write(root / INDEX_V2, db)
            _write(root / INDEX_V2_HASH, hashlib.sha256(db).hexdigest() + "\n")
    if 3 in layouts:
        _write(root / LAYOUT_JSON, json.dumps({"signing": "gpg"}))
    if public_key is not None and key_fingerprint is not None:
        _publish_key(root, layouts, public_key, key_fingerprint)
    return WrittenMirror(root=root, builds=written, index_blob=index_blob, layouts=tuple(layouts))


def _publish_key(root: Path, layouts: Sequence[int], public_key: str, fingerprint: str) -> None:
    key_index = json.dumps({"keys": {fingerprint: {}}}).encode()
    if 3 in layouts:
        key_ref = _blob(root, public_key.encode(), MEDIA_KEY, "none")
        _write(
            root / f"v3/manifests/key/{fingerprint}.key.manifest.json",
            manifest_to_json(Manifest(version=3, blobs=(key_ref,))),
        )
        index_ref = _blob(root, key_index, MEDIA_KEY_INDEX, "none")
        _write(root / KEYS_V3, manifest_to_json(Manifest(version=3, blobs=(index_ref,))))
    if 2 in layouts:
        _write(root / "build_cache/_pgp/index.json", key_index)
        _write(root / f"build_cache/_pgp/{fingerprint}.pub", public_key)


def _gpg() -> str:
    return shutil.which("gpg") or "/usr/bin/gpg"


def gpg_clearsigner(homedir: Path | str, key: str) -> Signer:
    """A :data:`Signer` running ``gpg --homedir H --clearsign --local-user KEY`` (SHA-512)."""

    def sign(text: str) -> str:
        proc = subprocess.run(
            [_gpg(), "--homedir", str(homedir), "--batch", "--yes", "--pinentry-mode",
             "loopback", "--passphrase", "", "--local-user", key, "--digest-algo", "SHA512",
             "--clearsign"],
            input=text.encode(),
            capture_output=True,
            check=True,
            timeout=120,
        )  # fmt: skip
        return proc.stdout.decode()

    return sign


def gpg_public_key(homedir: Path | str, key: str) -> str:
    """The ASCII-armoured public key *key* from the keyring in *homedir*."""
    proc = subprocess.run(
        [_gpg(), "--homedir", str(homedir), "--batch", "--armor", "--export", key],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return proc.stdout.decode()
