"""Spack's own ``mirrors.yaml`` wherever a mirror list is accepted: the config file (inline or
``spack_mirrors: FILE``) and the warm manifest; ``signed: false`` and ``binary: false`` honoured."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from cacheclient.errors import ConfigError
from cacheclient.mirrors.spackconfig import parse_mirror_list, parse_spack_mirrors
from cacheclient.settings import parse_config
from paths import SPACK_V3_SIGNED, SPACK_V3_UNSIGNED

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
Capture = pytest.CaptureFixture[str]

SPACK_MIRRORS_YAML = f"""\
mirrors::
  sources-only:
    url: https://example.invalid/sources
    binary: false
  demo:
    fetch:
      url: file://{SPACK_V3_UNSIGNED}
      access_pair: [id, secret]
    push: s3://bucket/cache
    signed: false
    autopush: false
"""


def test_install_with_the_mirrors_yaml_a_spack_user_has(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mirrors.yaml").write_text(SPACK_MIRRORS_YAML)
    config = tmp_path / "config.yaml"
    config.write_text("spack_mirrors: mirrors.yaml\n")  # relative to the config file
    monkeypatch.setenv("CACHECLIENT_CONFIG", str(config))
    root = tmp_path / "root"
    args = ["install", "demo-tool@1.0.0", *HOST, "--store", str(tmp_path / "s")]
    # no --mirror, no trusted key: the mirror comes from mirrors.yaml, marked signed: false
    assert main([*args, "--root", str(root), "--quiet"]) == 0
    (tool,) = root.glob("*/demo-tool-1.0.0-*/bin/demo-tool")
    done = subprocess.run([str(tool)], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("demo-tool 1.0.0")


def test_inline_spack_mapping_in_the_config(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"mirrors:\n  local: {SPACK_V3_SIGNED}\n")
    monkeypatch.setenv("CACHECLIENT_CONFIG", str(config))
    assert main(["resolve", "demo-tool@1.0.0", *HOST, "--store", str(tmp_path / "s")]) == 0
    assert "/vwaicym" in capsys.readouterr().out


@pytest.mark.parametrize("spelling", ["inline", "file"])
def test_warm_manifest_takes_spack_mirrors(tmp_path: Path, capsys: Capture, spelling: str) -> None:
    (tmp_path / "mirrors.yaml").write_text(SPACK_MIRRORS_YAML)
    mirrors = (
        "spack_mirrors: mirrors.yaml\n"
        if spelling == "file"
        else f"mirrors:\n  demo:\n    fetch: file://{SPACK_V3_UNSIGNED}\n    signed: false\n"
    )
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        mirrors + "profiles:\n  - {platform: linux, os: debian12, target: x86_64_v4}\n"
        "specs: [demo-tool@1.0.0]\n"
    )
    assert main(["warm", str(manifest), "--store", str(tmp_path / "s"), "--json", "-q"]) == 0
    assert '"not_signature_checked"' in capsys.readouterr().out


def test_problems_are_reported_not_ignored(tmp_path: Path, capsys: Capture) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "mirrors:\n  a: {fetchh: file:///x}\n  b: {url: file:///y, signed: maybe}\n"
        "spack_mirrors: nowhere.yaml\nspecs: [demo-tool]\n"
    )
    assert main(["warm", str(manifest), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "mirrors.a: unknown key(s) fetchh" in err
    assert "mirrors.b.signed: must be true or false" in err
    assert "nowhere.yaml: cannot read" in err


class TestParsing:
    def test_spack_shapes(self) -> None:
        found, problems = parse_spack_mirrors(
            {
                "mirrors": {
                    "plain": "https://a.example/cache",
                    "split": {"fetch": "https://b.example/f", "push": "s3://b/p"},
                    "url": {"url": "https://c.example/", "signed": False},
                    "src": {"url": "https://d.example/", "binary": False},
                    "pushonly": {"push": "s3://e/"},
                }
            }
        )
        assert [(m.name, m.url, m.signed) for m in found] == [
            ("plain", "https://a.example/cache", True),
            ("split", "https://b.example/f", True),
            ("url", "https://c.example/", False),
        ]
        assert problems == ["mirrors.pushonly: needs 'url' or 'fetch' ('push' is only for uploads)"]

    def test_config_keeps_its_own_spellings(self) -> None:
        assert parse_config("mirrors: https://a.example\n", "c").mirrors == ("https://a.example",)
        config = parse_config("mirrors: [{url: /m, signed: false}, /n]\n", "c")
        assert (config.mirrors, config.unsigned_mirrors) == (("/m", "/n"), ("/m",))
        assert parse_mirror_list(42)[1] == [
            "mirrors: must be a list of URLs or Spack's mirrors mapping"
        ]
        with pytest.raises(ConfigError, match="mirrors"):
            parse_config("mirrors: 42\n", "c")
