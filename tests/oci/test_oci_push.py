"""``cacheclient push``: a warmed store to a real registry (and to a directory), then a second
runner installs from it with the origin mirror stopped; pushes are idempotent and concurrent
pushers keep each other's builds in the index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from cacheclient.cli.main import main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED
from registryserver import SPACK_OCI, MakeRegistry
from servers import NginxServer

IMAGES = {i["dag_hash"]: i for i in json.loads((SPACK_OCI / "expected.json").read_text())["images"]}
HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
TOOL_V4 = "vwaicymp67emhvtu53ght22dv5pm6y2b"
WARM = """\
mirrors:
  - url: {url}
    signed: {signed}
profiles:
  - {{platform: linux, os: debian12, target: x86_64_v3}}
  - {{platform: linux, os: debian12, target: x86_64_v4}}
specs: [demo-tool@1.0.0, demo-zlib@1.2.13]
"""


def _valid_push_document(doc: dict[str, Any]) -> None:
    folder = resources.files("cacheclient") / "schemas"
    schemas = {n: json.loads((folder / f"{n}.json").read_text("utf-8")) for n in ("push", "error")}
    registry: Registry[Any] = Registry().with_resources(
        (f"https://cacheclient.invalid/schemas/{n}.json", Resource.from_contents(s))
        for n, s in schemas.items()
    )
    errors = list(Draft202012Validator(schemas["push"], registry=registry).iter_errors(doc))
    assert not errors, [e.message for e in errors[:3]]
    assert doc["schema"] == "cacheclient.push"


@pytest.fixture(scope="module")
def warmed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding all 18 signed builds, fetched from nginx serving the v3 fixture (the
    "origin"), which is stopped before the tests use the store."""
    store = tmp_path_factory.mktemp("warm") / "store"
    origin = NginxServer(SPACK_V3_SIGNED, tmp_path_factory.mktemp("nginx")).start()
    try:
        assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
        args = ["fetch", *(f"/{h}" for h in IMAGES), "--mirror", origin.url, *HOST]
        assert main([*args, "--store", str(store), "-q"]) == 0
    finally:
        origin.stop()
    return store


def _tool_runs(root: Path) -> str:
    (tool,) = root.glob("*/demo-tool-*/bin/demo-tool")
    return subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout


class TestRegistry:
    def test_push_then_a_second_runner_installs_with_the_origin_stopped(
        self,
        warmed: Path,
        registry_factory: MakeRegistry,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        server = registry_factory()
        url = server.url("fleet/cache")
        capsys.readouterr()
        assert main(["push", url, "--all", "--store", str(warmed), "--json"]) == 0
        first = json.loads(capsys.readouterr().out)
        _valid_push_document(first)
        assert first["kind"] == "oci"
        assert len(first["builds"]) == 18
        assert first["index_builds"] == 18
        assert first["blobs_uploaded"] == 18 + 18  # every tarball once, one config per build
        tags = {b["tag"] for b in first["builds"]}
        assert tags == {i["tag"] for i in IMAGES.values()}

        origin = NginxServer(SPACK_V3_SIGNED, tmp_path / "nginx").start()
        stopped = origin.url
        origin.stop()
        root = tmp_path / "root"
        args = ["install", "demo-tool@1.0.0", "--mirror", url, "--mirror", stopped, *HOST]
        args += ["--store", str(tmp_path / "runner2"), "--root", str(root), "--allow-unsigned"]
        assert main(args) == 0
        assert _tool_runs(root).startswith("demo-tool 1.0.0")
        db = json.loads((root / ".cacheclient" / "installed.json").read_text())
        assert db["installs"][TOOL_V4]["mirror"] == url

        server.clear_log()
        capsys.readouterr()
        assert main(["push", url, "--all", "--store", str(warmed), "--json"]) == 0
        second = json.loads(capsys.readouterr().out)
        assert second["blobs_uploaded"] == 0
        assert second["index_written"] is False
        assert not [r for r in server.requests() if r.method in ("PUT", "POST", "PATCH")]

    def test_a_broken_index_is_rebuilt_from_the_tags(
        self, warmed: Path, registry_factory: MakeRegistry, tmp_path: Path
    ) -> None:
        server = registry_factory(spack_cache=True)
        index = server.storage / "docker/registry/v2/repositories/demo/buildcache"
        link = index / "_manifests/tags/index.spack/current/link"
        digest = link.read_text().strip().removeprefix("sha256:")
        blob = server.storage / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
        blob.write_bytes(blob.read_bytes().replace(b"layers", b"nothing"))
        url = server.url()
        assert main(["push", url, "/ybmvd3u", "--store", str(warmed), "-q"]) == 0
        from cacheclient.mirrors.oci_index import open_oci_catalog

        held = {r.hash for r in open_oci_catalog(url) if r.installable}
        assert held == set(IMAGES)

    def test_mount_from_another_repository(
        self, warmed: Path, registry_factory: MakeRegistry, capsys: pytest.CaptureFixture[str]
    ) -> None:
        server = registry_factory()
        base = ["--store", str(warmed), "--json"]
        assert main(["push", server.url("team/a"), "demo-zlib@1.2.13", *base]) == 0
        capsys.readouterr()
        server.clear_log()
        args = ["push", server.url("team/b"), "demo-zlib@1.2.13", "--mount-from", "team/a"]
        assert main([*args, *base]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["blobs_uploaded"] == 0
        mounts = [r for r in server.requests() if r.method == "POST" and "mount=" in r.path]
        assert len(mounts) == 6  # two builds (a layer and a config each), the index and {}
        assert all(r.status == 201 for r in mounts)
        assert not [r for r in server.requests() if r.method == "PUT" and "/blobs/" in r.path]

    def test_concurrent_pushes_of_different_builds_both_reach_the_index(
        self, warmed: Path, registry_factory: MakeRegistry, tmp_path: Path
    ) -> None:
        server = registry_factory()
        url = server.url("fleet/cache")
        env = {**os.environ, "CACHECLIENT_STORE": str(warmed)}
        leaves = ["ybmvd3uhpbh7s2m74uv3dvqdkpg5obwd", "ztdmdn3qjmq5eonho2hoaqjrxlhkzymp"]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "cacheclient", "push", url, f"/{leaf}", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            for leaf in leaves
        ]
        for proc in procs:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
        assert main(["resolve", "/ybmvd3u", "--mirror", url, *HOST, "--store", str(tmp_path)]) == 0
        from cacheclient.mirrors.oci_index import open_oci_catalog

        catalog = open_oci_catalog(url)
        held = {r.hash for r in catalog if r.installable}
        assert set(leaves) <= held

    def test_warm_lock_pins_manifest_digests(
        self,
        warmed: Path,
        registry_factory: MakeRegistry,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        server = registry_factory()
        url = server.url("fleet/cache")
        assert main(["push", url, "--all", "--store", str(warmed), "-q"]) == 0
        manifest = tmp_path / "warm.yaml"
        manifest.write_text(WARM.format(url=url, signed="false"))
        lock = tmp_path / "ci.lock"
        args = ["warm", str(manifest), "--store", str(tmp_path / "a"), "--lock", str(lock), "-q"]
        assert main(args) == 0
        locked = json.loads(lock.read_text())["builds"]
        kinds = {b["mediaType"] for build in locked.values() for b in build["blobs"]}
        assert "application/vnd.oci.image.manifest.v1+json" in kinds
        for build in locked.values():
            assert len(build["blobs"]) == 3
        server.clear_log()
        capsys.readouterr()
        again = ["warm", "--from-lock", str(lock), "--store", str(tmp_path / "b"), "-q"]
        assert main(again) == 0
        by_digest = [r for r in server.requests() if "/manifests/sha256:" in r.path]
        assert len(by_digest) == len(locked)
        assert not [r for r in server.requests() if r.path.endswith(".spack")]

        manifest.write_text(WARM.format(url=url, signed="true"))
        args = ["warm", str(manifest), "--store", str(tmp_path / "c"), "-q"]
        assert main(args) == 4
        assert "--allow-unsigned" in capsys.readouterr().err


class TestDirectory:
    def test_push_to_a_directory_keeps_signatures_and_installs(
        self, warmed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        disk = tmp_path / "disk"
        assert main(["push", disk.as_uri(), "demo-tool@1.0.0", "--store", str(warmed)]) == 0
        assert "index lists" in capsys.readouterr().out
        args = ["push", str(disk), "demo-tool@1.0.0", "--store", str(warmed), "--json"]
        assert main(args) == 0
        doc = json.loads(capsys.readouterr().out)
        _valid_push_document(doc)
        assert doc["kind"] == "directory"
        assert main(["push", str(disk), "demo-zlib@1.2.13", "--store", str(warmed), "-q"]) == 0
        index = json.loads((disk / "v3/manifests/index/index.manifest.json").read_text())
        assert index["version"] == 3
        store = tmp_path / "s"
        assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
        root = tmp_path / "root"
        args = ["install", "demo-tool@1.0.0", "--mirror", str(disk), *HOST]
        capsys.readouterr()
        assert main([*args, "--store", str(store), "--root", str(root), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["unsigned"] == []
        assert _tool_runs(root).startswith("demo-tool 1.0.0")
        assert main(["resolve", "demo-zlib@1.2.13", "--mirror", str(disk), *HOST]) == 0

    def test_builds_fetched_from_a_registry_go_to_a_directory_and_another_registry(
        self, registry_factory: MakeRegistry, tmp_path: Path
    ) -> None:
        spack = registry_factory(spack_cache=True, readonly=True)
        store = tmp_path / "s"
        fetch = ["fetch", "demo-tool@1.0.0", "--mirror", spack.url(), *HOST, "--allow-unsigned"]
        assert main([*fetch, "--store", str(store), "-q"]) == 0
        disk = tmp_path / "disk"
        assert main(["push", str(disk), "--all", "--store", str(store), "-q"]) == 0
        other = registry_factory()
        assert main(["push", other.url("copy/cache"), "--all", "--store", str(store), "-q"]) == 0
        for source in (str(disk), other.url("copy/cache")):
            root = tmp_path / f"root-{len(source)}"
            args = ["install", "demo-tool@1.0.0", "--mirror", source, *HOST, "--allow-unsigned"]
            args += ["--store", str(tmp_path / f"fresh-{len(source)}"), "--root", str(root)]
            assert main([*args, "-q"]) == 0
            assert _tool_runs(root).startswith("demo-tool 1.0.0")

    def test_a_damaged_store_is_not_spread(
        self,
        warmed: Path,
        registry_factory: MakeRegistry,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        import shutil

        store = tmp_path / "store"
        shutil.copytree(warmed, store)
        zlib = "ybmvd3uhpbh7s2m74uv3dvqdkpg5obwd"
        record_path = store / ".cacheclient" / "builds" / f"{zlib}.json"
        record = json.loads(record_path.read_text())
        blob = store / "blobs" / "sha256" / record["tarball"]["checksum"][:2]
        blob = blob / record["tarball"]["checksum"]
        blob.chmod(0o644)
        data = bytearray(blob.read_bytes())
        data[100] ^= 1
        blob.write_bytes(bytes(data))
        disk = tmp_path / "disk"
        assert main(["push", str(disk), f"/{zlib}", "--store", str(store)]) == 8
        assert "damaged" in capsys.readouterr().err
        assert not list(disk.rglob(record["tarball"]["checksum"]))
        server = registry_factory()
        assert main(["push", server.url("x/y"), f"/{zlib}", "--store", str(store)]) == 8
        assert "damaged" in capsys.readouterr().err
        assert not [r for r in server.requests() if r.method in ("PUT", "POST")]
        # a record naming a blob by a path, not a digest, is not a build of the store at all
        # (the store refuses to read it: `cacheclient verify` reports it), so nothing matches
        record["tarball"]["checksum"] = "../../../../escape"
        record_path.write_text(json.dumps(record))
        assert main(["push", str(disk), f"/{zlib}", "--store", str(store)]) == 3
        assert "matches no build" in capsys.readouterr().err
        assert not (tmp_path / "escape").exists()

    def test_missing_dependency_is_a_store_error_and_nothing_is_pushed(
        self, warmed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        import shutil

        partial = tmp_path / "partial-store"
        shutil.copytree(warmed, partial)
        zlib_v3 = "4pnfv56zoqkyu4cep6uzu76sb73mlq2w"
        (partial / ".cacheclient" / "builds" / f"{zlib_v3}.json").unlink()
        disk = tmp_path / "disk"
        assert main(["push", str(disk), f"/{TOOL_V4}", "--store", str(partial)]) == 8
        err = capsys.readouterr().err
        assert "demo-zlib" in err
        assert not disk.exists()
        assert main(["push", str(disk), "nosuchthing", "--store", str(partial)]) == 3
        assert main(["push", str(disk), "--store", str(partial)]) == 2
