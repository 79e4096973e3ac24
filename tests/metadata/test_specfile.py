"""Tests for spec.json / .spec.json.sig / v3 spec blob reading."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from cacheclient.errors import MetadataError
from cacheclient.metadata.specfile import read_specfile
from expected import assert_matches_expected
from paths import REALDATA, SPACK_V3, SPACK_V3_SIGNED, SPACK_V3_UNSIGNED, V2_MIRRORS

MIRRORS = REALDATA / "spack-test-mirrors"

# MANIFEST.md §1c: (folder, root hash) -> (format, root name, nodes, sha256 of the tarball)
V2_SPECFILES: dict[tuple[str, str], tuple[int, str, int, str]] = {
    ("signed_json", "g7otk5dra3hifqxej36m5qzm7uyghqgb"):
        (2, "zlib", 1, "5b9a180f14e0d04b17b1b0c2a26cf3beae448d77d1bda4279283ca4567d0be90"),
    ("signed", "sk2gqqz4n5njmvktycnd25wq25jxiqkr"):
        (4, "libdwarf", 2, "811f500a89ae7d2f61e2c0ef6f56e352dfbac245ae88275809088a1481489d5b"),
    ("signed", "rqh2vuf6fqwkmipzgi2wjx352mq7y7ez"):
        (4, "libelf", 1, "48c8aa769a62535f9d9f613722e3d3f5a48b91fde3c99a644b22f277a4502d75"),
    ("signed", "u5uz3dcch5if4eve4sef67o2rf2lbfgh"):
        (5, "libdwarf", 5, "0898457b4cc4b18d71059ea254667fb6690f5933c82e1627f9fed3606488dbca"),
    ("signed", "jr3yipyxyjulcdvckwwwjrrumis7glpa"):
        (5, "libelf", 4, "c068bcd1a27a3081c07ba775d83e90228e340bb6a7f0d55deb18a462760c4bcf"),
    ("signed", "qeehcxyvluwnihsc2qxstmpomtxo3lrc"):
        (5, "compiler-wrapper", 1,
         "2c1c5576e30b7063aa02a22111eb24b3f2a93c35ac0f64b4e491c7078706c0ea"),
    ("signed", "izgzpzeljwairalfjm3k6fntbb64nt6n"):
        (5, "gcc-runtime", 2, "f33e7a6798a5fb2db6e538d3a530cc79b298e36d56a1df385d93889a9ba431d0"),
    ("unsigned", "sk2gqqz4n5njmvktycnd25wq25jxiqkr"):
        (4, "libdwarf", 2, "f31bce1bfdcaa9b11cd02b869dd07a843db9819737399b99ac614ab3552bd4b6"),
    ("unsigned", "rqh2vuf6fqwkmipzgi2wjx352mq7y7ez"):
        (4, "libelf", 1, "523ebc3691b0687cf93fcd477002972ea7d6da5d3e8d46636b30d4f1052fcbf2"),
    ("unsigned", "u5uz3dcch5if4eve4sef67o2rf2lbfgh"):
        (5, "libdwarf", 5, "2a6f045996e4998ec37679e1aa8a245795fbbffaf9844692ba2de6eeffcbc722"),
    ("unsigned", "jr3yipyxyjulcdvckwwwjrrumis7glpa"):
        (5, "libelf", 4, "59141e49bd05abe40639360cd9422020513781270a3461083fee0eba2af62ca0"),
    ("unsigned", "qeehcxyvluwnihsc2qxstmpomtxo3lrc"):
        (5, "compiler-wrapper", 1,
         "f27ddff0ef4268acbe816c51f6f1fc907dc1010d31f2d6556b699c80f026c47d"),
    ("unsigned", "izgzpzeljwairalfjm3k6fntbb64nt6n"):
        (5, "gcc-runtime", 2, "348f23717c5641fa6bbb90862e62bf632367511c53e9c6450584f0d000841320"),
}  # fmt: skip


def _specfile_path(folder: str, dag_hash: str) -> Path:
    where = MIRRORS / folder if folder == "signed_json" else V2_MIRRORS / folder / "build_cache"
    (path,) = where.glob(f"*-{dag_hash}.spec.json*")
    return path


def _spec(**top: Any) -> dict[str, Any]:
    node = {
        "name": "zlib",
        "version": "1.3",
        "arch": {"platform": "linux", "platform_os": "debian12", "target": "x86_64"},
        "hash": "a" * 32,
    }
    doc: dict[str, Any] = {"spec": {"_meta": {"version": 5}, "nodes": [node]}}
    doc.update(top)
    return doc


class TestRealV2Specfiles:
    def test_all_twelve_plus_signed_json_listed(self) -> None:
        on_disk = {p for p in MIRRORS.rglob("*") if ".spec.json" in p.name}
        assert on_disk == {_specfile_path(*key) for key in V2_SPECFILES}
        assert len(on_disk) == 13

    @pytest.mark.parametrize(("folder", "root_hash"), sorted(V2_SPECFILES))
    def test_parses_with_expected_root_and_checksum(self, folder: str, root_hash: str) -> None:
        fmt, name, nodes, sha = V2_SPECFILES[folder, root_hash]
        path = _specfile_path(folder, root_hash)
        spec = read_specfile(path.read_bytes(), str(path))
        assert spec.format_version == fmt
        assert spec.root.name == name
        assert spec.root.hash == root_hash
        assert len(spec.nodes) == nodes
        assert spec.nodes[root_hash] is spec.root
        assert spec.tarball_sha256 == sha
        assert spec.layout_version == (0 if folder == "signed_json" else 2)

    def test_format2_signed_json(self) -> None:
        path = _specfile_path("signed_json", "g7otk5dra3hifqxej36m5qzm7uyghqgb")
        spec = read_specfile(path.read_text(), str(path))
        assert spec.root.compiler == "gcc@=8.4.0"
        assert spec.root.target == "haswell"
        assert spec.root.variants["shared"] is True

    def test_format5_compiler_from_build_dependency(self) -> None:
        path = (
            V2_MIRRORS
            / "unsigned/build_cache"
            / (
                "test-debian6-m1-gcc-10.2.1-libdwarf-20130729-u5uz3dcch5if4eve4sef67o2rf2lbfgh.spec.json"
            )
        )
        spec = read_specfile(path.read_bytes(), str(path))
        assert spec.root.compiler == "gcc@=10.2.1"
        gcc = spec.nodes["vd7v4ssgnoqdplgxyig3orum67n4vmhq"]
        assert gcc.external_path == "/path"
        assert not gcc.installable

    def test_legacy_yaml_is_refused_clearly(self) -> None:
        path = next((MIRRORS / "legacy_yaml/build_cache").glob("*.spec.yaml"))
        with pytest.raises(MetadataError) as info:
            read_specfile(path.read_bytes(), str(path))
        message = str(info.value)
        assert "spec.yaml" in message
        assert "layout 0" in message
        assert "not supported" in message
        assert str(path) in message


class TestRealV3SpecBlobs:
    @pytest.mark.parametrize("kind", ["signed", "unsigned"])
    def test_every_spec_blob_matches_expected(self, kind: str) -> None:
        root = SPACK_V3_SIGNED if kind == "signed" else SPACK_V3_UNSIGNED
        specs = json.loads((SPACK_V3 / f"{kind}.expected.json").read_text())["specs"]
        for expected in specs:
            blob = root / expected["spec_blob"]["path"]
            data = blob.read_bytes()
            assert data[:2] == b"\x1f\x8b"
            spec = read_specfile(data, str(blob))
            assert spec.format_version == expected["spec_json_meta_version"] == 5
            assert spec.layout_version == expected["buildcache_layout_version"]
            assert spec.tarball_sha256 is None
            assert_matches_expected(spec.root, expected)
            dep_hashes = {d["dag_hash"] for d in expected["dependencies"]}
            assert dep_hashes <= set(spec.nodes)


class TestInputForms:
    def test_gzip_of_clearsigned(self) -> None:
        text = (
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"
            + json.dumps(_spec())
            + "\n-----BEGIN PGP SIGNATURE-----\n\nx\n-----END PGP SIGNATURE-----\n"
        )
        spec = read_specfile(gzip.compress(text.encode(), mtime=0), "s")
        assert spec.root.name == "zlib"
        assert spec.layout_version == 0

    def test_str_input(self) -> None:
        assert read_specfile(json.dumps(_spec()), "s").root.version == "1.3"


class TestBadSpecfiles:
    @pytest.mark.parametrize(
        ("doc", "path", "problem"),
        [
            (_spec(buildcache_layout_version=3), "buildcache_layout_version", "too new"),
            (_spec(buildcache_layout_version="2"), "buildcache_layout_version", "integer"),
            ({"spec": [{"zlib": {}}]}, "spec", "format 1"),
            ({"spec": {"nodes": []}}, "spec._meta", "expected an object"),
            ({"spec": {"_meta": {"version": 6}, "nodes": [{}]}}, "spec._meta.version",
             "newer cacheclient"),
            ({"spec": {"_meta": {"version": 5}, "nodes": []}}, "spec.nodes", "non-empty"),
            ({"spec": {"_meta": {"version": 5}, "nodes": [{"hash": "x"}]}}, "spec.nodes[0].hash",
             "32-character"),
            ({"spec": {"_meta": {"version": 5}, "nodes": ["x"]}}, "spec.nodes[0]", "object"),
            (_spec(binary_cache_checksum={"hash_algorithm": "md5", "hash": "a"}),
             "binary_cache_checksum.hash_algorithm", "unsupported"),
            (_spec(binary_cache_checksum={"hash": "abc"}), "binary_cache_checksum.hash", "64 hex"),
            ({"nospec": 1}, "spec", "expected an object"),
            ([], "", "expected a JSON object"),
        ],
    )  # fmt: skip
    def test_errors(self, doc: Any, path: str, problem: str) -> None:
        with pytest.raises(MetadataError) as info:
            read_specfile(json.dumps(doc).encode(), "https://m/x.spec.json")
        assert info.value.path == path
        assert problem in str(info.value)
        assert str(info.value).startswith("https://m/x.spec.json: ")

    @pytest.mark.parametrize(
        ("data", "problem"),
        [
            (b"\x1f\x8b\x08\x00garbage", "gzip"),
            (b"\x1f\x8b\x09" + bytes(20), "invalid gzip"),
            (gzip.compress(b'{"spec": 1}', mtime=0)[:-12], "truncated gzip"),
            (b"\xff\xff", "not UTF-8"),
            (b'{"spec": {', "invalid JSON"),
        ],
    )
    def test_bad_bytes(self, data: bytes, problem: str) -> None:
        with pytest.raises(MetadataError, match=problem):
            read_specfile(data, "s")

    def test_node_error_has_key_path(self, tmp_path: Path) -> None:
        doc = _spec()
        doc["spec"]["nodes"][0]["arch"]["platform"] = 7
        with pytest.raises(MetadataError) as info:
            read_specfile(json.dumps(doc), "s")
        assert info.value.path == "spec.nodes[0].arch.platform"
