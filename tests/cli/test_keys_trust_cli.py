"""``keys trust`` by fingerprint or long/short key ID, as gpg accepts; the user's keyring in the
config directory survives clearing caches; the store's keyring for CI; ``keys list`` says where
each trusted key lives. Real gpg, Spack's own signed fixture mirror."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from cacheclient.cli.main import main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED

FPR = "DB2679D9E5CB03ADB239ACC6789B96D6B931B1D5"
HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
Capture = pytest.CaptureFixture[str]


def _listing(capsys: Capture, *extra: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["keys", "list", "--json", *extra]) == 0
    trusted: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["trusted"]
    return trusted


def test_short_key_id_into_the_user_keyring_survives_clearing_caches(
    tmp_path: Path, capsys: Capture
) -> None:
    config = Path(os.environ["XDG_CONFIG_HOME"])
    cache = Path(os.environ["XDG_CACHE_HOME"])
    assert main(["keys", "fetch", str(SPACK_V3_SIGNED)]) == 0
    assert main(["keys", "trust", FPR[-8:].lower()]) == 0  # short key ID, any case
    out = capsys.readouterr().out
    assert f"trusted {FPR}" in out
    assert "user keyring" in out
    keys = _listing(capsys)
    assert [(k["fingerprint"], k["keyring"]) for k in keys] == [(FPR, "user")]
    assert Path(keys[0]["path"]).is_relative_to(config)

    shutil.rmtree(cache)  # the user clears caches: the store (and its fetched keys) go
    root = tmp_path / "root"
    install = ["install", "demo-tool@1.0.0", "--mirror", str(SPACK_V3_SIGNED), *HOST]
    assert main([*install, "--root", str(root), "--quiet"]) == 0  # verified by the user's key
    assert list(root.glob("*/demo-tool-1.0.0-*/bin/demo-tool"))
    assert [k["keyring"] for k in _listing(capsys)] == ["user"]

    assert main(["keys", "list"]) == 0
    assert f"{FPR}  Spack Demo Fixture Signer" in capsys.readouterr().out
    assert main(["keys", "untrust", FPR[-16:]]) == 0  # long key ID
    assert _listing(capsys) == []
    capsys.readouterr()
    assert main([*install, "--root", str(tmp_path / "r2"), "--quiet"]) == 4


def test_a_named_store_keeps_its_own_keyring_for_ci(tmp_path: Path, capsys: Capture) -> None:
    store = tmp_path / "ci-store"
    assert main(["keys", "fetch", str(SPACK_V3_SIGNED), "--store", str(store)]) == 0
    assert main(["keys", "trust", FPR[-16:], "--store", str(store)]) == 0
    keys = _listing(capsys, "--store", str(store))
    assert [k["keyring"] for k in keys] == ["store"]
    assert Path(keys[0]["path"]) == store / ".cacheclient" / "trust" / "trusted.gpg"
    assert _listing(capsys) == []  # the default store and the user keyring know nothing
    # --keyring user puts it in the user's keyring instead; both are then listed
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--keyring", "user"]) == 0
    keys = _listing(capsys, "--store", str(store))
    assert sorted(k["keyring"] for k in keys) == ["store", "user"]
    assert main(["keys", "untrust", FPR, "--store", str(store), "--keyring", "store"]) == 0
    assert [k["keyring"] for k in _listing(capsys, "--store", str(store))] == ["user"]


def test_unknown_and_ambiguous_key_ids(tmp_path: Path, capsys: Capture) -> None:
    store = tmp_path / "s"
    assert main(["keys", "trust", "B931B1D5", "--store", str(store)]) == 2
    assert "run 'cacheclient keys fetch MIRROR' first" in capsys.readouterr().err
    assert main(["keys", "fetch", str(SPACK_V3_SIGNED), "--store", str(store)]) == 0
    twin = store / ".cacheclient" / "trust" / "fetched" / f"{'0' * 32}B931B1D5.gpg"
    twin.write_bytes(b"not used")
    capsys.readouterr()
    assert main(["keys", "trust", "0xB931B1D5", "--store", str(store)]) == 2
    assert "key ID B931B1D5 is ambiguous" in capsys.readouterr().err
    assert main(["keys", "trust", FPR[-16:], "--store", str(store)]) == 0
