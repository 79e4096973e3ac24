"""A cold fetch makes the fewest requests the layout allows: the index once, then per build its
manifest, spec blob and tarball; no probe that 404s, no index request per build (issue 16, 14)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from builders import trust_key
from cacheclient.cli.main import main
from nginxserver import NginxServer
from paths import SPACK_V3_SIGNED, V2_MIRRORS

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]


def _fetch(server: NginxServer, store: Path, *args: str) -> int:
    return main(["fetch", *args, "--mirror", server.url, "--store", str(store), "--quiet"])


def test_v3_cold_fetch(
    nginx_mirror: Callable[..., NginxServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = nginx_mirror(SPACK_V3_SIGNED)
    store = trust_key(tmp_path / "s")
    assert _fetch(server, store, "demo-tool@1.0.0", *HOST) == 0, capsys.readouterr().err
    requests = server.requests()
    assert [r.status for r in requests if r.status != 200] == []
    uris = Counter(r.uri for r in requests)
    assert uris["/v3/manifests/index/index.manifest.json"] == 1
    assert not any("build_cache" in u for u in uris)  # no v2 probe on a v3 mirror
    assert len(requests) == 2 + 3 * 4  # index manifest + blob; 4 builds x (manifest, spec, tar)
    assert max(uris.values()) == 1


def test_v2_cold_fetch(
    nginx_mirror: Callable[..., NginxServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Builds a v2 index lists are fetched in the v2 layout straight away: no v3 probe."""
    mirror = V2_MIRRORS / "signed"
    key = next((mirror / "build_cache" / "_pgp").glob("*.pub"))
    server = nginx_mirror(mirror)
    store = trust_key(tmp_path / "s", key)
    host = ["--platform", "test", "--os", "debian6", "--target", "m1"]
    assert _fetch(server, store, "libdwarf", *host) == 0, capsys.readouterr().err
    requests = server.requests()
    # one layout probe for the mirror (the v3 index manifest), none per build
    assert [r.uri for r in requests if r.status != 200] == [
        "/v3/manifests/index/index.manifest.json"
    ]
    assert not any(r.uri.startswith("/v3/manifests/spec/") for r in requests)
