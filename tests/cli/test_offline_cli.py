"""``--offline`` on every command that reads mirrors: no request reaches the mirror, and with no
source named the store itself is the mirror (nginx, real signatures)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED
from servers import NginxServer

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
TOOL = "vwaicymp67emhvtu53ght22dv5pm6y2b"
Capture = pytest.CaptureFixture[str]


@pytest.fixture
def warmed(nginx_mirror: Callable[..., NginxServer], tmp_path: Path) -> tuple[NginxServer, Path]:
    """A store that fetched demo-tool's closure online once; the server's log is cleared."""
    server = nginx_mirror(SPACK_V3_SIGNED)
    store = tmp_path / "store"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    fetch = ["fetch", "demo-tool@1.0.0", "--mirror", server.url, *HOST, "--store", str(store)]
    assert main([*fetch, "--quiet"]) == 0
    server.clear_log()
    return server, store


def test_resolve_offline_from_the_store_or_a_cached_index(
    warmed: tuple[NginxServer, Path], capsys: Capture
) -> None:
    server, store = warmed
    capsys.readouterr()
    for source in ([], ["--mirror", server.url]):
        args = ["resolve", "demo-tool", "--offline", *source, *HOST, "--store", str(store)]
        assert main([*args, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["requests"][0]["selected"]["hash"] == TOOL
    assert server.requests() == []


def test_inspect_and_dry_run_offline(warmed: tuple[NginxServer, Path], capsys: Capture) -> None:
    server, store = warmed
    capsys.readouterr()
    assert main(["inspect", server.url, "--offline", "--store", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 18
    dry = ["install", "demo-tool@1.0.0", "--dry-run", "--offline", *HOST, "--store", str(store)]
    assert main([*dry, "--mirror", server.url, "--root", str(store.parent / "r"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [b["fetch"] for b in plan["builds"]] == [False] * 4
    assert server.requests() == []
    assert not (store.parent / "r").exists()


def test_offline_with_nothing_to_read(tmp_path: Path, capsys: Capture) -> None:
    args = ["resolve", "demo-tool", "--offline", *HOST, "--store", str(tmp_path / "empty")]
    assert main(args) == 2
    assert "holds no builds yet" in capsys.readouterr().err
    page = "https://cache.spack.io/package/demo-tool.md"
    assert main(["resolve", "demo-tool", "--offline", "--metadata", page, *HOST]) == 2
    assert "needs the network" in capsys.readouterr().err
    assert main(["inspect", page, "--offline"]) == 2
    assert "needs the network" in capsys.readouterr().err
    assert main(["keys", "fetch", "https://mirror.example/cache", "--offline"]) == 2
    assert "needs the network" in capsys.readouterr().err
    store = ["--store", str(tmp_path / "k")]
    assert main(["keys", "fetch", str(SPACK_V3_SIGNED), "--offline", *store]) == 0
