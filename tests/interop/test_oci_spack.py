"""Spack 1.1 itself reads an OCI build cache that ``cacheclient push`` wrote.

Self-contained: a store is warmed from the signed v3 fixture, pushed to Debian's docker-registry
served over HTTPS with a certificate made here, and the Spack of ``shared/tools/spack-kit``
(Spack 1.1.0 reads the index only over ``oci://``, not ``oci+http://``) lists every build and
installs all of them with ``--cache-only``; the relocated ``demo-tool`` programs run.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from paths import REPO_ROOT, SPACK_V3_KEY, SPACK_V3_SIGNED
from registryserver import SPACK_OCI, MakeRegistry, make_certificate

KIT = REPO_ROOT.parent / "shared" / "tools" / "spack-kit"
IMAGES = json.loads((SPACK_OCI / "expected.json").read_text())["images"]
HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]


@pytest.fixture(scope="module")
def spack_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not (KIT / "setup.sh").is_file():
        pytest.fail(f"{KIT} is missing: the interop tests need shared/tools/spack-kit", False)
    folder = tmp_path_factory.mktemp("spack")
    subprocess.run([str(KIT / "setup.sh"), str(folder)], check=True, capture_output=True)
    subprocess.run(
        [str(KIT / "add-recipes.sh"), str(folder), str(SPACK_V3_SIGNED)],
        check=True,
        capture_output=True,
    )
    yield folder
    subprocess.run(
        ["gpgconf", "--kill", "all"],
        env={**os.environ, "GNUPGHOME": str(folder / "gnupg")},
        check=False,
        capture_output=True,
    )


def _spack(folder: Path, *args: str) -> str:
    run = subprocess.run(
        [str(folder / "bin" / "spack"), *args], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.mark.slow
def test_spack_lists_and_installs_what_cacheclient_pushed(
    spack_dir: Path,
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

    _spack(spack_dir, "config", "add", f"config:ssl_certs:{cert}")
    subprocess.run(
        [str(KIT / "use-mirror.sh"), str(spack_dir), "fleet", url, "unsigned"],
        check=True,
        capture_output=True,
    )
    listed = _spack(spack_dir, "buildcache", "list", "--allarch", "-l")
    for image in IMAGES:
        assert f"{image['dag_hash'][:7]} {image['name']}@{image['version']}" in listed
    _spack(spack_dir, "install", "--cache-only", *hashes)
    for image in IMAGES:
        if image["name"] != "demo-tool":
            continue
        prefix = _spack(spack_dir, "location", "-i", f"/{image['dag_hash']}").strip()
        run = subprocess.run(
            [f"{prefix}/bin/demo-tool"], capture_output=True, text=True, check=True
        )
        assert run.stdout.startswith(f"demo-tool {image['version']}")
