"""``cacheclient warm`` end to end: nginx mirrors, real signatures, concurrent runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from builders import blob_files, trust_key
from cacheclient.cli.main import main
from cacheclient.store import Store
from cacheclient.store.publish import published_blobs
from gpgtools import GpgKey
from paths import SEED_PAGE, SPACK_V3_SIGNED, SPACK_V3_UNSIGNED
from servers import Fault, FaultServer, NginxServer

ServeDir = Callable[..., NginxServer]
Capture = pytest.CaptureFixture[str]

PROFILES = """\
profiles:
  - {platform: linux, os: debian12, target: x86_64_v3}
  - {platform: linux, os: debian12, target: x86_64_v4}
"""


def manifest(
    tmp_path: Path,
    mirror: str,
    *,
    specs: str = "[demo-tool@1.0.0]",
    signed: bool = True,
    profiles: str = PROFILES,
    name: str = "m.yaml",
) -> Path:
    path = tmp_path / name
    path.write_text(
        f"mirrors:\n  - url: {mirror}\n    signed: {'true' if signed else 'false'}\n"
        f"{profiles}specs: {specs}\n"
    )
    return path


trust = trust_key


class TestWarm:
    def test_second_run_fetches_nothing_and_writes_the_same_lock(
        self, nginx_mirror: ServeDir, tmp_path: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store = tmp_path / "store"
        trust(store)
        m = manifest(tmp_path, server.url)
        assert (
            main(["warm", str(m), "--store", str(store), "--lock", str(tmp_path / "l1"), "--quiet"])
            == 0
        )
        first = capsys.readouterr().out
        fetched = server.count("/blobs/")
        # both profiles' closures, each blob once (a spec blob and a tarball per build)
        builds = json.loads((tmp_path / "l1").read_text())["builds"]
        assert len(builds) == 6  # demo-tool for v3 and v4 share some dependencies
        assert fetched == 2 * len(builds) + 1  # + the mirror's index blob
        before = len(server.requests())
        assert (
            main(["warm", str(m), "--store", str(store), "--lock", str(tmp_path / "l2"), "--quiet"])
            == 0
        )
        second = capsys.readouterr().out
        assert server.count("/blobs/") == fetched
        assert len(server.requests()) - before <= 1  # at most one freshness request
        assert (tmp_path / "l1").read_bytes() == (tmp_path / "l2").read_bytes()
        key = [line for line in first.splitlines() if line.startswith("cache-key: sha256:")]
        assert key
        assert key[0] in second

    def test_json_report(self, nginx_mirror: ServeDir, tmp_path: Path, capsys: Capture) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store = tmp_path / "store"
        trust(store)
        m = manifest(tmp_path, server.url, specs="[demo-tool@1.0.0, demo-zlib@1.2.13]")
        capsys.readouterr()
        assert main(["warm", str(m), "--store", str(store), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        selected = {
            (s["profile"], s["request"]): s["selected"]["hash"] for s in report["selections"]
        }
        assert selected[("linux-debian12-x86_64_v4", "demo-tool@1.0.0")] == (
            "vwaicymp67emhvtu53ght22dv5pm6y2b"
        )
        assert selected[("linux-debian12-x86_64_v3", "demo-tool@1.0.0")] == (
            "p3ni4vmgrbpf2zerdw3f2o22ifxs2xn7"
        )
        totals = report["totals"]
        assert totals["blobs_present"] == 0
        assert totals["blobs_fetched"] == 2 * totals["builds"]
        assert totals["bytes_transferred"] > 0
        assert totals["not_signature_checked"] == []
        assert list(totals["mirrors"]) == [server.url]
        assert report["cache_key"].startswith("sha256:")

    def test_untrusted_key_exits_4_and_stores_nothing(
        self, nginx_mirror: ServeDir, tmp_path: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store = tmp_path / "store"
        m = manifest(tmp_path, server.url)
        assert main(["warm", str(m), "--store", str(store), "--quiet"]) == 4
        assert "789B96D6B931B1D5" in capsys.readouterr().err
        assert not (store / "blobs").exists() or blob_files(store) == []

    def test_unsigned_mirror_when_the_manifest_says_so(
        self, nginx_mirror: ServeDir, tmp_path: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(SPACK_V3_UNSIGNED)
        store = tmp_path / "store"
        m = manifest(tmp_path, server.url, signed=False)
        capsys.readouterr()
        assert main(["warm", str(m), "--store", str(store), "--json", "--quiet"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert len(report["totals"]["not_signature_checked"]) == report["totals"]["builds"] > 0

    def test_missing_spec_exits_3_unless_allowed(
        self, nginx_mirror: ServeDir, tmp_path: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store = tmp_path / "store"
        trust(store)
        m = manifest(tmp_path, server.url, specs="[demo-tool@1.0.0, demo-tool@9]")
        assert main(["warm", str(m), "--store", str(store), "--quiet"]) == 3
        err = capsys.readouterr().err
        assert "missing: demo-tool@9 for linux-debian12-x86_64_v3" in err
        assert main(["warm", str(m), "--store", str(store), "--quiet", "--allow-missing"]) == 0
        assert "missing: demo-tool@9" in capsys.readouterr().err
        # what could be resolved was still fetched
        assert blob_files(store)

    def test_bad_manifest_lists_every_problem(self, tmp_path: Path, capsys: Capture) -> None:
        m = tmp_path / "m.yaml"
        m.write_text(
            "mirrors: [/x]\nprofiles:\n  - {platform: linux, os: debain12, target: zen9}\n"
            "specs: ['demo-tool@@1']\n"
        )
        assert main(["warm", str(m), "--store", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert "3 problems" in err
        assert "line 3: unknown OS 'debain12'" in err
        assert "line 3: unknown target 'zen9'" in err
        assert "line 4: specs[0]" in err


class TestLock:
    def test_from_lock_needs_no_index_and_checks_digests(
        self, nginx_mirror: ServeDir, tmp_path: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store, fresh = tmp_path / "store", tmp_path / "fresh"
        trust(store)
        trust(fresh)
        lock = tmp_path / "ci.lock"
        m = manifest(tmp_path, server.url)
        assert main(["warm", str(m), "--store", str(store), "--lock", str(lock), "--quiet"]) == 0
        server.clear_log()
        # offline on an empty store: lists what is missing, exit 5
        assert (
            main(["warm", "--from-lock", str(lock), "--store", str(fresh), "--offline", "--quiet"])
            == 5
        )
        err = capsys.readouterr().err
        assert "vwaicymp67emhvtu53ght22dv5pm6y2b" in err
        assert server.requests() == []
        assert main(["warm", "--from-lock", str(lock), "--store", str(fresh), "--quiet"]) == 0
        paths = [e.uri for e in server.requests()]
        index_blob = _index_blob(SPACK_V3_SIGNED)
        assert not any(p.endswith(index_blob) for p in paths)  # the index is never downloaded
        locked = {
            b["checksum"]
            for build in json.loads(lock.read_text())["builds"].values()
            for b in build["blobs"]
        }
        published = published_blobs(Store(fresh))  # the index, and the signer's public key
        assert _index_blob(fresh) in published
        assert {p.name for p in blob_files(fresh)} == locked | published
        assert (
            main(["warm", "--from-lock", str(lock), "--store", str(fresh), "--offline", "--quiet"])
            == 0
        )

    def test_lock_that_disagrees_with_the_mirror_exits_4(
        self, nginx_mirror: ServeDir, tmp_path: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store = tmp_path / "store"
        trust(store)
        lock = tmp_path / "ci.lock"
        m = manifest(tmp_path, server.url)
        assert main(["warm", str(m), "--store", str(store), "--lock", str(lock), "--quiet"]) == 0
        data = json.loads(lock.read_text())
        build = data["builds"]["vwaicymp67emhvtu53ght22dv5pm6y2b"]
        build["blobs"][0]["checksum"] = "0" * 64
        lock.write_text(json.dumps(data))
        other = tmp_path / "other"
        trust(other)
        capsys.readouterr()
        assert main(["warm", "--from-lock", str(lock), "--store", str(other), "--quiet"]) == 4
        assert "0" * 64 in capsys.readouterr().err

    def test_bad_lockfile(self, tmp_path: Path, capsys: Capture) -> None:
        lock = tmp_path / "ci.lock"
        lock.write_text('{"lock_version": 1, "mirrors": [], "profiles": []}')
        assert main(["warm", "--from-lock", str(lock), "--store", str(tmp_path / "s")]) == 7
        assert f"{lock}: builds: missing" in capsys.readouterr().err


def lock_text(store: Path, tmp_path: Path) -> str:
    wide = tmp_path / "m.yaml"
    lock = tmp_path / "check.lock"
    assert main(["warm", str(wide), "--store", str(store), "--lock", str(lock), "--quiet"]) == 0
    return lock.read_text()


def _index_blob(store: Path) -> str:
    text = (store / "v3/manifests/index/index.manifest.json").read_text()
    return str(json.loads(text)["data"][0]["checksum"])


class TestSharedStore:
    def test_warmed_store_serves_as_a_mirror(self, nginx_mirror: ServeDir, tmp_path: Path) -> None:
        origin = nginx_mirror(SPACK_V3_SIGNED)
        store = tmp_path / "store"
        trust(store)
        m = manifest(tmp_path, origin.url)
        assert main(["warm", str(m), "--store", str(store), "--quiet"]) == 0
        origin.clear_log()
        shared = nginx_mirror(store)
        runner = tmp_path / "runner"
        trust(runner)
        root = tmp_path / "root"
        assert (
            main(
                [
                    "install",
                    "demo-tool@1.0.0",
                    "--mirror",
                    shared.url,
                    "--platform",
                    "linux",
                    "--os",
                    "debian12",
                    "--target",
                    "x86_64_v4",
                    "--store",
                    str(runner),
                    "--root",
                    str(root),
                    "--quiet",
                ]
            )
            == 0
        )
        assert origin.requests() == []
        assert shared.count("/blobs/") > 0
        tool = next(root.rglob("bin/demo-tool"))
        out = subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout
        assert out.startswith("demo-tool 1.0.0")

    def test_eight_concurrent_runners_download_each_blob_once(
        self, nginx_mirror: ServeDir, tmp_path: Path
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store = tmp_path / "store"
        trust(store)
        wide = manifest(tmp_path, server.url, specs="[demo-tool@1.0.0, demo-zlib, demo-pyhooks]")
        narrow = manifest(tmp_path, server.url, specs="[demo-tool@1.0.0]", name="n.yaml")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cacheclient",
                    "warm",
                    str(wide if i % 2 else narrow),
                    "--store",
                    str(store),
                    "--quiet",
                    "--jobs",
                    "4",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(8)
        ]
        results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else b"") for p in procs]
        for p in procs:
            if p.stdout:
                p.stdout.close()
            if p.stderr:
                p.stderr.close()
        assert [rc for rc, _ in results] == [0] * 8, results
        gets = Counter(
            e.uri for e in server.requests() if e.uri.startswith("/blobs/") and e.status == 200
        )
        assert gets, "nothing was downloaded"
        mirror_index = _index_blob(SPACK_V3_SIGNED)
        artifacts = {uri: n for uri, n in gets.items() if not uri.endswith(mirror_index)}
        assert len(artifacts) == len(json.loads(lock_text(store, tmp_path))["builds"]) * 2
        assert max(gets.values()) == 1, gets  # every blob once, the index too
        for path in blob_files(store):
            import hashlib

            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
        assert not list(store.rglob("*.partial"))


class TestInstallFromLock:
    def test_installs_the_profile_of_this_host(
        self, nginx_mirror: ServeDir, tmp_path: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store, runner = tmp_path / "store", tmp_path / "runner"
        trust(store)
        trust(runner)
        lock = tmp_path / "ci.lock"
        m = manifest(tmp_path, server.url)
        assert main(["warm", str(m), "--store", str(store), "--lock", str(lock), "--quiet"]) == 0
        root = tmp_path / "root"
        # two profiles in the lock, neither runs on an x86_64 (v1) host: exit 3, nothing fetched
        args = ["install", "--from-lock", str(lock), "--store", str(runner), "--root", str(root)]
        assert main([*args, "--platform", "linux", "--os", "debian12", "--target", "x86_64"]) == 3
        assert "no profile runs on this host linux-debian12-x86_64" in capsys.readouterr().err
        server.clear_log()
        host = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
        assert main([*args, *host, "--quiet"]) == 0
        index_blob = _index_blob(SPACK_V3_SIGNED)
        assert not any(e.uri.endswith(index_blob) for e in server.requests())  # no index read
        tools = list(root.rglob("bin/demo-tool"))
        assert [t.parent.parent.name for t in tools] == [
            "demo-tool-1.0.0-vwaicymp67emhvtu53ght22dv5pm6y2b"
        ]
        out = subprocess.run([str(tools[0])], capture_output=True, text=True, check=True).stdout
        assert out.startswith("demo-tool 1.0.0")

    def test_specs_and_lock_are_exclusive(self, tmp_path: Path, capsys: Capture) -> None:
        assert main(["install", "zlib", "--from-lock", str(tmp_path / "l")]) == 2
        assert "not both" in capsys.readouterr().err


class TestSeedPage:
    def test_warm_from_a_cache_spack_io_page_and_a_mirror_holding_its_hashes(
        self, nginx_mirror: ServeDir, tmp_path: Path, gpg_key: GpgKey, capsys: Capture
    ) -> None:
        from cacheclient.metadata.page import read_page
        from cacheclient.mirrors.writer import MirrorBuild, write_mirror

        page = read_page(SEED_PAGE.read_text(), str(SEED_PAGE))
        wanted = [r for r in page if r.os == "ubuntu24.04" and r.target == "x86_64_v3"]
        builds = [
            MirrorBuild(record=r, files={"lib/python3/pyproject_hooks/__init__.py": b"# demo\n"})
            for r in wanted
        ]
        root_mirror = write_mirror(tmp_path / "develop", builds, signer=gpg_key.clearsign)
        server = nginx_mirror(root_mirror.root)  # the "root" stack lives at the base URL
        store = tmp_path / "store"
        key = tmp_path / "key.asc"
        gpg_key.export_public(key)
        assert main(["keys", "trust", str(key), "--store", str(store)]) == 0
        m = tmp_path / "m.yaml"
        m.write_text(
            f"metadata: [{SEED_PAGE}]\nmirror_base: {server.url}\nprofiles:\n"
            "  - {platform: linux, os: ubuntu24.04, target: zen4}\n"
            "  - {platform: linux, os: ubuntu24.04, target: x86_64_v3}\n"
            "specs: [py-pyproject-hooks@1.2]\n"
        )
        lock = tmp_path / "ci.lock"
        capsys.readouterr()
        assert main(["warm", str(m), "--store", str(store), "--lock", str(lock), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        roots = {s["profile"]: s["selected"]["hash"] for s in report["selections"]}
        # the page's builds live in stacks; "root" maps to mirror_base itself
        assert roots["linux-ubuntu24.04-zen4"] == "7gxinepk7daz7rk5xrpl2pln6lc5i37l"
        assert roots["linux-ubuntu24.04-x86_64_v3"] == "7gxinepk7daz7rk5xrpl2pln6lc5i37l"
        assert report["totals"]["not_signature_checked"] == []
        fetched = server.count("/blobs/")
        assert main(["warm", str(m), "--store", str(store), "--lock", str(lock), "--quiet"]) == 0
        assert server.count("/blobs/") == fetched


class TestBrokenMirror:
    @pytest.fixture(autouse=True)
    def _one_try(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CACHECLIENT_RETRIES", "1")  # a refused connection is not retried

    def test_one_unreachable_mirror_does_not_fail_the_job(
        self, nginx_mirror: ServeDir, tmp_path: Path, capsys: Capture
    ) -> None:
        from servers import refused_url

        good = nginx_mirror(SPACK_V3_SIGNED)
        broken = refused_url()
        store = tmp_path / "store"
        trust(store)
        m = tmp_path / "m.yaml"
        m.write_text(
            f"mirrors:\n  - url: {broken}\n  - url: {good.url}\n{PROFILES}"
            "specs: [demo-tool@1.0.0]\n"
        )
        capsys.readouterr()
        assert main(["warm", str(m), "--store", str(store), "--json", "--quiet"]) == 0
        out = capsys.readouterr()
        assert f"mirror {broken} skipped: cannot connect" in out.err
        mirrors = json.loads(out.out)["totals"]["mirrors"]
        assert mirrors[good.url]["builds"] == 6
        assert mirrors[good.url]["requests"] >= 12
        assert mirrors[broken]["builds"] == 0

    def test_no_reachable_mirror_exits_5(self, tmp_path: Path, capsys: Capture) -> None:
        from servers import refused_url

        m = manifest(tmp_path, refused_url())
        assert main(["warm", str(m), "--store", str(tmp_path / "s"), "--quiet"]) == 5
        assert "connection refused" in capsys.readouterr().err


class TestV2Layout:
    def test_lock_of_a_v2_mirror_fetches_again_without_an_index(
        self, tmp_path: Path, capsys: Capture
    ) -> None:
        from paths import V2_MIRRORS

        m = tmp_path / "m.yaml"
        m.write_text(
            f"mirrors:\n  - url: {V2_MIRRORS / 'unsigned'}\n    signed: false\n"
            "profiles:\n  - {platform: test, os: debian6, target: m1}\nspecs: [libdwarf]\n"
        )
        lock = tmp_path / "ci.lock"
        args = ["--store", str(tmp_path / "s"), "--quiet"]
        assert main(["warm", str(m), "--lock", str(lock), *args]) == 0
        builds = json.loads(lock.read_text())["builds"]
        assert {b["compiler"] for b in builds.values()} == {None, "gcc@=10.2.1"}
        assert all(b["manifest"].startswith("build_cache/") for b in builds.values())
        fresh = ["--store", str(tmp_path / "fresh"), "--quiet", "--json"]
        capsys.readouterr()
        assert main(["warm", "--from-lock", str(lock), *fresh]) == 0
        totals = json.loads(capsys.readouterr().out)["totals"]
        assert totals["builds"] == 3
        assert len(totals["not_signature_checked"]) == 3


class TestPerRunCounts:
    def test_two_warms_in_one_process_count_their_own_requests(
        self, nginx_mirror: ServeDir, tmp_path: Path, capsys: Capture
    ) -> None:
        """Request counts are per run: two cold warms of the same manifest into two stores in
        one process report the same numbers (they used to add up: 17, then 34)."""
        server = nginx_mirror(SPACK_V3_SIGNED)
        m = manifest(tmp_path, server.url)
        reports = []
        for name in ("s1", "s2"):
            store = trust(tmp_path / name)
            capsys.readouterr()
            assert main(["warm", str(m), "--store", str(store), "--json"]) == 0
            reports.append(json.loads(capsys.readouterr().out)["totals"]["mirrors"][server.url])
        assert reports[0]["requests"] == reports[1]["requests"] > 0
        assert reports[0]["failures"] == reports[1]["failures"] == 0

    def test_failures_are_counted_per_real_mirror(
        self,
        tmp_path: Path,
        capsys: Capture,
        fault_server: Callable[..., FaultServer],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("CACHECLIENT_RETRIES", "1")
        server = fault_server(SPACK_V3_SIGNED)
        server.inject(Fault(kind="status", status=500, prefix="/v3/manifests/spec/"))
        m = manifest(tmp_path, server.url)
        store = trust(tmp_path / "s")
        capsys.readouterr()
        code = main(["warm", str(m), "--store", str(store), "--json"])
        assert code == 5
        mirrors = json.loads(capsys.readouterr().out)["totals"]["mirrors"]
        assert list(mirrors) == [server.url]
        assert mirrors[server.url]["failures"] >= 1
