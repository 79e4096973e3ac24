"""Tests for opening a mirror's catalog (v3, v2, both) and for the local reader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cacheclient.errors import MetadataError, VerificationError
from cacheclient.metadata.layout import INDEX_V3
from cacheclient.mirrors.open import check_blob, local_reader, open_catalog
from cacheclient.model import BlobRef
from cacheclient.transport import reader_for
from conftest import ServeDir
from expected import assert_matches_expected, expected_records
from paths import SPACK_V3, SPACK_V3_SIGNED, SPACK_V3_UNSIGNED, V2_MIRRORS

INDEX_BLOB = "blobs/sha256/40/4075443c79bc36c23b7cc05ba002af7e4153e3a7245822909c655cc7d21d82d8"


class TestOpenV3:
    @pytest.mark.parametrize("kind", ["signed", "unsigned"])
    def test_fixture_mirror_matches_expected(self, kind: str) -> None:
        root = SPACK_V3 / kind
        url = root.as_uri()
        catalog = open_catalog(url, local_reader(url))
        expected = expected_records(kind)
        assert len(catalog) == 18
        assert catalog.source == url
        for record in catalog:
            spec = expected[record.hash]
            assert_matches_expected(record, spec)
            assert record.stacks == (url,)
            assert record.manifest_path == spec["spec_manifest"]["path"]
            assert (root / spec["spec_manifest"]["path"]).is_file()

    def test_plain_path_works_like_file_url(self) -> None:
        catalog = open_catalog(str(SPACK_V3_SIGNED), local_reader(SPACK_V3_SIGNED))
        assert sorted(catalog.names()) == ["demo-libfoo", "demo-pyhooks", "demo-tool", "demo-zlib"]
        assert len(catalog.by_name("demo-zlib")) == 6

    def test_over_http_with_nginx(self, nginx_mirror: ServeDir) -> None:
        server = nginx_mirror(SPACK_V3_UNSIGNED)
        url = server.url + "/"
        catalog = open_catalog(url, reader_for(url))
        assert len(catalog) == 18
        assert {r.stacks for r in catalog} == {(url,)}

    def test_tampered_index_blob_is_a_verification_error(self, tmp_path: Path) -> None:
        mirror = tmp_path / "m"
        shutil.copytree(SPACK_V3_UNSIGNED, mirror)
        blob = mirror / INDEX_BLOB
        data = bytearray(blob.read_bytes())
        data[100] ^= 0x01
        blob.write_bytes(bytes(data))
        with pytest.raises(VerificationError) as info:
            open_catalog(str(mirror), local_reader(mirror))
        assert info.value.expected == INDEX_BLOB.rsplit("/", 1)[1]
        assert INDEX_BLOB in str(info.value)

    def test_truncated_index_blob_is_a_size_mismatch(self, tmp_path: Path) -> None:
        mirror = tmp_path / "m"
        shutil.copytree(SPACK_V3_UNSIGNED, mirror)
        blob = mirror / INDEX_BLOB
        blob.write_bytes(blob.read_bytes()[:-10])
        with pytest.raises(VerificationError, match="size 11201 does not match"):
            open_catalog(str(mirror), local_reader(mirror))

    def test_missing_index_blob(self, tmp_path: Path) -> None:
        mirror = tmp_path / "m"
        shutil.copytree(SPACK_V3_UNSIGNED, mirror)
        (mirror / INDEX_BLOB).unlink()
        with pytest.raises(MetadataError, match="index blob listed in the manifest does not"):
            open_catalog(str(mirror), local_reader(mirror))

    def test_manifest_without_db_record(self, tmp_path: Path) -> None:
        mirror = tmp_path / "m"
        (mirror / INDEX_V3).parent.mkdir(parents=True)
        (mirror / INDEX_V3).write_text(json.dumps({"version": 3, "data": []}))
        with pytest.raises(MetadataError, match=r"index.manifest.json: data: no application"):
            open_catalog(str(mirror), local_reader(mirror))


class TestOpenV2:
    @pytest.mark.parametrize("kind", ["signed", "unsigned"])
    def test_fixture(self, kind: str) -> None:
        url = (V2_MIRRORS / kind).as_uri()
        catalog = open_catalog(url, local_reader(url))
        assert len(catalog) == 7
        assert sum(r.installable for r in catalog) == 6
        assert all(r.manifest_path is None for r in catalog)


class TestBothLayouts:
    def test_v3_wins_and_v2_only_records_are_added(self, tmp_path: Path) -> None:
        mirror = tmp_path / "both"
        shutil.copytree(SPACK_V3_UNSIGNED, mirror)
        shutil.copytree(V2_MIRRORS / "unsigned/build_cache", mirror / "build_cache")
        catalog = open_catalog(str(mirror), local_reader(mirror))
        assert len(catalog) == 25
        zlib = catalog.by_name("demo-zlib")[0]
        assert zlib.manifest_path is not None
        libelf = catalog.by_name("libelf")[0]
        assert libelf.manifest_path is None
        assert libelf.stacks == (str(mirror),)


class TestNotAMirror:
    def test_empty_directory(self, tmp_path: Path) -> None:
        with pytest.raises(MetadataError, match="not a Spack binary mirror: neither"):
            open_catalog(str(tmp_path), local_reader(tmp_path))


class TestLocalReader:
    def test_missing_file_is_none(self, tmp_path: Path) -> None:
        read = local_reader(tmp_path)
        assert read("nope/x.json") is None
        (tmp_path / "d").mkdir()
        assert read("d") is None
        (tmp_path / "f").write_bytes(b"x")
        assert read("f/below") is None
        assert read("./f") == b"x"

    @pytest.mark.parametrize("bad", ["../secret", "a/../../secret", "/etc/passwd", "a/.."])
    def test_escaping_paths_are_refused(self, tmp_path: Path, bad: str) -> None:
        (tmp_path / "secret").write_text("s")
        read = local_reader(tmp_path / "mirror")
        with pytest.raises(MetadataError, match="path escapes the mirror root"):
            read(bad)

    def test_file_urls(self, tmp_path: Path) -> None:
        (tmp_path / "x").write_bytes(b"data")
        assert local_reader(tmp_path.as_uri())("x") == b"data"
        assert local_reader(f"file://localhost{tmp_path}")("x") == b"data"


class TestCheckBlob:
    def test_ok_and_mismatch(self) -> None:
        data = b"hello"
        blob = BlobRef(
            media_type="x",
            checksum="2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            size=5,
        )
        check_blob(data, blob, url="u")
        with pytest.raises(VerificationError) as info:
            check_blob(b"hellp", blob, url="u", mirror="m")
        assert info.value.mirror == "m"
        assert info.value.actual != blob.checksum
