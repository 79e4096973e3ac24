"""Tests for mirror path rules and layout detection."""

from __future__ import annotations

import json

import pytest

from cacheclient.errors import MetadataError
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.layout import (
    INDEX_V2,
    INDEX_V3,
    blob_path,
    detect_layouts,
    hash_from_manifest_name,
    polite_filename,
    spec_manifest_path,
    split_compiler,
    v2_specfile_paths,
    v2_tarball_path,
)
from cacheclient.mirrors.open import local_reader
from cacheclient.model import BuildRecord
from paths import SPACK_V3, SPACK_V3_SIGNED, V2_MIRRORS


def _rec(**over: object) -> BuildRecord:
    fields: dict[str, object] = {
        "name": "ninja",
        "version": "1.10.2",
        "hash": "yxferyhmrjkosgta5ei6b4lqf6bxbscz",
        "platform": "linux",
        "os": "ubuntu20.04",
        "target": "skylake",
        "compiler": "gcc@=9.3.0",
    }
    fields.update(over)
    return BuildRecord(**fields)  # type: ignore[arg-type]


class TestPaths:
    @pytest.mark.parametrize(
        ("raw", "polite"),
        [("zlib-1.3", "zlib-1.3"), ("git.main=1.2", "git.main_1.2"), ("a b/c:d", "a_b_c_d"),
         ("x+y_z.1-2", "x+y_z.1-2")],
    )  # fmt: skip
    def test_polite_filename(self, raw: str, polite: str) -> None:
        assert polite_filename(raw) == polite

    def test_v3_manifest_paths_match_spack(self) -> None:
        specs = json.loads((SPACK_V3 / "signed.expected.json").read_text())["specs"]
        for spec in specs:
            path = spec_manifest_path(spec["name"], spec["version"], spec["dag_hash"])
            assert path == spec["spec_manifest"]["path"]
            assert (SPACK_V3_SIGNED / path).is_file()
            assert hash_from_manifest_name(path) == spec["dag_hash"]
            assert blob_path(spec["tarball"]["sha256"]) == spec["tarball"]["path"]

    def test_git_version_is_sanitised(self) -> None:
        path = spec_manifest_path("foo", "git.main=1.2", "a" * 32)
        assert path == f"v3/manifests/spec/foo/foo-git.main_1.2-{'a' * 32}.spec.manifest.json"

    def test_hash_from_bad_manifest_names(self) -> None:
        assert hash_from_manifest_name("v3/manifests/spec/x/x-1-SHORT.spec.manifest.json") is None
        assert hash_from_manifest_name("v3/manifests/index/index.manifest.json") is None

    def test_v2_names_from_docs_example(self) -> None:
        signed, unsigned = v2_specfile_paths(_rec())
        base = "linux-ubuntu20.04-skylake-gcc-9.3.0-ninja-1.10.2-yxferyhmrjkosgta5ei6b4lqf6bxbscz"
        assert signed == f"build_cache/{base}.spec.json.sig"
        assert unsigned == f"build_cache/{base}.spec.json"
        assert v2_tarball_path(_rec()) == (
            f"build_cache/linux-ubuntu20.04-skylake/gcc-9.3.0/ninja-1.10.2/{base}.spack"
        )

    @pytest.mark.parametrize("kind", ["signed", "unsigned"])
    def test_v2_paths_for_every_fixture_record(self, kind: str) -> None:
        root = V2_MIRRORS / kind
        catalog = parse_database((root / INDEX_V2).read_bytes(), "idx")
        checked = 0
        for record in catalog:
            if not record.installable:
                continue
            signed, unsigned = v2_specfile_paths(record)
            assert (root / (signed if kind == "signed" else unsigned)).is_file(), record.format()
            assert (root / v2_tarball_path(record)).is_file(), record.format()
            checked += 1
        assert checked == 6

    @pytest.mark.parametrize(
        ("compiler", "expected"),
        [("gcc@=10.2.1", ("gcc", "10.2.1")), ("gcc@10.2.1", ("gcc", "10.2.1")),
         (None, ("none", "none")), ("none", ("none", "none")), ("llvm", ("llvm", "none"))],
    )  # fmt: skip
    def test_split_compiler(self, compiler: str | None, expected: tuple[str, str]) -> None:
        assert split_compiler(compiler) == expected


class TestDetectLayouts:
    def test_v3(self) -> None:
        assert detect_layouts(local_reader(SPACK_V3_SIGNED), "m") == (3,)

    def test_v2(self) -> None:
        assert detect_layouts(local_reader(V2_MIRRORS / "unsigned"), "m") == (2,)

    def test_both(self) -> None:
        files = {INDEX_V3: b"{}", INDEX_V2: b"{}"}
        assert detect_layouts(files.get, "m") == (3, 2)

    def test_neither_is_a_clear_error(self) -> None:
        empty: dict[str, bytes] = {}
        with pytest.raises(MetadataError) as info:
            detect_layouts(empty.get, "https://example.invalid/mirror")
        assert str(info.value) == (
            "https://example.invalid/mirror: not a Spack binary mirror: neither "
            "v3/manifests/index/index.manifest.json nor build_cache/index.json found at "
            "https://example.invalid/mirror"
        )
