"""Pure logic of OCI caches: URLs, tags, manifests, configs, the Link header, challenges."""

from __future__ import annotations

import json

import pytest

from cacheclient.errors import MetadataError, UsageError
from cacheclient.metadata.oci_image import (
    INDEX_TAG,
    build_config,
    build_manifest,
    build_tag,
    ensure_valid_tag,
    index_image,
    is_build_tag,
    parse_image_manifest,
    read_config_spec,
)
from cacheclient.mirrors.oci_index import database_json
from cacheclient.model import BlobRef
from cacheclient.transport.oci import _next_link, check_reference, is_oci_url, parse_oci_url
from registryserver import SPACK_OCI

STORAGE = SPACK_OCI / "registry" / "docker" / "registry" / "v2"
IMAGE = json.loads((SPACK_OCI / "expected.json").read_text())["images"][0]


def _blob(digest: str) -> bytes:
    hexdigest = digest.removeprefix("sha256:")
    return (STORAGE / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data").read_bytes()


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "api"),
        [
            ("oci://ghcr.io/spack/cache", "https://ghcr.io/v2/spack/cache/x"),
            ("oci+http://127.0.0.1:5000/Demo/Cache/", "http://127.0.0.1:5000/v2/demo/cache/x"),
            ("oci://localhost/a", "https://localhost/v2/a/x"),
            ("oci://ubuntu", "https://registry-1.docker.io/v2/library/ubuntu/x"),
            ("oci://someone/cache", "https://registry-1.docker.io/v2/someone/cache/x"),
        ],
    )
    def test_api_urls(self, url: str, api: str) -> None:
        assert is_oci_url(url)
        assert parse_oci_url(url).api("x") == api

    @pytest.mark.parametrize(
        "url",
        ["http://x/y", "oci://ghcr.io/a/b:tag", "oci://user:pw@ghcr.io/a", "oci://ghcr.io/A B"],
    )
    def test_bad_urls_are_usage_errors(self, url: str) -> None:
        with pytest.raises(UsageError):
            parse_oci_url(url)

    def test_references_cannot_change_the_path(self) -> None:
        assert check_reference("index.spack") == "index.spack"
        assert check_reference("sha256:" + "a" * 64).startswith("sha256:")
        for bad in ("../x", "a/b", "sha256:zz", ""):
            with pytest.raises(UsageError):
                check_reference(bad)

    def test_link_pagination_stays_on_the_registry(self) -> None:
        base = "https://r.example/v2/a/tags/list?n=2"
        nxt = _next_link(base, '</v2/a/tags/list?n=2&last=b>; rel="next"')
        assert nxt == "https://r.example/v2/a/tags/list?n=2&last=b"
        assert _next_link(base, '<https://evil.example/x>; rel="next"') is None
        assert _next_link(base, None) is None
        assert _next_link(base, '</x>; rel="prev"') is None


class TestImages:
    def test_tags(self) -> None:
        assert build_tag("demo-tool", "1.0.0", "a" * 32) == f"demo-tool-1.0.0-{'a' * 32}.spack"
        long = ensure_valid_tag("x" * 200 + ".spack")
        assert len(long) == 128
        assert long.endswith(".spack")
        assert is_build_tag(IMAGE["tag"])
        assert not is_build_tag(INDEX_TAG)

    def test_spack_written_manifest_and_config(self) -> None:
        raw = _blob(IMAGE["manifest_digest"])
        manifest = parse_image_manifest(raw, "m")
        assert f"sha256:{manifest.config.checksum}" == IMAGE["config"]["digest"]
        assert f"sha256:{manifest.tarball.checksum}" == IMAGE["layers"][-1]["digest"]
        spec = read_config_spec(_blob(IMAGE["config"]["digest"]), "c")
        assert spec.root.hash == IMAGE["dag_hash"]
        assert spec.tarball_sha256 == manifest.tarball.checksum

    def test_hostile_manifests_are_metadata_errors(self) -> None:
        digest = "sha256:" + "0" * 64
        good = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "x", "digest": digest, "size": 2},
                "layers": [{"mediaType": "y", "digest": digest, "size": 3}]}  # fmt: skip
        assert parse_image_manifest(json.dumps(good).encode(), "m").layers[0].size == 3
        bad_cases: list[bytes | str] = [
            b"not json",
            b"[]",
            json.dumps({**good, "layers": []}).encode(),
            json.dumps({**good, "schemaVersion": 1}).encode(),
            json.dumps({**good, "config": {"digest": "md5:x", "size": 1}}).encode(),
            json.dumps({**good, "layers": [{"mediaType": "y", "digest": digest, "size": -1}]}),
            json.dumps({"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}),
        ]
        for data in bad_cases:
            with pytest.raises(MetadataError):
                parse_image_manifest(data.encode() if isinstance(data, str) else data, "m")

    def test_config_layout_too_new_and_not_spack(self) -> None:
        config = json.loads(_blob(IMAGE["config"]["digest"]))
        with pytest.raises(MetadataError, match="too new"):
            read_config_spec(json.dumps({**config, "buildcache_layout_version": 4}).encode(), "c")
        with pytest.raises(MetadataError, match="not a Spack build"):
            read_config_spec(b'{"architecture": "amd64"}', "c")

    def test_written_images_read_back(self) -> None:
        config = json.loads(_blob(IMAGE["config"]["digest"]))
        tarball = BlobRef(media_type="t", checksum="b" * 64, size=10)
        data = build_config(config, architecture="amd64", diff_ids=["sha256:x"], tarball=tarball)
        assert data == build_config(
            config, architecture="amd64", diff_ids=["sha256:x"], tarball=tarball
        )
        spec = read_config_spec(data, "mine")
        assert spec.root.hash == IMAGE["dag_hash"]
        assert spec.tarball_sha256 == "b" * 64
        conf = BlobRef(media_type="c", checksum="c" * 64, size=len(data))
        manifest = parse_image_manifest(build_manifest(conf, [tarball], description="d"), "m")
        assert manifest.tarball.checksum == "b" * 64
        assert manifest.annotations["org.opencontainers.image.description"] == "d"
        index = parse_image_manifest(index_image(tarball), "i")
        assert index.config.size == 2

    def test_database_json(self) -> None:
        node = {"name": "a", "hash": "a" * 32, "dependencies": [{"name": "b", "hash": "b" * 32}]}
        dep = {"name": "b", "hash": "b" * 32}
        db = json.loads(database_json({"a" * 32: node, "b" * 32: dep}, {"a" * 32}))
        installs = db["database"]["installs"]
        assert db["database"]["version"] == "8"
        assert installs["a" * 32]["in_buildcache"] is True
        assert installs["b" * 32] == {"spec": dep, "ref_count": 1, "in_buildcache": False}


def test_docker_v2_manifests_are_read_too() -> None:
    digest = "sha256:" + "1" * 64
    docker = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": digest,
            "size": 7,
        },
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": digest,
             "size": 1},
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
             "digest": "sha256:" + "2" * 64, "size": 2},
        ],
    }  # fmt: skip
    manifest = parse_image_manifest(json.dumps(docker).encode(), "docker")
    assert manifest.tarball.checksum == "2" * 64
    assert manifest.tarball.compression == "gzip"
