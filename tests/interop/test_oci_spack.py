"""Spack 1.1 itself reads an OCI build cache that ``cacheclient push`` wrote.

Self-contained: a store is warmed from the signed v3 fixture and pushed to Debian's
docker-registry served over HTTPS with a certificate made here; a Spack user of the kit
(``$SPACK_KIT``, default ``../shared/tools/spack-kit``; ``$SPACK_KIT_DIR`` reuses a set-up kit)
with its own configuration scope, trusting that certificate (``config:ssl_certs``), lists every
build and installs all of them with ``--cache-only``; the relocated ``demo-tool`` programs run.
Spack 1.1.0 reads an OCI index only over ``oci://`` (HTTPS), not ``oci+http://``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED
from registryserver import SPACK_OCI, MakeRegistry, make_certificate
from spackkit import SpackClient, SpackKit, find_kit

IMAGES = json.loads((SPACK_OCI / "expected.json").read_text())["images"]
HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> SpackKit:
    folder = find_kit()
    if not (folder / "setup.sh").is_file():
        pytest.fail(f"the spack-kit is missing at {folder} (set SPACK_KIT)", pytrace=False)
    reuse = os.environ.get("SPACK_KIT_DIR")
    directory = Path(reuse) if reuse else tmp_path_factory.mktemp("spack")
    for cmd in (
        [str(folder / "setup.sh"), str(directory)],
        [str(folder / "add-recipes.sh"), str(directory), str(SPACK_V3_SIGNED)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return SpackKit(kit=folder, directory=directory)


def _user(kit: SpackKit, home: Path, url: str, cert: Path) -> SpackClient:
    """A Spack user whose only mirror is the registry, trusting *cert* for HTTPS."""
    config = home / "config"
    config.mkdir(parents=True)
    (config / "mirrors.yaml").write_text(
        f"mirrors::\n  fleet:\n    url: {url}\n    binary: true\n    source: false\n"
        "    signed: false\n"
    )
    (config / "config.yaml").write_text(
        f"config:\n  install_tree:\n    root: {home / 'tree'}\n  ssl_certs: {cert}\n"
    )
    (home / "gnupg").mkdir(mode=0o700)
    return SpackClient(kit=kit, home=home, mirror=home)


@pytest.mark.slow
def test_spack_lists_and_installs_what_cacheclient_pushed(
    kit: SpackKit,
    registry_factory: MakeRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = make_certificate(tmp_path / "tls")
    server = registry_factory(tls=(cert, key))
    url = server.url("fleet/cache")
    assert url.startswith("oci://")
    store = tmp_path / "store"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    hashes = [f"/{image['dag_hash']}" for image in IMAGES]
    fetch = ["fetch", *hashes, "--mirror", str(SPACK_V3_SIGNED), *HOST, "--store", str(store)]
    assert main([*fetch, "-q"]) == 0
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    assert main(["push", url, "--all", "--store", str(store), "-q"]) == 0

    spack = _user(kit, tmp_path / "user", url, cert)
    try:
        listed = spack.run("buildcache", "list", "--allarch", "-l").stdout
        for image in IMAGES:
            assert f"{image['dag_hash'][:7]} {image['name']}@{image['version']}" in listed
        spack.run("install", "--cache-only", *hashes)
        for image in IMAGES:
            if image["name"] != "demo-tool":
                continue
            prefix = spack.run("location", "-i", f"/{image['dag_hash']}").stdout.strip()
            run = subprocess.run(
                [f"{prefix}/bin/demo-tool"], capture_output=True, text=True, check=True
            )
            assert run.stdout.startswith(f"demo-tool {image['version']}")
    finally:
        spack.stop_agent()
