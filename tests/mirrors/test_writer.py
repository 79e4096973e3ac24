"""Tests for the mirror writer: what it writes must read back through every reader."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from cacheclient.metadata.clearsign import is_clearsigned
from cacheclient.metadata.layout import INDEX_V2, INDEX_V2_HASH, INDEX_V3, KEYS_V3, detect_layouts
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.metadata.page import read_page
from cacheclient.metadata.specfile import read_specfile
from cacheclient.mirrors.open import check_blob, local_reader, open_catalog
from cacheclient.mirrors.writer import (
    DEFAULT_BUILD_ROOT,
    MirrorBuild,
    fake_hash,
    gpg_clearsigner,
    gpg_public_key,
    make_tarball,
    write_mirror,
)
from cacheclient.model import BuildRecord, Dependency, Libc
from gpgtools import GpgKey
from paths import SEED_PAGE

ZLIB = BuildRecord(
    name="zlib",
    version="1.3.1",
    hash=fake_hash("zlib"),
    platform="linux",
    os="ubuntu24.04",
    target="x86_64_v3",
    variants={"shared": True, "codecs": ("bz2", "gz")},
    compiler="gcc@=13.2.0",
)
GLIBC = BuildRecord(
    name="glibc",
    version="2.39",
    hash=fake_hash("glibc"),
    platform="linux",
    os="ubuntu24.04",
    target="x86_64_v3",
    external_path="/usr",
    installable=False,
)
APP = BuildRecord(
    name="app",
    version="2.0",
    hash=fake_hash("app"),
    platform="linux",
    os="ubuntu24.04",
    target="x86_64_v3",
    compiler="gcc@=13.2.0",
    dependencies=(
        Dependency(name="zlib", hash=ZLIB.hash, deptypes=frozenset({"link", "run"})),
        Dependency(name="glibc", hash=GLIBC.hash, deptypes=frozenset({"link"}), virtuals=("libc",)),
    ),
)


def _builds(zlib_prefix_text: bool = True) -> list[MirrorBuild]:
    zprefix = f"{DEFAULT_BUILD_ROOT}/linux-x86_64_v3/zlib-1.3.1-{ZLIB.hash}"
    return [
        MirrorBuild(
            record=ZLIB,
            files={
                "lib/libz.so.1": b"\x7fELF fake",
                "lib/pkgconfig/zlib.pc": f"prefix={zprefix}\n",
            },
            symlinks={"lib/libz.so": "libz.so.1"},
        ),
        MirrorBuild(
            record=APP,
            files={"bin/app": f"#!/bin/sh\nexec {zprefix}/bin/x\n", "share/empty": b""},
            executables=frozenset({"bin/app"}),
            symlinks={"share/abs": f"{zprefix}/lib/libz.so"},
        ),
    ]


class TestRoundTrip:
    @pytest.mark.parametrize("layouts", [(3,), (2,), (3, 2)])
    def test_catalog_reads_back(self, tmp_path: Path, layouts: tuple[int, ...]) -> None:
        mirror = write_mirror(tmp_path / "m", _builds(), layouts=layouts, extra_records=[GLIBC])
        read = local_reader(mirror.url)
        assert detect_layouts(read, mirror.url) == layouts
        catalog = open_catalog(mirror.url, read)
        assert len(catalog) == 3
        app = catalog.get(APP.hash)
        assert app is not None
        assert app.libc == Libc(name="glibc", version="2.39")
        assert app.compiler == "gcc@=13.2.0"
        assert app.stacks == (mirror.url,)
        zlib = catalog.get(ZLIB.hash)
        assert zlib is not None
        assert dict(zlib.variants) == {"shared": True, "codecs": ("bz2", "gz")}
        glibc = catalog.get(GLIBC.hash)
        assert glibc is not None
        assert not glibc.installable
        assert glibc.external_path == "/usr"
        assert (app.manifest_path is not None) == (3 in layouts)

    def test_v3_manifest_blobs_and_specfile(self, tmp_path: Path) -> None:
        mirror = write_mirror(tmp_path / "m", _builds(), extra_records=[GLIBC])
        written = mirror.builds[APP.hash]
        assert written.manifest_path is not None
        manifest = parse_manifest((mirror.root / written.manifest_path).read_bytes(), "m")
        assert manifest.tarball == written.tarball
        assert manifest.spec_blob == written.spec_blob
        assert written.record.blobs == manifest.blobs
        for blob in manifest.blobs:
            check_blob((mirror.root / blob.path).read_bytes(), blob, url=blob.path)
        assert manifest.spec_blob is not None
        spec = read_specfile((mirror.root / manifest.spec_blob.path).read_bytes(), "blob")
        assert spec.root.hash == APP.hash
        assert set(spec.nodes) == {APP.hash, ZLIB.hash, GLIBC.hash}
        assert spec.root.libc == Libc(name="glibc", version="2.39")
        assert spec.layout_version == 2
        assert spec.tarball_sha256 is None
        assert not (mirror.root / INDEX_V2).exists()

    def test_v2_specfile_checksum_is_the_tarball(self, tmp_path: Path) -> None:
        mirror = write_mirror(tmp_path / "m", _builds(), layouts=(2,), extra_records=[GLIBC])
        written = mirror.builds[ZLIB.hash]
        assert written.v2_specfile is not None
        assert written.v2_specfile.endswith(".spec.json")
        assert written.v2_tarball is not None
        spec = read_specfile((mirror.root / written.v2_specfile).read_bytes(), "s")
        tarball = (mirror.root / written.v2_tarball).read_bytes()
        assert spec.tarball_sha256 == hashlib.sha256(tarball).hexdigest()
        index = (mirror.root / INDEX_V2).read_bytes()
        assert (mirror.root / INDEX_V2_HASH).read_text() == hashlib.sha256(index).hexdigest() + "\n"
        assert json.loads(index)["database"]["version"] == "8"

    def test_no_index(self, tmp_path: Path) -> None:
        mirror = write_mirror(tmp_path / "m", _builds(), write_index=False)
        assert not (mirror.root / INDEX_V3).exists()
        assert mirror.builds[ZLIB.hash].manifest_path is not None


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


class TestTarball:
    def test_layout_like_spack(self, tmp_path: Path) -> None:
        mirror = write_mirror(tmp_path / "m", _builds(), extra_records=[GLIBC])
        written = mirror.builds[APP.hash]
        tar = tarfile.open(fileobj=io.BytesIO(written.tarball_bytes))  # noqa: SIM115
        names = tar.getnames()
        prefix = written.prefix.lstrip("/")
        parts = prefix.split("/")
        for i in range(1, len(parts) + 1):
            assert "/".join(parts[:i]) in names
        assert all(n == prefix or n.startswith(prefix + "/") or prefix.startswith(n) for n in names)
        members = {m.name: m for m in tar.getmembers()}
        assert members[f"{prefix}/bin/app"].mode == 0o755
        assert members[f"{prefix}/share/empty"].size == 0
        assert members[f"{prefix}/share/abs"].issym()
        assert all(m.uid == 0 and m.mtime == 0 for m in members.values())
        info = yaml.safe_load(tar.extractfile(f"{prefix}/.spack/binary_distribution").read())  # type: ignore[union-attr]
        assert info["buildpath"] == DEFAULT_BUILD_ROOT
        assert info["relative_prefix"] == f"linux-x86_64_v3/app-2.0-{APP.hash}"
        assert set(info["hash_to_prefix"]) == {APP.hash, ZLIB.hash}
        assert info["relocate_textfiles"] == ["bin/app"]
        assert info["relocate_links"] == ["share/abs"]
        assert info["relocate_binaries"] == []
        spec = json.loads(tar.extractfile(f"{prefix}/.spack/spec.json").read())  # type: ignore[union-attr]
        assert spec["spec"]["nodes"][0]["hash"] == APP.hash

    def test_reproducible(self) -> None:
        one = make_tarball("/a/b", {"x": b"1"}, symlinks={"y": "x"})
        assert one == make_tarball("/a/b", {"x": b"1"}, symlinks={"y": "x"})
        assert _names(one) == ["a", "a/b", "a/b/x", "a/b/y"]

    def test_without_parents(self) -> None:
        data = make_tarball("/a/b/c", {"x": b"1"}, with_parents=False)
        assert _names(data) == ["a/b/c", "a/b/c/x"]


class TestSigned:
    def test_signed_v3_and_v2(self, tmp_path: Path, gpg_key: GpgKey) -> None:
        mirror = write_mirror(
            tmp_path / "m",
            _builds(),
            layouts=(3, 2),
            signer=gpg_key.clearsign,
            public_key=gpg_key.public_key(),
            key_fingerprint=gpg_key.fingerprint,
            extra_records=[GLIBC],
        )
        written = mirror.builds[APP.hash]
        assert written.manifest_path is not None
        text = (mirror.root / written.manifest_path).read_text()
        assert is_clearsigned(text)
        assert gpg_key.verify(text)
        assert parse_manifest(text, "m").tarball == written.tarball
        assert written.v2_specfile is not None
        assert written.v2_specfile.endswith(".spec.json.sig")
        sig = (mirror.root / written.v2_specfile).read_text()
        assert gpg_key.verify(sig)
        assert read_specfile(sig, "s").tarball_sha256 == written.tarball.checksum
        keys = parse_manifest((mirror.root / KEYS_V3).read_bytes(), "k")
        assert keys.blobs[0].media_type == "application/vnd.spack.keyindex.v1+json"
        index = json.loads((mirror.root / keys.blobs[0].path).read_text())
        assert index == {"keys": {gpg_key.fingerprint: {}}}
        assert (mirror.root / f"build_cache/_pgp/{gpg_key.fingerprint}.pub").is_file()

    def test_gpg_homedir_helpers(self, tmp_path: Path, gpg_key: GpgKey) -> None:
        sign = gpg_clearsigner(gpg_key.home, gpg_key.fingerprint)
        signed = sign('{"version":3,"data":[]}')
        assert gpg_key.verify(signed)
        assert "BEGIN PGP PUBLIC KEY BLOCK" in gpg_public_key(gpg_key.home, gpg_key.fingerprint)


class TestSeedHashes:
    def test_mirror_serving_the_seed_pages_hashes(self, tmp_path: Path) -> None:
        page = read_page(SEED_PAGE.read_text(), "seed")
        records = [r for r in page if r.os == "ubuntu24.04" and r.version == "1.2.0"]
        assert len(records) >= 2
        builds = [
            MirrorBuild(record=r, files={"lib/python/pyproject_hooks/__init__.py": b"# hi\n"})
            for r in records
        ]
        mirror = write_mirror(tmp_path / "seed-mirror", builds)
        catalog = open_catalog(mirror.url, local_reader(mirror.url))
        assert {r.hash for r in catalog} == {r.hash for r in records}
        assert "7gxinepk7daz7rk5xrpl2pln6lc5i37l" in catalog
        record = catalog.get("7gxinepk7daz7rk5xrpl2pln6lc5i37l")
        assert record is not None
        assert record.manifest_path is not None
        assert (mirror.root / record.manifest_path).is_file()


class TestMatchesSpackWrittenTarballs:
    def test_binary_distribution_keys_and_member_layout(self, tmp_path: Path) -> None:
        from paths import SPACK_V3_UNSIGNED

        real_blob = next(
            p for p in (SPACK_V3_UNSIGNED / "blobs/sha256").rglob("*") if p.is_file()
            and p.read_bytes()[:2] == b"\x1f\x8b" and p.stat().st_size > 5000
        )  # fmt: skip
        with tarfile.open(real_blob) as tar:
            real_names = tar.getnames()
            (bd_name,) = [n for n in real_names if n.endswith(".spack/binary_distribution")]
            real_info = yaml.safe_load(tar.extractfile(bd_name).read())  # type: ignore[union-attr]
        mirror = write_mirror(tmp_path / "m", _builds(), extra_records=[GLIBC])
        with tarfile.open(fileobj=io.BytesIO(mirror.builds[ZLIB.hash].tarball_bytes)) as tar:
            names = tar.getnames()
            (ours_name,) = [n for n in names if n.endswith(".spack/binary_distribution")]
            ours = yaml.safe_load(tar.extractfile(ours_name).read())  # type: ignore[union-attr]
        assert set(ours) == set(real_info)
        for listing in (real_names, names):
            assert not any(n.startswith("/") for n in listing)
            assert listing[0].count("/") == 0  # the first parent directory has its own entry
            assert any(n.endswith(".spack/spec.json") for n in listing)
