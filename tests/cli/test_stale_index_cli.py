"""A mirror unreachable after the index TTL: the cached index is used with a warning and the
store serves what it holds (as Spack keeps using its cached index); what it lacks is exit 5."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED
from servers import NginxServer

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
Capture = pytest.CaptureFixture[str]


def _age_indexes(store: Path, seconds: float) -> int:
    """Make every cached index look *seconds* old (as if the TTL had long passed)."""
    metas = list((store / ".cacheclient" / "indices").glob("*/meta.json"))
    for meta in metas:
        data = json.loads(meta.read_text())
        data["checked_at"] = time.time() - seconds
        meta.write_text(json.dumps(data))
    return len(metas)


def test_unreachable_mirror_after_the_ttl(
    nginx_mirror: Callable[..., NginxServer],
    tmp_path: Path,
    capsys: Capture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHECLIENT_RETRIES", "1")
    server = nginx_mirror(SPACK_V3_SIGNED)
    url, store = server.url, tmp_path / "store"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    common = ["--mirror", url, *HOST, "--store", str(store)]
    assert main(["fetch", "demo-tool@1.0.0", *common, "--quiet"]) == 0
    server.stop()
    assert _age_indexes(store, 2 * 3600) == 1
    capsys.readouterr()

    root = tmp_path / "root"
    assert main(["install", "demo-tool@1.0.0", *common, "--root", str(root), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"{url} is unreachable; using its index cached 2 h ago" in err
    (tool,) = root.glob("*/demo-tool-1.0.0-*/bin/demo-tool")
    done = subprocess.run([str(tool)], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("demo-tool 1.0.0")

    assert main(["resolve", "demo-tool@1.0.0", *common, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert any("is unreachable" in w for w in doc["warnings"])

    # a build the store does not hold still needs the mirror: exit 5, not a silent success
    assert main(["fetch", "demo-zlib@1.2.13", *common, "--quiet"]) == 5


def test_unreachable_with_nothing_cached_is_still_exit_5(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from servers import refused_url

    monkeypatch.setenv("CACHECLIENT_RETRIES", "1")
    args = ["resolve", "demo-tool", "--mirror", refused_url(), *HOST]
    assert main([*args, "--store", str(tmp_path / "s")]) == 5
    assert "unreachable; using" not in capsys.readouterr().err
