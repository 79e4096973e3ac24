"""install_fetched on real Spack-written tarballs: layout, relocation, database, re-runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cacheclient.errors import RelocationError, UnsafeArchiveError, UsageError
from cacheclient.events import Reporter
from cacheclient.installation.elf import parse_elf
from cacheclient.installation.installer import (
    DEFAULT_PROJECTION,
    LocalBuild,
    format_projection,
    install_fetched,
)
from cacheclient.installation.manifest import content_hash
from cacheclient.metadata.specfile import read_specfile
from cacheclient.model import BlobRef, BuildRecord
from paths import SPACK_V3, SPACK_V3_SIGNED, V2_MIRRORS

EXPECTED = json.loads((SPACK_V3 / "signed.expected.json").read_text())
SPECS: dict[str, dict[str, Any]] = {s["dag_hash"]: s for s in EXPECTED["specs"]}
TOOLS = sorted(h for h, s in SPECS.items() if s["name"] == "demo-tool")
PLACEHOLDER = b"__spack_path_placeholder__"
# Files Spack leaves unrelocated too: static archives and build provenance under .spack/.
SPACK_LEAVES = re.compile(r"(\.a|/\.spack/binary_distribution|/\.spack/spack-build-env\.txt)$")


def v3_item(dag_hash: str) -> LocalBuild:
    spec = SPECS[dag_hash]
    blob = SPACK_V3_SIGNED / spec["spec_blob"]["path"]
    record = read_specfile(blob.read_bytes(), str(blob)).root
    tb = spec["tarball"]
    return LocalBuild(
        record=record,
        tarball_path=SPACK_V3_SIGNED / tb["path"],
        tarball=BlobRef(media_type=tb["mediaType"], checksum=tb["sha256"], size=tb["size"]),
        mirror=str(SPACK_V3_SIGNED),
        signer=EXPECTED["signing_key_fingerprint"],
    )


def v3_closure(dag_hash: str) -> list[str]:
    out: list[str] = []

    def visit(h: str) -> None:
        for dep in SPECS[h]["dependencies"]:
            if dep["dag_hash"] not in out:
                visit(dep["dag_hash"])
        if h not in out:
            out.append(h)

    visit(dag_hash)
    return out


def all_v3_items() -> list[LocalBuild]:
    order: list[str] = []
    for h in sorted(SPECS):
        order += [x for x in v3_closure(h) if x not in order]
    return [v3_item(h) for h in order]


def tree_files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name


class Recorder(Reporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def installing(self, record: Any, prefix: str) -> None:
        self.events.append(("installing", record.name))

    def installed(self, record: Any, prefix: str) -> None:
        self.events.append(("installed", record.name))

    def warning(self, message: str) -> None:
        self.events.append(("warning", message))


@pytest.fixture(scope="module")
def v3_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("root")
    result = install_fetched(all_v3_items(), root=root)
    return root, result


class TestSpackV3:
    def test_every_spec_installed_once_in_post_order(self, v3_root: tuple[Path, Any]) -> None:
        root, result = v3_root
        hashes = [b.record.hash for b in result.builds]
        assert sorted(hashes) == sorted(SPECS)
        assert all(b.status == "installed" for b in result.builds)
        for pos, h in enumerate(hashes):
            for dep in SPECS[h]["dependencies"]:
                assert hashes.index(dep["dag_hash"]) < pos
        for b in result.builds:
            rec = b.record
            assert b.prefix == root / f"linux-{rec.target}/{rec.name}-{rec.version}-{rec.hash}"
            assert (b.prefix / ".spack" / "spec.json").is_file()
            manifest = json.loads((b.prefix / ".spack" / "install_manifest.json").read_text())
            assert str(b.prefix) in manifest
            assert all(k == str(b.prefix) or k.startswith(f"{b.prefix}/") for k in manifest)
        leftovers = [*root.rglob(".*tmp-*"), *root.rglob(".*extract-*")]
        assert leftovers == []

    @pytest.mark.parametrize("tool", TOOLS)
    def test_demo_tool_runs(self, tool: str, v3_root: tuple[Path, Any]) -> None:
        _root, result = v3_root
        exe = result.prefix_of(tool) / "bin" / "demo-tool"
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, env={})
        assert out.stdout.startswith(f"demo-tool {SPECS[tool]['version']}")

    def test_no_old_prefix_left_except_where_spack_leaves_it(
        self, v3_root: tuple[Path, Any]
    ) -> None:
        root, _ = v3_root
        offenders = [
            str(p)
            for p in tree_files(root)
            if not p.is_symlink()
            and ".cacheclient" not in p.parts
            and not SPACK_LEAVES.search(str(p))
            and PLACEHOLDER in p.read_bytes()
        ]
        assert offenders == []

    def test_runpaths_point_at_new_dependency_prefixes(self, v3_root: tuple[Path, Any]) -> None:
        _root, result = v3_root
        checked = 0
        for b in result.builds:
            deps = {d["dag_hash"] for d in SPECS[b.record.hash]["dependencies"]}
            dep_libs = {str(result.prefix_of(h)) + "/lib" for h in deps}
            for rel in SPECS[b.record.hash]["buildinfo"]["relocate_binaries"]:
                path = b.prefix / rel
                elf = parse_elf(path.read_bytes(), str(path))
                assert elf is not None
                for string in elf.rpaths:
                    entries = set(string.value.decode().split(":"))
                    assert entries <= dep_libs, (rel, entries, dep_libs)
                    assert all(Path(e).is_dir() for e in entries)
                    readelf = subprocess.run(
                        ["readelf", "-d", "-W", str(path)],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    assert f"[{string.value.decode()}]" in readelf
                    checked += 1
        assert checked == 7  # 4 demo-tool + 3 demo-libfoo builds carry a RUNPATH

    def test_symlinks_resolve_inside_the_tree(self, v3_root: tuple[Path, Any]) -> None:
        root, _ = v3_root
        links = [p for p in root.rglob("*") if p.is_symlink()]
        assert links
        for link in links:
            target = Path(os.path.realpath(link))
            assert target.exists(), link
            assert target.is_relative_to(root.resolve()), (link, target)

    def test_install_manifest_matches_the_relocated_files(self, v3_root: tuple[Path, Any]) -> None:
        _root, result = v3_root
        for b in result.builds:
            manifest = json.loads((b.prefix / ".spack" / "install_manifest.json").read_text())
            on_disk = {str(p) for p in b.prefix.rglob("*")} | {str(b.prefix)}
            on_disk.discard(str(b.prefix / ".spack" / "install_manifest.json"))
            assert set(manifest) == on_disk
            for path, entry in manifest.items():
                p = Path(path)
                if p.is_symlink():
                    assert entry["dest"] == os.readlink(p)
                elif p.is_file():
                    assert entry["size"] == p.stat().st_size
                    assert entry["hash"] == content_hash(str(p))
                    assert len(entry["hash"]) == 32
        empties = [p for b in result.builds for p in b.prefix.rglob("empty.txt")]
        assert empties
        for empty in empties:  # Spack's value for an empty file, from a fixture's manifest
            assert content_hash(str(empty)) == "3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ"

    def test_sbang_scripts_run(self, v3_root: tuple[Path, Any]) -> None:
        root, result = v3_root
        assert os.access(root / "bin" / "sbang", os.X_OK)
        zlib = result.prefix_of("4pnfv56zoqkyu4cep6uzu76sb73mlq2w")
        script = zlib / "bin" / "demo-zlib-run"
        assert script.read_text().startswith(f"#!/bin/sh {root}/bin/sbang\n")
        out = subprocess.run([str(script)], capture_output=True, text=True, check=True)
        assert out.stdout.splitlines()[0] == f"prefix: {zlib}"

    def test_database_records_every_prefix(self, v3_root: tuple[Path, Any]) -> None:
        root, result = v3_root
        db = json.loads((root / ".cacheclient" / "installed.json").read_text())
        assert db["version"] == 1
        assert set(db["installs"]) == set(SPECS)
        for b in result.builds:
            rec = db["installs"][b.record.hash]
            assert rec["prefix"] == str(b.prefix)
            assert rec["tarball_sha256"] == SPECS[b.record.hash]["tarball"]["sha256"]
            assert rec["mirror"] == str(SPACK_V3_SIGNED)
            assert rec["signer"] == EXPECTED["signing_key_fingerprint"]
            assert rec["old_prefix"] == SPECS[b.record.hash]["old_prefix"]
            assert rec["spec"].startswith(f"{b.record.name}@{b.record.version}")

    def test_rerun_is_a_noop(self, v3_root: tuple[Path, Any]) -> None:
        root, _ = v3_root
        db_file = root / ".cacheclient" / "installed.json"
        before = (db_file.read_bytes(), db_file.stat().st_mtime_ns)
        again = install_fetched(all_v3_items(), root=root)
        assert {b.status for b in again.builds} == {"already-installed"}
        assert again.installed == []
        assert (db_file.read_bytes(), db_file.stat().st_mtime_ns) == before


class TestReinstallAndLayout:
    def test_force_reinstalls_and_dependencies_are_reused(self, tmp_path: Path) -> None:
        tool = TOOLS[-1]
        items = [v3_item(h) for h in v3_closure(tool)]
        rep = Recorder()
        first = install_fetched(items[:-1], root=tmp_path, reporter=rep)
        assert [e[0] for e in rep.events] == ["installing", "installed"] * len(items[:-1])
        second = install_fetched(items, root=tmp_path)
        assert [b.status for b in second.builds] == ["already-installed"] * (len(items) - 1) + [
            "installed"
        ]
        prefix = second.prefix_of(tool)
        assert prefix is not None
        inode = prefix.stat().st_ino
        third = install_fetched(items[-1:], root=tmp_path, force=True)
        assert [b.status for b in third.builds] == ["reinstalled"]
        assert prefix.stat().st_ino != inode
        out = subprocess.run(
            [str(prefix / "bin" / "demo-tool")], capture_output=True, text=True, check=True
        )
        assert out.stdout.startswith("demo-tool 1.0.0")
        assert first.root == tmp_path

    def test_custom_projection(self, tmp_path: Path) -> None:
        tool = TOOLS[0]
        result = install_fetched(
            [v3_item(h) for h in v3_closure(tool)], root=tmp_path, projection="{name}/{hash}"
        )
        prefix = result.prefix_of(tool)
        assert prefix == tmp_path / "demo-tool" / tool
        out = subprocess.run(
            [str(prefix / "bin" / "demo-tool")], capture_output=True, text=True, check=True
        )
        assert out.stdout.startswith("demo-tool ")
        assert f"{tmp_path}/demo-zlib/" in (prefix / "etc" / "demo-tool.conf").read_text()

    @pytest.mark.parametrize(
        ("projection", "words"),
        [("{name}/{compiler}", "unknown field"), ("../{name}", "unusable path"),
         ("{name.__class__}", "unknown field"), ("/abs/{hash}", "unusable path")],
    )  # fmt: skip
    def test_bad_projection(self, projection: str, words: str) -> None:
        record = v3_item(TOOLS[0]).record
        with pytest.raises(UsageError, match=words):
            format_projection(projection, record)

    def test_projection_that_merges_builds_is_refused(self, tmp_path: Path) -> None:
        zlibs = [h for h in sorted(SPECS) if SPECS[h]["name"] == "demo-zlib"][:2]
        install_fetched([v3_item(zlibs[0])], root=tmp_path, projection="{name}")
        before = (tmp_path / ".cacheclient" / "installed.json").read_bytes()
        with pytest.raises(UsageError, match="the same prefix"):
            install_fetched([v3_item(zlibs[1])], root=tmp_path, projection="{name}")
        with pytest.raises(UsageError, match="the same prefix"):
            install_fetched([v3_item(h) for h in zlibs], root=tmp_path / "b", projection="{name}")
        assert (tmp_path / ".cacheclient" / "installed.json").read_bytes() == before

    def test_default_projection(self) -> None:
        rec = v3_item(TOOLS[0]).record
        assert format_projection(DEFAULT_PROJECTION, rec) == (
            f"linux-{rec.target}/demo-tool-{rec.version}-{rec.hash}"
        )

    def test_orphan_prefix_is_replaced(self, tmp_path: Path) -> None:
        h = "ztdmdn3qjmq5eonho2hoaqjrxlhkzymp"
        item = v3_item(h)
        orphan = tmp_path / format_projection(DEFAULT_PROJECTION, item.record)
        orphan.mkdir(parents=True)
        (orphan / "junk").write_text("half-installed by someone else")
        result = install_fetched([item], root=tmp_path)
        assert [b.status for b in result.builds] == ["installed"]
        assert not (orphan / "junk").exists()
        assert (orphan / "bin" / "pyhooks-run").is_file()


class TestConcurrency:
    def test_two_installers_into_one_root_take_turns(self, tmp_path: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        closures = [[v3_item(h) for h in v3_closure(tool)] for tool in TOOLS[-2:]]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda items: install_fetched(items, root=tmp_path), closures))
        installed = [b.record.hash for r in results for b in r.installed]
        assert len(installed) == len(set(installed))  # nothing installed twice
        db = json.loads((tmp_path / ".cacheclient" / "installed.json").read_text())
        assert set(db["installs"]) == {i.record.hash for items in closures for i in items}
        for tool in TOOLS[-2:]:
            exe = Path(db["installs"][tool]["prefix"]) / "bin" / "demo-tool"
            out = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
            assert out.stdout.startswith("demo-tool 1.0.0")


class TestFailures:
    def test_failure_keeps_earlier_builds_and_leaves_nothing_half_done(
        self, tmp_path: Path
    ) -> None:
        good = v3_item("ztdmdn3qjmq5eonho2hoaqjrxlhkzymp")
        broken_tar = tmp_path / "broken.tar.gz"
        broken_tar.write_bytes(b"\x1f\x8b\x08\x00garbage")
        zlib = v3_item("4pnfv56zoqkyu4cep6uzu76sb73mlq2w")
        digest = hashlib.sha256(broken_tar.read_bytes()).hexdigest()
        ref = BlobRef(media_type=zlib.tarball.media_type, checksum=digest, size=14)
        bad = LocalBuild(record=zlib.record, tarball_path=broken_tar, tarball=ref)
        root = tmp_path / "root"
        with pytest.raises(UnsafeArchiveError):
            install_fetched([good, bad], root=root)
        db = json.loads((root / ".cacheclient" / "installed.json").read_text())
        assert list(db["installs"]) == [good.record.hash]
        assert sorted(p.name for p in (root / "linux-x86_64_v3").iterdir()) == []
        assert [p.name for p in (root / "linux-x86_64_v2").iterdir()] == [
            f"demo-pyhooks-1.0.0-{good.record.hash}"
        ]

    def test_stale_work_directories_of_an_interrupted_run_are_removed(self, tmp_path: Path) -> None:
        item = v3_item("ztdmdn3qjmq5eonho2hoaqjrxlhkzymp")
        parent = tmp_path / "linux-x86_64_v2"
        stale = [parent / ".demo-pyhooks-x.tmp-abc123", parent / ".prefix.extract-0badf00d"]
        for path in stale:
            (path / "sub").mkdir(parents=True)
        install_fetched([item], root=tmp_path)
        assert [p.name for p in parent.iterdir()] == [f"demo-pyhooks-1.0.0-{item.record.hash}"]

    def test_root_longer_than_the_builders_fails_cleanly(self, tmp_path: Path) -> None:
        root = tmp_path / ("r" * 200)
        items = [v3_item(h) for h in v3_closure("4pnfv56zoqkyu4cep6uzu76sb73mlq2w")]
        with pytest.raises(RelocationError) as err:
            install_fetched(items, root=root, patchelf=None)
        assert err.value.exit_code == 9
        assert "libdemoz.so.1" in str(err.value)
        assert [p.name for p in (root / "linux-x86_64_v3").iterdir()] == []
        db_file = root / ".cacheclient" / "installed.json"
        assert not db_file.exists() or json.loads(db_file.read_text())["installs"] == {}


class TestExternals:
    def test_presence_is_checked_and_reported(self, tmp_path: Path) -> None:
        present = BuildRecord(name="gcc", version="12", hash="g" * 32, platform="linux",
                              os="debian12", target="x86_64",
                              external_path=str(tmp_path))  # fmt: skip
        missing = BuildRecord(name="cuda", version="12", hash="c" * 32, platform="linux",
                              os="debian12", target="x86_64",
                              external_path="/nonexistent/cuda")  # fmt: skip
        rep = Recorder()
        result = install_fetched(
            [], root=tmp_path / "r", externals=[present, missing], reporter=rep
        )
        assert [(e.record.name, e.present) for e in result.externals] == [
            ("gcc", True),
            ("cuda", False),
        ]
        assert any("cuda@12" in w and "/nonexistent/cuda" in w for w in result.warnings)
        assert ("warning", result.warnings[0]) in rep.events


def _v2_items(mirror: Path) -> list[LocalBuild]:
    cache = mirror / "build_cache"
    specs: dict[str, BuildRecord] = {}
    for path in sorted(cache.glob("*.spec.json*")):
        sf = read_specfile(path.read_bytes(), str(path))
        specs[sf.root.hash] = sf.root
    order: list[str] = []

    def visit(h: str) -> None:
        for dep in specs[h].runtime_dependencies():
            if dep.hash in specs and dep.hash not in order:
                visit(dep.hash)
        if h not in order:
            order.append(h)

    for h in sorted(specs):
        visit(h)
    items = []
    for h in order:
        (tarball,) = cache.rglob(f"*-{h}.spack")
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        blob = BlobRef(media_type="application/x-tar+gzip", checksum=digest, size=0)
        items.append(LocalBuild(record=specs[h], tarball_path=tarball, tarball=blob,
                                mirror=str(mirror)))  # fmt: skip
    return items


class TestSpackV2Mirrors:
    @pytest.mark.parametrize("kind", ["signed", "unsigned"])
    def test_install_and_relocate(self, kind: str, tmp_path: Path) -> None:
        items = _v2_items(V2_MIRRORS / kind)
        assert len(items) == 6
        result = install_fetched(items, root=tmp_path)
        assert len(result.installed) == 6
        prefixes: Mapping[str, Path] = {b.record.hash: b.prefix for b in result.builds}
        for b in result.builds:
            assert b.prefix.parent.name == f"test-{b.record.target}"
            old = str(b.relocation["old_prefix"]).encode()
            assert (b.prefix / ".spack" / "spec.json").is_file()
            for path in tree_files(b.prefix):
                if ".spack" in path.relative_to(b.prefix).parts:
                    continue
                assert old not in path.read_bytes(), path
        libdwarf = next(b for b in result.builds if b.record.name == "libdwarf"
                        and b.record.target == "m1")  # fmt: skip
        dep_hashes = {d.hash for d in libdwarf.record.runtime_dependencies()}
        assert dep_hashes <= set(prefixes)
        assert shutil.disk_usage(tmp_path).free > 0
