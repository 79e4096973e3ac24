"""Reading Spack's own OCI build cache from Debian's docker-registry: resolve, install, verify.

The registry serves a copy of ``fixtures/spack-oci`` (Spack 1.1 pushed it); the same 18 builds
are in ``fixtures/spack-v3``, which is the reference for every resolution.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from cacheclient.mirrors.indexcache import open_mirror
from cacheclient.resolution.compat import libc_for_os
from cacheclient.resolution.host import HostProfile
from cacheclient.resolution.resolve import resolve
from cacheclient.store import Store
from paths import SPACK_V3_UNSIGNED
from registryserver import SPACK_OCI, CutProxy, MakeRegistry, RegistryServer

REPO = "/v2/demo/buildcache"
EXPECTED = json.loads((SPACK_OCI / "expected.json").read_text())
IMAGES = {image["dag_hash"]: image for image in EXPECTED["images"]}
HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
ZLIB = "ybmvd3uhpbh7s2m74uv3dvqdkpg5obwd"  # demo-zlib 1.2.13 ~shared, one layer


def _blob_file(server: RegistryServer, digest: str) -> Path:
    hexdigest = digest.removeprefix("sha256:")
    return server.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length: only the digest can tell
    path.write_bytes(bytes(data))


def _visible(store: Path) -> list[str]:
    """What a reader of the store would see: build records and blobs."""
    builds = sorted(p.name for p in (store / ".cacheclient" / "builds").glob("*.json"))
    blobs = sorted(p.name for p in (store / "blobs").rglob("*") if p.is_file())
    return builds + blobs


class TestSpackCache:
    def test_every_build_resolves_as_from_v3_installs_and_runs(
        self, registry_factory: MakeRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        server = registry_factory(spack_cache=True, readonly=True)
        url = server.url()
        store = Store(tmp_path / "s")
        oci = open_mirror(url, store=store)
        v3 = open_mirror(str(SPACK_V3_UNSIGNED), store=store)
        assert sorted(oci.hashes()) == sorted(v3.hashes()) == sorted(IMAGES)
        libc = libc_for_os("debian12")
        requests = sorted({f"{i['name']}@{i['version']}" for i in IMAGES.values()})
        requests += [f"/{h}" for h in IMAGES]
        for target in ("x86_64_v2", "x86_64_v3", "x86_64_v4"):
            host = HostProfile(platform="linux", os="debian12", target=target, libc=libc)
            from_oci = resolve(requests, oci, host)
            from_v3 = resolve(requests, v3, host)
            for a, b in zip(from_oci, from_v3, strict=True):
                assert (a.selected and a.selected.hash) == (b.selected and b.selected.hash)
                assert [r.hash for r in a.closure] == [r.hash for r in b.closure]
        server.clear_log()
        root = tmp_path / "root"
        args = [*(f"/{h}" for h in IMAGES), "--mirror", url, *HOST]
        args += ["--store", str(tmp_path / "s2"), "--root", str(root), "--allow-unsigned", "--json"]
        assert main(["install", *args]) == 0
        out = json.loads(capsys.readouterr().out)
        expected = sorted(f"{i['name']}/{h[:7]}" for h, i in IMAGES.items())
        assert sorted(out["unsigned"]) == expected
        assert server.count(f"{REPO}/manifests/index.spack") == 1
        assert server.count(f"{REPO}/tags/list", method=None) == 0
        tools = sorted(root.glob("*/demo-tool-*/bin/demo-tool"))
        assert len(tools) == 4
        for tool in tools:
            version = tool.parent.parent.name.split("-")[2]
            run = subprocess.run([str(tool)], capture_output=True, text=True, check=True)
            assert run.stdout.startswith(f"demo-tool {version}")

    def test_unsigned_registry_needs_consent(
        self, registry_factory: MakeRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        server = registry_factory(spack_cache=True, readonly=True)
        args = ["fetch", f"/{ZLIB}", "--mirror", server.url(), *HOST, "--store", str(tmp_path)]
        assert main(args) == 4
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "not signed" in err
        assert "--allow-unsigned" in err
        assert "signed: false" in err
        assert main([*args, "--allow-unsigned", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["not_signature_checked"] == [f"demo-zlib@1.2.13/{ZLIB}"]
        kinds = {b["kind"]: b["digest"] for b in out["builds"][0]["blobs"]}
        image = IMAGES[ZLIB]
        assert kinds["manifest"] == image["manifest_digest"]
        assert kinds["spec"] == image["config"]["digest"]
        assert kinds["tarball"] == image["layers"][-1]["digest"]

    def test_no_index_is_an_error_unless_listing_is_asked_for(
        self,
        registry_factory: MakeRegistry,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        server = registry_factory(spack_cache=True)
        tags = server.storage / "docker/registry/v2/repositories/demo/buildcache/_manifests/tags"
        for path in sorted((tags / "index.spack").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (tags / "index.spack").rmdir()
        args = ["resolve", "demo-tool@1.0.0", "--mirror", server.url(), *HOST]
        assert main([*args, "--store", str(tmp_path / "a")]) == 7
        err = capsys.readouterr().err
        assert "no index.spack tag" in err
        assert "CACHECLIENT_OCI_LIST_TAGS=1" in err
        monkeypatch.setenv("CACHECLIENT_OCI_LIST_TAGS", "1")
        server.clear_log()
        assert main([*args, "--store", str(tmp_path / "b"), "--json"]) == 0
        assert server.count(f"{REPO}/tags/list") == 1
        out = json.loads(capsys.readouterr().out)
        assert "vwaicymp67emhvtu53ght22dv5pm6y2b" in json.dumps(out)

        pages = CutProxy(server.host, page_size=5)  # a registry that paginates tags/list
        try:
            paged = f"oci+http://{pages.host}/demo/buildcache"
            catalog = open_mirror(paged, store=Store(tmp_path / "c"))
        finally:
            pages.stop()
        assert sorted(catalog.hashes()) == sorted(IMAGES)
        listed = [path for path, _range in pages.ranges if "/tags/list" in path]
        assert len(listed) == 4  # 18 tags in pages of 5


class TestDigests:
    @pytest.mark.parametrize("part", ["manifest", "config", "layer"])
    def test_mismatch_is_exit_4_and_nothing_is_stored(
        self,
        part: str,
        registry_factory: MakeRegistry,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        server = registry_factory(spack_cache=True, readonly=True)
        image = IMAGES[ZLIB]
        digest = {
            "manifest": image["manifest_digest"],
            "config": image["config"]["digest"],
            "layer": image["layers"][-1]["digest"],
        }[part]
        _corrupt(_blob_file(server, digest))
        store = tmp_path / "s"
        args = ["fetch", f"/{ZLIB}", "--mirror", server.url(), *HOST, "--allow-unsigned"]
        assert main([*args, "--store", str(store)]) == 4
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert digest.removeprefix("sha256:") in err
        assert not any(ZLIB in name for name in _visible(store))
        assert digest.removeprefix("sha256:") not in _visible(store)
        assert not list((store / ".cacheclient" / "partial").glob("*"))


class TestStoreReadBack:
    def test_a_config_blob_changed_in_the_store_is_exit_4_offline(
        self, registry_factory: MakeRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The spec (config) blob of a registry build is hashed when it is read back from the
        store, like a v3 spec blob: changed in the store, it is exit 4 naming it and removed."""
        server = registry_factory(spack_cache=True, readonly=True)
        store = tmp_path / "s"
        args = ["fetch", f"/{ZLIB}", "--mirror", server.url(), *HOST, "--allow-unsigned"]
        assert main([*args, "--store", str(store)]) == 0
        config = IMAGES[ZLIB]["config"]["digest"].removeprefix("sha256:")
        blob = store / "blobs" / "sha256" / config[:2] / config
        blob.chmod(0o644)
        _corrupt(blob)
        capsys.readouterr()
        assert main([*args, "--store", str(store), "--offline"]) == 4
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert config in err
        assert not blob.exists()


class TestResume:
    def test_registry_stopping_mid_blob_resumes_on_the_next_run(
        self,
        registry_factory: MakeRegistry,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        server = registry_factory(spack_cache=True, readonly=True)
        layer = IMAGES[ZLIB]["layers"][-1]
        path = f"{REPO}/blobs/{layer['digest']}"
        proxy = CutProxy(server.host, cut_path=path, cut_after=layer["size"] // 2)
        url = f"oci+http://{proxy.host}/demo/buildcache"
        monkeypatch.setenv("CACHECLIENT_RETRIES", "1")
        store = tmp_path / "s"
        args = ["fetch", f"/{ZLIB}", "--mirror", url, *HOST, "--allow-unsigned"]
        args += ["--store", str(store)]
        try:
            assert main(args) == 5
            assert "connection" in capsys.readouterr().err
            partial = store / ".cacheclient" / "partial" / f"{layer['digest'][7:]}.partial"
            assert partial.stat().st_size == layer["size"] // 2
        finally:
            proxy.stop()
        again = CutProxy(server.host, port=proxy.port)
        try:
            assert main([*args, "--json"]) == 0
        finally:
            again.stop()
        assert (path, f"bytes={layer['size'] // 2}-") in again.ranges
        blob = store / "blobs" / "sha256" / layer["digest"][7:9] / layer["digest"][7:]
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == layer["digest"][7:]


def test_inspect_a_registry(
    registry_factory: MakeRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    server = registry_factory(spack_cache=True, readonly=True)
    assert main(["inspect", server.url(), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == report["installable"] == 18
    assert main(["inspect", server.url()]) == 0
    assert "layout: oci" in capsys.readouterr().out
    assert main(["keys", "fetch", server.url(), "--store", str(server.work / "s")]) == 7
    assert "does not sign OCI build caches" in capsys.readouterr().err
