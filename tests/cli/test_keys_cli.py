"""``cacheclient keys``: list, trust, untrust and fetch, with the fixture mirrors' real keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED, V2_MIRRORS
from servers import NginxServer

V3_FPR = "DB2679D9E5CB03ADB239ACC6789B96D6B931B1D5"
V2_FPR = "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E"

Capture = pytest.CaptureFixture[str]


def keys(store: Path, *args: str) -> int:
    return main(["keys", *args, "--store", str(store)])


def listing(store: Path, capsys: Capture) -> dict[str, list[dict[str, object]]]:
    capsys.readouterr()
    assert keys(store, "list", "--json") == 0
    data: dict[str, list[dict[str, object]]] = json.loads(capsys.readouterr().out)
    return data


class TestKeysCommand:
    def test_trust_list_untrust(self, tmp_path: Path, capsys: Capture) -> None:
        store = tmp_path / "s"
        # a store that was never created is an error, not an empty list (issue 16, item 7)
        assert keys(store, "list", "--json") == 8
        error = json.loads(capsys.readouterr().out)["error"]
        assert error["exit_code"] == 8
        assert "does not exist" in error["message"]
        assert keys(store, "trust", str(SPACK_V3_KEY)) == 0
        assert V3_FPR in capsys.readouterr().out
        data = listing(store, capsys)
        assert [k["fingerprint"] for k in data["trusted"]] == [V3_FPR]
        assert data["trusted"][0]["key_id"] == V3_FPR[-16:]
        assert keys(store, "list") == 0
        assert "Spack Demo Fixture Signer" in capsys.readouterr().out
        assert keys(store, "untrust", V3_FPR) == 0
        assert listing(store, capsys)["trusted"] == []
        assert keys(store, "untrust", V3_FPR) == 2
        assert "is not trusted" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("mirror", "fpr"), [(SPACK_V3_SIGNED, V3_FPR), (V2_MIRRORS / "signed", V2_FPR)]
    )
    def test_fetch_shows_but_does_not_trust(
        self,
        nginx_mirror: Callable[..., NginxServer],
        tmp_path: Path,
        capsys: Capture,
        mirror: Path,
        fpr: str,
    ) -> None:
        server = nginx_mirror(mirror)
        store = tmp_path / "s"
        assert keys(store, "fetch", server.url) == 0
        out = capsys.readouterr().out
        assert fpr in out
        assert "NOT trusted" in out
        data = listing(store, capsys)
        assert data["trusted"] == []
        assert [k["fingerprint"] for k in data["fetched_untrusted"]] == [fpr]
        assert keys(store, "trust", fpr) == 0
        data = listing(store, capsys)
        assert [k["fingerprint"] for k in data["trusted"]] == [fpr]
        assert data["fetched_untrusted"] == []

    def test_trust_unknown_fingerprint_and_missing_file(
        self, tmp_path: Path, capsys: Capture
    ) -> None:
        store = tmp_path / "s"
        assert keys(store, "trust", V3_FPR) == 2
        assert "keys fetch" in capsys.readouterr().err
        assert keys(store, "trust", str(tmp_path / "nope.asc")) == 2
        assert "cannot read key file" in capsys.readouterr().err

    def test_fetch_from_a_mirror_without_keys(self, tmp_path: Path, capsys: Capture) -> None:
        assert keys(tmp_path / "s", "fetch", str(V2_MIRRORS / "unsigned")) == 7
        assert "publishes no keys" in capsys.readouterr().err

    def test_store_env_is_honoured(
        self, tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CACHECLIENT_STORE", str(tmp_path / "env-store"))
        assert main(["keys", "trust", str(SPACK_V3_KEY)]) == 0
        assert (tmp_path / "env-store" / ".cacheclient" / "trust" / "trusted.gpg").is_file()
