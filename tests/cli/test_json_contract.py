"""Every ``--json`` document names its schema and version, validates against the JSON Schema
shipped in ``cacheclient/schemas/``, and a failure is a JSON error object with the exit code
(issue 16, item 4). Real outputs of real commands, not hand-made samples."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from cacheclient.cli.main import install_from_cache, main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v2"]
FPR = "DB2679D9E5CB03ADB239ACC6789B96D6B931B1D5"
BASE = "https://cacheclient.invalid/schemas/"

Capture = pytest.CaptureFixture[str]


def _schemas() -> dict[str, dict[str, Any]]:
    folder = resources.files("cacheclient") / "schemas"
    found: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            found[entry.name.removesuffix(".json")] = json.loads(entry.read_text("utf-8"))
    return found


SCHEMAS = _schemas()
REGISTRY: Registry[Any] = Registry().with_resources(
    (f"{BASE}{name}.json", Resource.from_contents(doc)) for name, doc in SCHEMAS.items()
)


def check(text: str) -> dict[str, Any]:
    """*text* is exactly one JSON document that is valid for the schema it names."""
    doc: dict[str, Any] = json.loads(text)
    name = doc["schema"].removeprefix("cacheclient.")
    assert doc["schema_version"] == 1
    assert name in SCHEMAS, f"no schema published for {doc['schema']}"
    validator = Draft202012Validator(SCHEMAS[name], registry=REGISTRY)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    return doc


def run(capsys: Capture, *argv: str, code: int = 0) -> dict[str, Any]:
    capsys.readouterr()
    assert main(list(argv)) == code
    return check(capsys.readouterr().out)


@pytest.fixture
def store(tmp_path: Path, capsys: Capture) -> Path:
    path = tmp_path / "store"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(path)]) == 0
    capsys.readouterr()
    return path


def test_the_schemas_are_valid_json_schemas() -> None:
    assert {"error", "install", "fetch", "inspect", "resolve", "warm", "config"} <= set(SCHEMAS)
    for doc in SCHEMAS.values():
        Draft202012Validator.check_schema(doc)


def test_every_command_output_validates(store: Path, tmp_path: Path, capsys: Capture) -> None:
    mirror = str(SPACK_V3_SIGNED)
    s = ["--store", str(store)]
    root = ["--root", str(tmp_path / "root")]
    host = run(capsys, "host", *HOST, "--json")
    assert host["schema"] == "cacheclient.host"
    assert host["error"] is None
    assert run(capsys, "inspect", mirror, "--json")["records"] == 18
    resolved = run(capsys, "resolve", "demo-tool@1.0.0", "--mirror", mirror, *HOST, *s, "--json")
    assert resolved["requests"][0]["selected"]["name"] == "demo-tool"
    assert run(capsys, "fetch", "demo-tool", "--mirror", mirror, *HOST, *s, "--json", "-q")[
        "builds"
    ]
    plan = run(capsys, "install", "demo-tool", "--mirror", mirror, *HOST, *s, *root, "--json",
               "--dry-run")  # fmt: skip
    assert plan["dry_run"] is True
    done = run(capsys, "install", "demo-tool", "--mirror", mirror, *HOST, *s, *root, "--json")
    assert {b["status"] for b in done["builds"]} == {"installed"}
    listed = run(capsys, "list", *root, "--json")["builds"]
    assert {b["name"] for b in listed} >= {"demo-tool", "demo-zlib"}
    assert run(capsys, "env", "demo-tool", *root, "--json")["variables"]["PATH"]
    exported = run(capsys, "export", "--all", str(tmp_path / "exported"), *s, "--json")
    assert len(exported["builds"]) >= 4
    removed = run(capsys, "uninstall", "demo-tool", *root, "--json")["removed"]
    assert [r["name"] for r in removed] == ["demo-tool"]
    assert [k["fingerprint"] for k in run(capsys, "keys", "list", *s, "--json")["trusted"]] == [FPR]
    assert run(capsys, "keys", "fetch", mirror, *s, "--json")["trusted"] is False
    assert run(capsys, "verify", *s, "--json")["blobs_checked"] > 0
    assert run(capsys, "gc", *s, "--max-size", "1T", "--json")["evicted"] == []
    manifest = tmp_path / "ci.yaml"
    manifest.write_text(
        f"mirrors: [{mirror}]\nspecs: [demo-tool]\n"
        "profiles:\n  - {platform: linux, os: debian12, target: x86_64_v2}\n"
    )
    assert run(capsys, "warm", str(manifest), *s, "--json", "-q")["exit_code"] == 0
    assert run(capsys, "config", *s, "--json")["settings"]
    assert run(capsys, "keys", "untrust", FPR, *s, "--json")["untrusted"]["fingerprint"] == FPR
    assert run(capsys, "keys", "trust", str(SPACK_V3_KEY), *s, "--json")["trusted"]


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["install", "demo-tool/zzzzzzz", *HOST, "--root", "r"], 3, "hash prefix zzzzzzz"),
        (["fetch", "demo-tool", *HOST, "--offline"], 5, "offline"),
        (["resolve", "nosuchthing", *HOST], 3, "no build named nosuchthing"),
        (["verify", "--store", "{tmp}/missing"], 8, "does not exist"),
    ],
)
def test_failures_are_a_json_error_object(
    store: Path, tmp_path: Path, capsys: Capture, *, argv: list[str], code: int, words: str
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--store" not in argv:
        argv += ["--store", str(store)]
    if argv[0] in ("install", "fetch", "resolve"):
        argv += ["--mirror", str(SPACK_V3_SIGNED)]
    doc = run(capsys, *argv, "--json", code=code)
    assert doc["error"]["exit_code"] == code
    assert words in doc["error"]["message"]
    # a resolve that found nothing still carries its result, and the error
    assert doc["schema"] in ("cacheclient.error", f"cacheclient.{argv[0]}")


def test_inspect_and_install_failures_print_json_too(tmp_path: Path, capsys: Capture) -> None:
    """The three commands that printed nothing on failure (issue 16)."""
    doc = run(capsys, "inspect", str(tmp_path / "nope"), "--json", code=2)
    assert doc == {
        "schema": "cacheclient.error",
        "schema_version": 1,
        "command": "inspect",
        "error": doc["error"],
    }
    assert doc["error"]["type"] == "UsageError"
    capsys.readouterr()
    args = ["demo-tool", "--mirror", str(SPACK_V3_SIGNED), *HOST, "--store", str(tmp_path / "s")]
    assert install_from_cache([*args, "--root", str(tmp_path / "r"), "--json", "-q"]) == 4
    doc = check(capsys.readouterr().out)
    assert doc["command"] == "install"
    assert doc["error"]["key_id"] == FPR[-16:]
    assert doc["error"]["hints"][1] == f"cacheclient keys trust {FPR[-16:]} --store {tmp_path}/s"


def test_usage_error_with_json_is_a_json_document_too() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cacheclient", "install", "--json", "--no-such-flag"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    doc = check(proc.stdout)
    assert doc["error"]["exit_code"] == 2
    assert "--no-such-flag" in doc["error"]["message"]
    assert "usage:" in proc.stderr  # a person still gets argparse's usage text


def test_every_command_with_json_has_a_published_schema() -> None:
    """A new command (or subcommand) with ``--json`` needs ``schemas/<command>.json``."""
    import argparse

    from cacheclient.cli.main import build_parser

    def leaves(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[list[str]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path
            return
        for name, child in subs[0].choices.items():
            yield from leaves(child, [*path, name])

    parser = build_parser()
    with_json = []
    for path in leaves(parser, []):
        leaf = parser
        for name in path:
            sub = next(a for a in leaf._actions if isinstance(a, argparse._SubParsersAction))
            leaf = sub.choices[name]
        if "--json" in leaf._option_string_actions:
            with_json.append(".".join(path))
    assert len(with_json) >= 12
    missing = [name for name in with_json if name not in SCHEMAS]
    assert missing == [], f"publish cacheclient/schemas/<name>.json for {missing}"


def test_warm_with_a_missing_spec_keeps_its_report_and_adds_the_error(
    store: Path, tmp_path: Path, capsys: Capture
) -> None:
    manifest = tmp_path / "ci.yaml"
    manifest.write_text(
        f"mirrors: [{SPACK_V3_SIGNED}]\nspecs: [demo-tool, demo-tool@9]\n"
        "profiles:\n  - {platform: linux, os: debian12, target: x86_64_v2}\n"
    )
    doc = run(capsys, "warm", str(manifest), "--store", str(store), "--json", "-q", code=3)
    assert doc["schema"] == "cacheclient.warm"
    assert doc["error"]["exit_code"] == 3
    assert "1 spec(s) have no build for a profile" in doc["error"]["message"]
    assert "demo-tool@9" in json.dumps(doc["missing"])
