"""The README's fleet recipe against a local registry, and a push that dies half-way.

Recipe: one job warms a store from the origin (a signed v3 mirror on nginx) and writes a lock,
pushes the lock's builds to a registry that needs a login (htpasswd, credentials from the
environment, as CI systems provide them); the other runners install from the registry with
fresh stores and never touch the origin.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cacheclient.cli.main import install_from_cache, main
from cacheclient.metadata.oci_image import is_build_tag, parse_image_manifest
from cacheclient.transport import transport_for
from cacheclient.transport.oci import OciTransport, parse_oci_url
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED
from registryserver import CutProxy, MakeRegistry, write_htpasswd
from servers import NginxServer

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
PASSWORD = "fleet-secret-7"  # noqa: S105 - a throwaway test password
WARM = """\
mirrors:
  - url: {url}
profiles:
  - {{platform: linux, os: debian12, target: x86_64_v4}}
specs: [demo-tool@1.0.0]
"""


def _consistent(url: str) -> set[str]:
    """Every tag's manifest names blobs the registry has; the index lists only tagged builds.
    Returns the hashes the index lists."""
    ref = parse_oci_url(url)
    transport = transport_for(ref.url)
    assert isinstance(transport, OciTransport)
    tags = transport.list_tags(ref)
    tagged = set()
    for tag in tags:
        got = transport.manifest(ref, tag)
        assert got is not None
        manifest = parse_image_manifest(got[0], tag)
        for blob in (manifest.config, *manifest.layers):
            assert transport.blob_size(ref, f"sha256:{blob.checksum}") == blob.size, tag
        if is_build_tag(tag):
            tagged.add(tag[: -len(".spack")].rsplit("-", 1)[1])
    if "index.spack" not in tags:
        return set()
    got = transport.manifest(ref, "index.spack")
    assert got is not None
    layer = parse_image_manifest(got[0], "index").layers[0]
    data = transport.read(f"{ref.url}/blobs/sha256:{layer.checksum}")
    assert data is not None
    installs = json.loads(data)["database"]["installs"]
    listed = {h for h, entry in installs.items() if entry["in_buildcache"]}
    assert listed <= tagged
    return listed


def test_fleet_recipe_with_a_login_and_the_origin_untouched(
    registry_factory: MakeRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = registry_factory(htpasswd=write_htpasswd(tmp_path / "htpasswd", {"ci": PASSWORD}))
    cache = server.url("team/spack-cache")
    origin = NginxServer(SPACK_V3_SIGNED, tmp_path / "nginx").start()
    try:
        # The warming job.
        store = tmp_path / "warm-store"
        manifest = tmp_path / "warm.yaml"
        manifest.write_text(WARM.format(url=origin.url))
        lock = tmp_path / "ci.lock"
        assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
        assert main(["warm", str(manifest), "--store", str(store), "--lock", str(lock), "-q"]) == 0
        monkeypatch.setenv("CACHECLIENT_OCI_USERNAME", "ci")
        monkeypatch.setenv("CACHECLIENT_OCI_PASSWORD", PASSWORD)
        capsys.readouterr()
        push = ["push", cache, "--from-lock", str(lock), "--store", str(store), "--json"]
        assert main(push) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["index_builds"] == 4
        origin.clear_log()

        # Two runners with fresh stores.
        for runner in ("a", "b"):
            root = tmp_path / f"root-{runner}"
            args = ["demo-tool@1.0.0", "--mirror", cache, *HOST, "--allow-unsigned"]
            args += ["--store", str(tmp_path / f"store-{runner}"), "--root", str(root), "-q"]
            assert install_from_cache(args) == 0
            (tool,) = root.glob("*/demo-tool-*/bin/demo-tool")
            run = subprocess.run([str(tool)], capture_output=True, text=True, check=True)
            assert run.stdout.startswith("demo-tool 1.0.0")
        assert origin.requests() == []
        out = capsys.readouterr()
        assert PASSWORD not in out.out + out.err
    finally:
        origin.stop()
    assert len(_consistent(cache)) == 4


def test_a_push_interrupted_half_way_leaves_the_registry_consistent(
    registry_factory: MakeRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = tmp_path / "store"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    fetch = ["fetch", "demo-tool@1.0.0", "--mirror", str(SPACK_V3_SIGNED), *HOST]
    assert main([*fetch, "--store", str(store), "-q"]) == 0
    server = registry_factory()
    proxy = CutProxy(server.host, stop_after_puts=4)
    monkeypatch.setenv("CACHECLIENT_RETRIES", "1")
    through_proxy = f"oci+http://{proxy.host}/team/cache"
    try:
        args = ["push", through_proxy, "--all", "--store", str(store), "--jobs", "1"]
        assert main(args) == 5
        assert "connection" in capsys.readouterr().err
    finally:
        proxy.stop()
    direct = server.url("team/cache")
    assert _consistent(direct) == set()  # blobs and maybe tags, but no index naming a gap
    assert main(["push", direct, "--all", "--store", str(store), "-q"]) == 0
    assert len(_consistent(direct)) == 4
