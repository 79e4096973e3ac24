"""Item 7 (T4): odd local input is one clear line and a documented exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reliability import CliResult
from security.sectools import HOST, Sandbox, expect_error


def _from_lock(box: Sandbox, lock: Path) -> CliResult:
    return box.cli(
        "install", "--from-lock", str(lock), *HOST, "--store", str(box.store),
        "--root", str(box.root),
    )  # fmt: skip


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-3", "ten"])
@pytest.mark.parametrize(
    "name", ["CACHECLIENT_READ_TIMEOUT", "CACHECLIENT_RETRIES", "CACHECLIENT_DEADLINE"]
)
def test_numbers_from_the_environment(box: Sandbox, name: str, value: str) -> None:
    result = box.cli(
        "fetch", "demo-tool@1.0.0", "--mirror", box.mirror, *HOST, "--store", str(box.store),
        env={name: value},
    )  # fmt: skip
    expect_error(result, 2, name)
    box.finish()


@pytest.mark.parametrize(
    ("mirror", "words"),
    [("http://[::1", ("not a usable URL",)), ("~nouser-cacheclient/x", ("no such user",))],
)
def test_bad_mirror_urls(box: Sandbox, mirror: str, words: tuple[str, ...]) -> None:
    box.mirror = mirror
    expect_error(box.fetch(), 2, *words)
    box.finish()


def test_a_non_utf8_root(box: Sandbox) -> None:
    root = os.fsencode(box.base) + b"/r\xff"
    result = box.cli(
        "install", "demo-tool@1.0.0", "--mirror", box.mirror, *HOST, "--store", str(box.store),
        "--root", os.fsdecode(root),
    )  # fmt: skip
    expect_error(result, 2, "not valid UTF-8")
    assert not os.path.exists(root)
    box.finish()


def test_a_projection_with_a_format_spec(box: Sandbox) -> None:
    expect_error(box.install("--projection", "{name:>999999999}"), 2, "format specs")
    box.finish()


def test_a_warm_manifest_nested_thousands_deep(box: Sandbox) -> None:
    manifest = box.base / "deep.yaml"
    manifest.write_text("profiles: " + "[" * 5000 + "]" * 5000 + "\n")
    result = box.cli("warm", str(manifest), "--store", str(box.store))
    assert result.code in (2, 7), result.err
    expect_error(result, result.code, "")
    box.finish()


def test_a_lock_nested_thousands_deep(box: Sandbox) -> None:
    lock = box.base / "deep.lock"
    lock.write_text("[" * 100_000)
    expect_error(_from_lock(box, lock), 7, str(lock))
    box.finish()


def test_a_lock_naming_a_path_outside_its_layout(box: Sandbox) -> None:
    assert box.fetch().code == 0
    lock = box.base / "warm.lock"
    manifest = box.base / "warm.yaml"
    manifest.write_text(
        json.dumps(
            {
                "mirrors": [{"url": box.mirror}],
                "profiles": [{"platform": "linux", "os": "debian12", "target": "x86_64_v4"}],
                "specs": ["demo-tool@1.0.0"],
            }
        )
    )
    made = box.cli("warm", str(manifest), "--store", str(box.store), "--lock", str(lock))
    assert made.code == 0, made.err
    data = json.loads(lock.read_text())
    build = next(iter(data["builds"].values()))
    build["manifest"] = "v3/manifests/spec/other/x.spec.manifest.json"
    lock.write_text(json.dumps(data))
    expect_error(_from_lock(box, lock), 7, "not the layout-3")
    box.finish()


def test_corrupt_on_disk_index_cache_is_rebuilt(box: Sandbox) -> None:
    assert box.install().code == 0
    for cached in (box.store / ".cacheclient" / "indices").rglob("index.json"):
        cached.write_bytes(b'{"database": {"installs": {"x": ')
    for meta in (box.store / ".cacheclient" / "indices").rglob("meta.json"):
        data = json.loads(meta.read_text())
        data["checked_at"] = 10**12  # fresh: the cache is used without asking the mirror
        meta.write_text(json.dumps(data))
    result = box.install("--force")
    assert result.code == 0, result.err
    box.finish()
