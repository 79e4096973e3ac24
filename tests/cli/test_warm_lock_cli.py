"""``warm --lock``: only a successful run writes the lock; it is written 0644, atomically."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED

Capture = pytest.CaptureFixture[str]


def _manifest(tmp_path: Path, specs: str, mirror: str = str(SPACK_V3_SIGNED)) -> Path:
    path = tmp_path / f"m{len(list(tmp_path.glob('m*.yaml')))}.yaml"
    path.write_text(
        f"mirrors:\n  - url: {mirror}\n"
        "profiles:\n  - {platform: linux, os: debian12, target: x86_64_v4}\n"
        f"specs: {specs}\n"
    )
    return path


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    yield
    os.umask(old)


@pytest.mark.usefixtures("strict_umask")
def test_a_failed_run_leaves_the_lock_untouched(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, lock = tmp_path / "store", tmp_path / "ci.lock"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    warm = ["warm", "--store", str(store), "--lock", str(lock), "--quiet"]
    assert main([*warm, str(_manifest(tmp_path, "[demo-tool@1.0.0]"))]) == 0
    assert stat.S_IMODE(lock.stat().st_mode) == 0o644  # even under umask 077
    before = lock.read_bytes()
    os.utime(lock, (1_000_000, 1_000_000))
    capsys.readouterr()

    # a spec with no build: exit 3, and the lock is the one of the last good run
    missing = _manifest(tmp_path, "[demo-tool@1.0.0, demo-nothing]")
    assert main([*warm, str(missing)]) == 3
    assert "not written, the run failed" in capsys.readouterr().err
    assert lock.read_bytes() == before
    assert lock.stat().st_mtime == 1_000_000

    # no mirror reachable: exit 5, lock untouched
    from servers import refused_url

    monkeypatch.setenv("CACHECLIENT_RETRIES", "1")
    assert main([*warm, str(_manifest(tmp_path, "[demo-tool]", refused_url()))]) == 5
    assert lock.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ci.lock.")]

    # --allow-missing: the run succeeds, so the lock is rewritten (naming the gap)
    assert main([*warm, "--allow-missing", str(missing)]) == 0
    specs = json.loads(lock.read_text())["profiles"][0]["specs"]
    assert [(s["request"], s["root"] is None) for s in specs] == [
        ("demo-tool@1.0.0", False),
        ("demo-nothing", True),
    ]
    assert stat.S_IMODE(lock.stat().st_mode) == 0o644


def test_a_replaced_lock_keeps_its_mode(tmp_path: Path) -> None:
    store, lock = tmp_path / "store", tmp_path / "ci.lock"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    lock.write_text("{}")
    lock.chmod(0o664)
    warm = ["warm", "--store", str(store), "--lock", str(lock), "--quiet"]
    assert main([*warm, str(_manifest(tmp_path, "[demo-zlib@1.3.1]"))]) == 0
    assert stat.S_IMODE(lock.stat().st_mode) == 0o664
    assert json.loads(lock.read_text())["lock_version"] == 1
