"""Tests for v3 manifest parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cacheclient.errors import MetadataError
from cacheclient.metadata.manifest import decode_text, manifest_to_json, parse_manifest
from cacheclient.model import Manifest
from paths import SPACK_V3, SPACK_V3_SIGNED, SPACK_V3_UNSIGNED

SHA = "ab" * 32


def _rec(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "contentLength": 10,
        "mediaType": "application/vnd.spack.install.v2.tar+gzip",
        "compression": "gzip",
        "checksumAlgorithm": "sha256",
        "checksum": SHA,
    }
    rec.update(over)
    return {k: v for k, v in rec.items() if v is not None}


def _doc(*records: dict[str, Any], version: Any = 3) -> str:
    return json.dumps({"version": version, "data": list(records)})


def _expected_specs(kind: str) -> list[dict[str, Any]]:
    data = json.loads((SPACK_V3 / f"{kind}.expected.json").read_text())
    specs: list[dict[str, Any]] = data["specs"]
    return specs


class TestRealManifests:
    @pytest.mark.parametrize("kind", ["signed", "unsigned"])
    def test_every_spec_manifest_matches_expected(self, kind: str) -> None:
        root = SPACK_V3_SIGNED if kind == "signed" else SPACK_V3_UNSIGNED
        specs = _expected_specs(kind)
        assert len(specs) == 18
        for spec in specs:
            path = root / spec["spec_manifest"]["path"]
            manifest = parse_manifest(path.read_bytes(), str(path))
            assert manifest.version == 3
            assert manifest.tarball is not None
            assert manifest.spec_blob is not None
            assert manifest.tarball.checksum == spec["tarball"]["sha256"]
            assert manifest.tarball.size == spec["tarball"]["size"]
            assert manifest.tarball.path == spec["tarball"]["path"]
            assert manifest.spec_blob.checksum == spec["spec_blob"]["sha256"]
            assert manifest.spec_blob.size == spec["spec_blob"]["size"]
            assert manifest.spec_blob.compression == "gzip"
            assert manifest.index_blob is None

    def test_index_manifest(self) -> None:
        path = SPACK_V3_UNSIGNED / "v3/manifests/index/index.manifest.json"
        manifest = parse_manifest(path.read_text(), str(path))
        assert manifest.index_blob is not None
        assert manifest.index_blob.size == 11211
        assert manifest.index_blob.path.startswith("blobs/sha256/40/4075443c")

    def test_serialisation_round_trip(self) -> None:
        path = SPACK_V3_UNSIGNED / "v3/manifests/index/index.manifest.json"
        manifest = parse_manifest(path.read_bytes(), "x")
        assert manifest_to_json(manifest) == path.read_text()


class TestMediaTypes:
    def test_prefix_matching_accepts_future_versions(self) -> None:
        doc = _doc(
            _rec(mediaType="application/vnd.spack.install.v3.tar+zstd"),
            _rec(mediaType="application/vnd.spack.spec.v6+json", checksum="cd" * 32),
        )
        manifest = parse_manifest(doc, "m")
        assert manifest.tarball is not None
        assert manifest.tarball.checksum == SHA
        assert manifest.spec_blob is not None
        assert manifest.spec_blob.checksum == "cd" * 32

    def test_unknown_media_types_are_kept_but_not_selected(self) -> None:
        manifest = parse_manifest(_doc(_rec(mediaType="application/x-other")), "m")
        assert len(manifest.blobs) == 1
        assert manifest.tarball is None
        assert manifest.spec_blob is None


class TestBadManifests:
    @pytest.mark.parametrize(
        ("doc", "path", "problem"),
        [
            (_doc(version=2), "version", "manifest version 2 is not supported"),
            (_doc(version=4), "version", "a newer cacheclient is needed"),
            (_doc(version="3"), "version", "expected an integer"),
            (_doc(version=True), "version", "expected an integer"),
            ('{"version": 3}', "data", "expected a list"),
            (json.dumps({"version": 3, "data": [_rec(), "x"]}), "data[1]", "expected an object"),
            (_doc(_rec(contentLength=-1)), "data[0].contentLength", "integer >= 0"),
            (_doc(_rec(contentLength="10")), "data[0].contentLength", "integer >= 0"),
            (_doc(_rec(contentLength=None)), "data[0].contentLength", "missing"),
            (_doc(_rec(), _rec(checksum="abc")), "data[1].checksum", "64 lowercase hex"),
            (_doc(_rec(checksum="AB" * 32)), "data[0].checksum", "64 lowercase hex"),
            (_doc(_rec(checksumAlgorithm="sha512")), "data[0].checksum", "128 lowercase"),
            (_doc(_rec(checksumAlgorithm="crc32")), "data[0].checksumAlgorithm", "unsupported"),
            (_doc(_rec(mediaType=None)), "data[0].mediaType", "missing"),
            (_doc(_rec(compression=5)), "data[0].compression", "non-empty string"),
            ("[]", "", "expected a JSON object"),
            ('{"version": 3, "data": [', "", "invalid JSON"),
        ],
    )
    def test_error_names_source_and_key_path(self, doc: str, path: str, problem: str) -> None:
        with pytest.raises(MetadataError) as info:
            parse_manifest(doc, "mirror/x.spec.manifest.json")
        assert info.value.path == path
        assert info.value.source == "mirror/x.spec.manifest.json"
        assert problem in str(info.value)
        assert str(info.value).startswith("mirror/x.spec.manifest.json: ")

    def test_non_utf8(self) -> None:
        with pytest.raises(MetadataError, match="not UTF-8"):
            parse_manifest(b'{"version": 3, "data": [\xff]}', "m")

    def test_truncated_clearsigned(self, tmp_path: Path) -> None:
        path = next((SPACK_V3_SIGNED / "v3/manifests/spec/demo-tool").iterdir())
        text = path.read_text()
        with pytest.raises(MetadataError, match="no '-----END PGP SIGNATURE"):
            parse_manifest(text[: len(text) - 40], str(path))


class TestDecodeText:
    def test_bom_is_dropped(self) -> None:
        assert decode_text(b"\xef\xbb\xbf{}", "x") == "{}"

    def test_str_passes_through(self) -> None:
        assert decode_text("abc", "x") == "abc"


def test_manifest_find_returns_first_match() -> None:
    manifest = parse_manifest(_doc(_rec(), _rec(checksum="cd" * 32)), "m")
    assert isinstance(manifest, Manifest)
    assert manifest.find("application/vnd.spack.install.") == manifest.blobs[0]
