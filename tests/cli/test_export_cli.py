"""``cacheclient export``: a subset of the store as a self-contained, verifiable mirror.

The interop suite has Spack 1.1 list and install from such exports; here cacheclient itself reads
them back (as a mirror, with signatures checked) and the failure modes get their exit codes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from cacheclient.metadata.layout import INDEX_V2, INDEX_V3
from cacheclient.mirrors.open import local_reader, open_catalog
from cacheclient.store import Store
from paths import SPACK_V3, SPACK_V3_KEY, SPACK_V3_SIGNED, V2_MIRRORS

V2_SIGNED = V2_MIRRORS / "signed"
V2_KEY = "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E"
V2_KEY_FILE = V2_SIGNED / "build_cache" / "_pgp" / f"{V2_KEY}.pub"
V3_KEY = (SPACK_V3 / "public-key.fingerprint.txt").read_text().split()[0]
DEMO_TOOL_V3 = "p3ni4vmgrbpf2zerdw3f2o22ifxs2xn7"
Capture = pytest.CaptureFixture[str]


def ok(*args: str) -> None:
    assert main(list(args)) == 0, args


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the 18 v3 fixture builds and the 6 builds of Spack's v2 test mirror."""
    base = tmp_path_factory.mktemp("export")
    store = base / "store"
    with pytest.MonkeyPatch.context() as mp:  # as the autouse fixture does, for this module
        for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            mp.setenv(var, str(base / "xdg" / var))
        for var in [v for v in os.environ if v.startswith("CACHECLIENT_")]:
            mp.delenv(var)
        ok("keys", "trust", "--store", str(store), str(SPACK_V3_KEY))
        ok("keys", "trust", "--store", str(store), str(V2_KEY_FILE))
        for mirror in (SPACK_V3_SIGNED, V2_SIGNED):
            for r in open_catalog(str(mirror), local_reader(mirror)):
                if r.installable:
                    host = ["--platform", r.platform, "--os", r.os, "--target", r.target]
                    where = ["--mirror", str(mirror)]
                    ok("fetch", "--store", str(store), *where, *host, "-q", f"/{r.hash}")
    return store


def installable(mirror: Path) -> set[str]:
    return {r.hash for r in open_catalog(str(mirror), local_reader(mirror)) if r.installable}


def test_all_is_every_build_with_keys_and_indexes(mixed: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    ok("export", "--store", str(mixed), "--all", str(dest))
    assert not (dest / ".cacheclient").exists()
    assert installable(dest) == {b.hash for b in Store(mixed).builds()}
    assert (dest / INDEX_V3).is_file()
    assert (dest / INDEX_V2).is_file()
    assert (dest / f"v3/manifests/key/{V3_KEY}.key.manifest.json").is_file()
    assert (dest / f"build_cache/_pgp/{V2_KEY}.pub").is_file()
    # Every blob is named by a manifest (nothing for Spack's prune), v2 builds have no blob.
    blobs = {p.name for p in (dest / "blobs").rglob("*") if p.is_file()}
    named: set[str] = set()
    for manifest in dest.glob("v3/manifests/**/*.json"):
        text = manifest.read_text()
        named |= {m for m in blobs if m in text}
    assert blobs == named


def test_a_spec_brings_its_closure_and_nothing_else(
    mixed: Path, tmp_path: Path, capsys: Capture
) -> None:
    dest = tmp_path / "one"
    ok("export", "--store", str(mixed), f"/{DEMO_TOOL_V3[:7]}", "libelf target=core2", str(dest))
    got = installable(dest)
    assert DEMO_TOOL_V3 in got
    assert "rqh2vuf6fqwkmipzgi2wjx352mq7y7ez" in got
    assert len(got) == 5  # demo-tool, demo-libfoo, demo-zlib, demo-pyhooks; libelf
    assert "5 build(s) (4 v3, 1 v2), 2 public key(s)" in capsys.readouterr().out
    # The export is a mirror cacheclient verifies like any other (signatures, checksums).
    fresh = tmp_path / "fresh"
    ok("keys", "trust", "--store", str(fresh), str(SPACK_V3_KEY))
    host = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v3"]
    ok("fetch", "--store", str(fresh), "--mirror", str(dest), *host, "-q", f"/{DEMO_TOOL_V3}")
    assert len(Store(fresh).builds()) == 4


def test_a_lock_exports_what_it_names(mixed: Path, tmp_path: Path) -> None:
    spec = tmp_path / "warm.yaml"
    spec.write_text(
        f"mirrors:\n  - url: {SPACK_V3_SIGNED}\n"
        "profiles:\n  - {platform: linux, os: debian12, target: x86_64_v3}\n"
        "specs: [demo-tool@1.0.0]\n"
    )
    lock = tmp_path / "ci.lock"
    ok("warm", str(spec), "--store", str(mixed), "--lock", str(lock), "--quiet")
    dest = tmp_path / "from-lock"
    ok("export", "--store", str(mixed), "--lock", str(lock), str(dest), "--json")
    assert installable(dest) == set(json.loads(lock.read_text())["builds"])


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--all", "demo-tool"], 2),  # two selections
        ([], 2),  # none
        (["nosuchpackage"], 3),
        ([f"/{'a' * 32}"], 3),
    ],
)
def test_bad_selections(
    mixed: Path, tmp_path: Path, capsys: Capture, args: list[str], code: int
) -> None:
    dest = tmp_path / "dest"
    assert main(["export", "--store", str(mixed), *args, str(dest)]) == code
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not dest.exists()


def test_dest_must_be_new_or_empty(mixed: Path, tmp_path: Path, capsys: Capture) -> None:
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "x").write_text("mine")
    assert main(["export", "--store", str(mixed), "--all", str(dest)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert [p.name for p in dest.iterdir()] == ["x"]
    empty = tmp_path / "empty"
    empty.mkdir()
    ok("export", "--store", str(mixed), "demo-zlib@1.2.13", str(empty))


def test_a_corrupt_blob_fails_verification_and_leaves_nothing(
    tmp_path: Path, capsys: Capture
) -> None:
    store = tmp_path / "store"
    ok("keys", "trust", "--store", str(store), str(SPACK_V3_KEY))
    host = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v3"]
    mirror = ["--mirror", str(SPACK_V3_SIGNED)]
    ok("fetch", "--store", str(store), *mirror, *host, "-q", f"/{DEMO_TOOL_V3}")
    build = Store(store).load_build(DEMO_TOOL_V3)
    assert build is not None
    path = Store(store).blob_path(build.tarball.checksum)
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    dest = tmp_path / "dest"
    assert main(["export", "--store", str(store), "--all", str(dest)]) == 4
    assert "verify --repair" in capsys.readouterr().err
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest")] == []


def test_an_untrusted_signer_is_not_exported(tmp_path: Path, capsys: Capture) -> None:
    store = tmp_path / "store"
    ok("keys", "trust", "--store", str(store), str(SPACK_V3_KEY))
    host = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v3"]
    ok("fetch", "--store", str(store), "--mirror", str(SPACK_V3_SIGNED), *host, "-q", "demo-zlib")
    ok("keys", "untrust", "--store", str(store), V3_KEY)
    assert main(["export", "--store", str(store), "--all", str(tmp_path / "d")]) == 4
    assert "not trusted" in capsys.readouterr().err


def test_a_record_naming_paths_outside_the_layout_is_refused(
    tmp_path: Path, capsys: Capture
) -> None:
    store = tmp_path / "store"
    ok("keys", "trust", "--store", str(store), str(SPACK_V3_KEY))
    host = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v3"]
    ok("fetch", "--store", str(store), "--mirror", str(SPACK_V3_SIGNED), *host, "-q", "demo-zlib")
    (record,) = (store / ".cacheclient" / "builds").glob("*.json")
    data = json.loads(record.read_text())
    data["metadata_path"] = "../../escaped.spec.manifest.json"
    record.write_text(json.dumps(data))
    assert main(["export", "--store", str(store), "--all", str(tmp_path / "d")]) == 8
    assert "outside the mirror layout" in capsys.readouterr().err
    assert not list(tmp_path.rglob("escaped*"))
