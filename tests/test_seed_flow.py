"""The seed flow end to end: a cache.spack.io page installs a complete runtime closure from the
stack mirrors, the closure comes from the signed specs, no index is downloaded, and an unsigned
page or index can never relabel a signed build (issue 10).

Real parts: Debian's nginx on loopback, the Spack-written fixture mirrors (layout v3, and Spack's
own layout-v2 test mirror), real gpg signatures.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheclient
from builders import trust_key
from cacheclient.cli.main import install_from_cache, main
from cacheclient.metadata.clearsign import split_clearsigned
from cacheclient.metadata.layout import spec_manifest_path
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.mirrors.open import local_reader, open_catalog
from cacheclient.model import BuildRecord
from nginxserver import NginxServer
from pages import write_page
from paths import SPACK_V3_SIGNED, V2_MIRRORS

ServeDir = Callable[..., NginxServer]
V2_KEY = V2_MIRRORS / "signed" / "build_cache" / "_pgp"
V2_KEY_FILE = next(V2_KEY.glob("*.pub"))
HOSTS = {
    "x86_64_v2": "k6pbkmsll6wigqfxfx2cnqcjwb3j3yz7",
    "x86_64_v3": "p3ni4vmgrbpf2zerdw3f2o22ifxs2xn7",
    "x86_64_v4": "vwaicymp67emhvtu53ght22dv5pm6y2b",
}


def _host(target: str, platform: str = "linux", os: str = "debian12") -> list[str]:
    return ["--platform", platform, "--os", os, "--target", target]


def _records(mirror: Path, name: str) -> list[BuildRecord]:
    catalog = open_catalog(str(mirror), local_reader(mirror))
    return [r for r in catalog.by_name(name) if r.installable]


_trusted_store = trust_key


def _index_requests(server: NginxServer) -> list[str]:
    return [e.uri for e in server.requests() if "index" in e.uri or e.uri.endswith(".json.hash")]


def _run(tool: Path) -> str:
    return subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout


def _installed(root: Path) -> dict[str, Any]:
    db = root / ".cacheclient" / "installed.json"
    return json.loads(db.read_text()) if db.is_file() else {}


def _two_stacks(tmp_path: Path) -> Path:
    """``www/`` = the signed fixture mirror (the ``root`` stack) and ``www/e4s/`` = a second
    stack holding only demo-tool's manifests and the blobs (its dependencies are not there)."""
    www = tmp_path / "www"
    shutil.copytree(SPACK_V3_SIGNED, www)
    e4s = www / "e4s"
    shutil.copytree(SPACK_V3_SIGNED / "v3" / "manifests" / "spec" / "demo-tool",
                    e4s / "v3" / "manifests" / "spec" / "demo-tool")  # fmt: skip
    shutil.copytree(SPACK_V3_SIGNED / "blobs", e4s / "blobs")
    return www


class TestPageInstallsTheClosure:
    @pytest.mark.parametrize("target", sorted(HOSTS))
    def test_two_stacks_every_host(
        self,
        target: str,
        tmp_path: Path,
        nginx_mirror: ServeDir,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        server = nginx_mirror(_two_stacks(tmp_path))
        page = write_page(tmp_path / "demo-tool.md", "demo-tool",
                          _records(SPACK_V3_SIGNED, "demo-tool"),
                          stacks=lambda _r: ["e4s", "root"])  # fmt: skip
        store = _trusted_store(tmp_path / "store")
        root = tmp_path / "root"
        code = install_from_cache(["demo-tool", "--metadata", str(page), "--mirror-base",
                                   server.url, *_host(target), "--store", str(store),
                                   "--root", str(root), "--json"])  # fmt: skip
        out = capsys.readouterr()
        assert code == 0, out.err
        data = json.loads(out.out)
        names = [b["name"] for b in data["builds"]]
        assert names[-1] == "demo-tool"
        assert set(names) == {"demo-tool", "demo-libfoo", "demo-zlib", "demo-pyhooks"}
        (request,) = data["requests"]
        assert request["selected"] == HOSTS[target]
        assert _run(Path(request["prefix"]) / "bin" / "demo-tool").startswith("demo-tool ")
        assert _index_requests(server) == []
        uris = [e.uri for e in server.requests() if e.status == 200]
        # the root build came from the first stack, its dependencies from the 'root' stack
        assert any(u.startswith("/e4s/v3/manifests/spec/demo-tool/") for u in uris)
        assert any(u.startswith("/v3/manifests/spec/demo-zlib/") for u in uris)
        assert not any(u.startswith("/v3/manifests/spec/demo-tool/") for u in uris)

    def test_layout_v2_mirror(
        self, tmp_path: Path, nginx_mirror: ServeDir, capsys: pytest.CaptureFixture[str]
    ) -> None:
        mirror = V2_MIRRORS / "signed"
        server = nginx_mirror(mirror)
        page = write_page(tmp_path / "libdwarf.md", "libdwarf", _records(mirror, "libdwarf"))
        store = _trusted_store(tmp_path / "store", V2_KEY_FILE)
        args = ["libdwarf", "--metadata", str(page), "--mirror-base", server.url]
        args += [*_host("m1", "test", "debian6"), "--store", str(store)]
        code = install_from_cache([*args, "--root", str(tmp_path / "root"), "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        names = [b["name"] for b in json.loads(out.out)["builds"]]
        assert names[-1] == "libdwarf"
        assert set(names) == {"libdwarf", "libelf", "gcc-runtime"}
        assert _index_requests(server) == []

    def test_the_library_installs_the_same_tree(
        self, tmp_path: Path, nginx_mirror: ServeDir, capsys: pytest.CaptureFixture[str]
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        page = write_page(tmp_path / "p.md", "demo-tool", _records(SPACK_V3_SIGNED, "demo-tool"))
        store = _trusted_store(tmp_path / "store")
        code = install_from_cache(["demo-tool@1.0.0", "--metadata", str(page), "--mirror-base",
                                   server.url, *_host("x86_64_v4"), "--store", str(store),
                                   "--root", str(tmp_path / "cli")])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        result = cacheclient.install(
            ["demo-tool@1.0.0"],
            metadata=[str(page)],
            mirror_base=server.url,
            store=store,
            root=tmp_path / "lib",
            host=cacheclient.HostProfile(platform="linux", os="debian12", target="x86_64_v4"),
        )
        cli_tree = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*"))
        lib_tree = sorted(p.relative_to(tmp_path / "lib") for p in (tmp_path / "lib").rglob("*"))
        assert cli_tree == lib_tree
        prefix = result.requests["demo-tool@1.0.0"]
        assert _run(prefix / "bin" / "demo-tool").startswith("demo-tool 1.0.0")


def _tarball_digests() -> set[str]:
    """The sha256 of every tarball the fixture's signed manifests name."""
    digests = set()
    for path in (SPACK_V3_SIGNED / "v3" / "manifests" / "spec").rglob("*.spec.manifest.json"):
        payload = split_clearsigned(path.read_text(), str(path)).payload
        tarball = parse_manifest(payload, str(path)).tarball
        assert tarball is not None
        digests.add(tarball.checksum)
    return digests


def _hostile_mirror(tmp_path: Path, record: BuildRecord, name: str, version: str) -> Path:
    """A copy of the signed mirror where the build's signed manifest also sits at the path a
    page relabelling it as *name*@*version* points to (a hostile mirror plays along)."""
    www = tmp_path / "www"
    shutil.copytree(SPACK_V3_SIGNED, www)
    real = www / spec_manifest_path(record.name, record.version, record.hash)
    forged = www / spec_manifest_path(name, version, record.hash)
    if forged != real:
        forged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real, forged)
    return www


V4_TOOL = HOSTS["x86_64_v4"]


class TestSignedMetadataIsTheTruth:
    @pytest.mark.parametrize(
        ("edit", "spec", "target", "said"),
        [
            ({"target": "x86_64_v2"}, "demo-tool", "x86_64_v2", "target 'x86_64_v2'"),
            ({"versions": ["2.0.0"]}, "demo-tool@2.0.0", "x86_64_v4", "version '2.0.0'"),
            ({"variants": ["+docs", "build_system=generic"]}, "demo-tool+docs", "x86_64_v4",
             "variants.docs '+docs'"),
        ],
    )  # fmt: skip
    def test_a_relabelled_page_is_refused(  # noqa: PLR0917 - parametrized
        self,
        edit: dict[str, Any],
        spec: str,
        target: str,
        said: str,
        tmp_path: Path,
        nginx_mirror: ServeDir,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The x86_64_v4 build relabelled on the page: it must not install on an x86_64_v2
        host, nor as another version or variant."""
        (record,) = [r for r in _records(SPACK_V3_SIGNED, "demo-tool") if r.hash == V4_TOOL]
        version = edit.get("versions", [record.version])[0]
        server = nginx_mirror(_hostile_mirror(tmp_path, record, record.name, version))
        page = write_page(tmp_path / "p.md", "demo-tool", [record], edit=lambda e: e.update(edit))
        store = _trusted_store(tmp_path / "store")
        root = tmp_path / "root"
        args = [spec, "--metadata", str(page), "--mirror-base", server.url, *_host(target)]
        code = install_from_cache([*args, "--store", str(store), "--root", str(root), "-q"])
        err = capsys.readouterr().err
        assert code == 4, err
        (line,) = err.strip().splitlines()
        assert line.startswith("install-from-cache: error: demo-tool/vwaicym: ")
        assert f"says {said}, but the signed spec says" in line
        assert _installed(root).get("installs", {}) == {}
        # only verified metadata reached the store: no tarball at all
        in_store = {p.name for p in (store / "blobs").rglob("*") if p.is_file()}
        assert in_store.isdisjoint(_tarball_digests())

    def test_a_page_naming_another_package_is_refused(
        self, tmp_path: Path, nginx_mirror: ServeDir, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (zlib,) = [r for r in _records(SPACK_V3_SIGNED, "demo-zlib") if r.target == "x86_64_v4"]
        server = nginx_mirror(_hostile_mirror(tmp_path, zlib, "demo-tool", zlib.version))
        page = write_page(tmp_path / "p.md", "demo-tool", [zlib])
        args = ["demo-tool", "--metadata", str(page), "--mirror-base", server.url]
        store = _trusted_store(tmp_path / "s")
        code = install_from_cache(
            [*args, *_host("x86_64_v4"), "--store", str(store), "--root", str(tmp_path / "r")]
        )
        err = capsys.readouterr().err
        assert code == 4, err
        assert "says name 'demo-tool', but the signed spec says 'demo-zlib'" in err

    def test_a_relabelled_index_is_refused(
        self, tmp_path: Path, nginx_mirror: ServeDir, capsys: pytest.CaptureFixture[str]
    ) -> None:
        mirror = tmp_path / "mirror"
        shutil.copytree(SPACK_V3_SIGNED, mirror)
        # the index lists the x86_64_v4 build as x86_64_v2 and hides the real x86_64_v2 one
        _edit_index(mirror, _relabel_v4_as_v2)
        server = nginx_mirror(mirror)
        root = tmp_path / "root"
        store = _trusted_store(tmp_path / "s")
        args = ["demo-tool@1.0.0", "--mirror", server.url, *_host("x86_64_v2")]
        code = install_from_cache([*args, "--store", str(store), "--root", str(root)])
        err = capsys.readouterr().err
        assert code == 4, err
        assert "says target 'x86_64_v2', but the signed spec says 'x86_64_v4'" in err
        assert _installed(root).get("installs", {}) == {}


def _relabel_v4_as_v2(installs: dict[str, Any]) -> None:
    installs[V4_TOOL]["spec"]["arch"]["target"] = "x86_64_v2"
    installs[HOSTS["x86_64_v2"]]["in_buildcache"] = False


def _edit_index(mirror: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a v3 mirror's (unsigned) index: its blob and the manifest's checksum."""
    manifest_path = mirror / "v3" / "manifests" / "index" / "index.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["data"][0]
    old = mirror / "blobs" / "sha256" / entry["checksum"][:2] / entry["checksum"]
    db = json.loads(old.read_bytes())
    change(db["database"]["installs"])
    data = json.dumps(db).encode()
    digest = hashlib.sha256(data).hexdigest()
    new = mirror / "blobs" / "sha256" / digest[:2] / digest
    new.parent.mkdir(parents=True, exist_ok=True)
    new.write_bytes(data)
    entry.update(checksum=digest, contentLength=len(data))
    manifest_path.write_text(json.dumps(manifest))


class TestClosureAwareSelection:
    PYHOOKS = "ztdmdn3qjmq5eonho2hoaqjrxlhkzymp"  # a run dependency of the x86_64_v4 demo-tool

    def _mirror(self, tmp_path: Path) -> Path:
        mirror = tmp_path / "mirror"
        shutil.copytree(SPACK_V3_SIGNED, mirror)

        def dependency_only(installs: dict[str, Any]) -> None:
            installs[self.PYHOOKS]["in_buildcache"] = False

        _edit_index(mirror, dependency_only)
        return mirror

    def test_the_next_best_build_is_installed(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        mirror = self._mirror(tmp_path)
        code = install_from_cache(["demo-tool@1.0.0", "--mirror", str(mirror),
                                   *_host("x86_64_v4"), "--store",
                                   str(_trusted_store(tmp_path / "s")), "--root",
                                   str(tmp_path / "r"), "--json"])  # fmt: skip
        out = capsys.readouterr()
        assert code == 0, out.err
        (request,) = json.loads(out.out)["requests"]
        assert request["selected"] == HOSTS["x86_64_v3"]

    def test_resolve_explains_the_closure_rejection(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        mirror = self._mirror(tmp_path)
        code = main(["resolve", "demo-tool@1.0.0", "--mirror", str(mirror), *_host("x86_64_v4"),
                     "--explain"])  # fmt: skip
        out = capsys.readouterr().out
        assert code == 0
        assert "[closure] demo-pyhooks/ztdmdn3 has no binary" in out
        assert "vwaicym" in out

    def test_nothing_left_is_exit_3_with_closure_reasons(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        mirror = self._mirror(tmp_path)
        code = main(["resolve", f"/{HOSTS['x86_64_v4']}", "--mirror", str(mirror),
                     *_host("x86_64_v4"), "--json"])  # fmt: skip
        assert code == 3
        (res,) = json.loads(capsys.readouterr().out)["requests"]
        (candidate,) = res["candidates"]
        assert candidate["reasons"][0]["axis"] == "closure"


class TestWarmFromAPage:
    def test_the_lock_pins_the_closure_the_signed_specs_give(
        self, tmp_path: Path, nginx_mirror: ServeDir, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """warm with a page source locks every build of the closure (learned from the signed
        specs: the page lists only demo-tool), then --from-lock installs it on a fresh store."""
        server = nginx_mirror(SPACK_V3_SIGNED)
        page = write_page(tmp_path / "p.md", "demo-tool", _records(SPACK_V3_SIGNED, "demo-tool"))
        manifest = tmp_path / "m.yaml"
        manifest.write_text(
            f"metadata: [{page}]\nmirror_base: {server.url}\nprofiles:\n"
            "  - {platform: linux, os: debian12, target: x86_64_v4}\n"
            "specs: [demo-tool@1.0.0]\n"
        )
        lock = tmp_path / "ci.lock"
        store = _trusted_store(tmp_path / "s")
        assert main(["warm", str(manifest), "--store", str(store), "--lock", str(lock), "-q"]) == 0
        locked = json.loads(lock.read_text())
        names = sorted(b["name"] for b in locked["builds"].values())
        assert names == ["demo-libfoo", "demo-pyhooks", "demo-tool", "demo-zlib"]
        assert _index_requests(server) == []
        capsys.readouterr()
        fresh = _trusted_store(tmp_path / "fresh")
        code = install_from_cache(["--from-lock", str(lock), "--store", str(fresh), "--root",
                                   str(tmp_path / "r"), *_host("x86_64_v4"), "--json"])  # fmt: skip
        out = capsys.readouterr()
        assert code == 0, out.err
        builds = json.loads(out.out)["builds"]
        assert len(builds) == 4
        tool = Path(next(b["prefix"] for b in builds if b["name"] == "demo-tool"))
        assert _run(tool / "bin" / "demo-tool").startswith("demo-tool 1.0.0")
