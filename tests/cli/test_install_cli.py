"""``install-from-cache`` / ``cacheclient install`` end to end: nginx, real gpg, real tarballs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cacheclient.api import install
from cacheclient.cli.main import install_from_cache, main
from cacheclient.errors import VerificationError
from cacheclient.resolution.host import HostProfile
from cacheclient.store import Store
from cacheclient.trust import TrustStore
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED, V2_MIRRORS

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
TOOL_V4 = "vwaicymp67emhvtu53ght22dv5pm6y2b"
V2_KEY = (
    V2_MIRRORS / "signed" / "build_cache" / "_pgp" / "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E.pub"
)


@pytest.fixture(scope="module")
def mirror_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from servers import NginxServer

    server = NginxServer(SPACK_V3_SIGNED, tmp_path_factory.mktemp("nginx")).start()
    yield server.url
    server.stop()


def _trust(store: Path, key: Path = SPACK_V3_KEY) -> None:
    assert main(["keys", "trust", str(key), "--store", str(store)]) == 0


def _run_tool(root: Path) -> str:
    (tool,) = root.glob("*/demo-tool-*/bin/demo-tool")
    return subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout


class TestContract:
    def test_untrusted_then_trusted_install(
        self, mirror_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        store, root = tmp_path / "s", tmp_path / "r"
        args = ["demo-tool@1.0.0", "--mirror", mirror_url, *HOST, "--store", str(store)]
        assert install_from_cache([*args, "--root", str(root)]) == 4
        lines = capsys.readouterr().err.strip().splitlines()
        (last,) = [line for line in lines if line.startswith("install-from-cache: error: ")]
        assert "not trusted" in last
        # the exact next commands follow the error
        assert lines[-2:] == [
            f"    cacheclient keys fetch {mirror_url} --store {store}",
            f"    cacheclient keys trust 789B96D6B931B1D5 --store {store}",
        ]
        assert not list(root.glob("*/demo-*"))
        _trust(store)
        capsys.readouterr()
        assert install_from_cache([*args, "--root", str(root), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert [b["status"] for b in out["builds"]] == ["installed"] * 4
        assert out["requests"][0]["selected"] == TOOL_V4
        assert out["unsigned"] == []
        assert _run_tool(root).startswith("demo-tool 1.0.0")
        db = json.loads((root / ".cacheclient" / "installed.json").read_text())
        assert db["installs"][TOOL_V4]["mirror"] == mirror_url
        assert db["installs"][TOOL_V4]["signer"] == "DB2679D9E5CB03ADB239ACC6789B96D6B931B1D5"

        assert install_from_cache([*args, "--root", str(root)]) == 0
        assert "nothing to do: all 4 build(s) already installed" in capsys.readouterr().out

        assert install_from_cache([*args, "--root", str(root), "--force", "-q"]) == 0
        text = capsys.readouterr().out
        assert text.count("reinstalled") == 4
        assert _run_tool(root).startswith("demo-tool 1.0.0")

        other = tmp_path / "offline-root"
        assert install_from_cache([*args, "--root", str(other), "--offline", "-q"]) == 0
        assert "4 build(s) installed" in capsys.readouterr().out
        assert _run_tool(other).startswith("demo-tool 1.0.0")

    def test_dry_run_changes_nothing(
        self, mirror_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A dry run is the real plan: signatures checked (so an untrusted key fails it), sizes
        from the signed manifests; nothing is installed and no tarball is downloaded."""
        store, root = tmp_path / "s", tmp_path / "r"
        argv = ["install", "demo-tool@1.0.0", "--mirror", mirror_url, *HOST, "--store",
                str(store), "--root", str(root), "--dry-run", "--json"]  # fmt: skip
        assert main(argv) == 4
        capsys.readouterr()
        _trust(store)
        capsys.readouterr()
        assert main(argv) == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["dry_run"] is True
        assert [b["action"] for b in plan["builds"]] == ["install"] * 4
        assert all(b["signed"] for b in plan["builds"])
        assert all(b["tarball_size"] and b["tarball_size"] > 1000 for b in plan["builds"])
        assert plan["fetch_bytes"] == sum(b["tarball_size"] for b in plan["builds"])
        assert not root.exists()
        blobs = [p for p in (store / "blobs").rglob("*") if p.is_file()]
        assert len(blobs) == 4  # the four verified spec blobs, no tarball
        assert main(argv[:-1]) == 0
        assert "4 build(s) to install" in capsys.readouterr().out

    def test_bad_projection_is_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        argv = ["demo-tool", "--mirror", str(SPACK_V3_SIGNED), *HOST, "--root",
                str(tmp_path / "r"), "--projection", "{nope}"]  # fmt: skip
        code = install_from_cache(argv)
        assert code == 2
        assert "unknown field" in capsys.readouterr().err

    def test_root_too_long_is_exit_9(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        store, root = tmp_path / "s", tmp_path / ("r" * 220)
        _trust(store)
        capsys.readouterr()
        # libdemoz.so.1 holds its prefix as a C string: it cannot grow, patchelf or not
        code = install_from_cache(["demo-zlib@1.3.1", "--mirror", str(SPACK_V3_SIGNED), *HOST,
                                   "--store", str(store), "--root", str(root)])  # fmt: skip
        assert code == 9
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert "shorter root" in last


class TestCacheSpackIoPage:
    def test_install_from_a_page_served_by_a_test_mirror(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from servers import NginxServer

        zlib = "4pnfv56zoqkyu4cep6uzu76sb73mlq2w"
        detail = {"compiler": "none", "hash": zlib, "os": "debian12", "platform": "linux",
                  "size": "-", "stacks": ["demo"], "target": "x86_64_v3",
                  "variants": ["+shared"], "versions": ["1.3.1"]}  # fmt: skip
        page = tmp_path / "demo-zlib.md"
        page.write_text(
            '---\ntitle: "demo-zlib"\nlayout: cache\ncategories: [package, develop]\n'
            f"spec_details: {json.dumps([detail])}\n---\n"
        )
        served = tmp_path / "www"
        served.mkdir()
        (served / "demo").symlink_to(SPACK_V3_SIGNED)
        server = NginxServer(served, tmp_path / "nginx").start()
        try:
            store, root = tmp_path / "s", tmp_path / "r"
            _trust(store)
            capsys.readouterr()
            argv = ["demo-zlib", "--metadata", str(page), "--mirror-base", server.url,
                    *HOST, "--store", str(store), "--root", str(root), "--json"]  # fmt: skip
            assert install_from_cache(argv) == 0, capsys.readouterr().err
        finally:
            server.stop()
        out = json.loads(capsys.readouterr().out)
        assert [b["hash"] for b in out["builds"]] == [zlib]
        prefix = Path(out["builds"][0]["prefix"])
        run = subprocess.run([str(prefix / "bin" / "demo-zlib-run")], capture_output=True,
                             text=True, check=True)  # fmt: skip
        assert run.stdout.splitlines()[0] == f"prefix: {prefix}"


class TestV2Mirrors:
    @pytest.mark.parametrize("kind", ["signed", "unsigned"])
    def test_install_v2_layout(
        self, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        store, root = tmp_path / "s", tmp_path / "r"
        extra = ["--allow-unsigned"] if kind == "unsigned" else []
        if kind == "signed":
            _trust(store, V2_KEY)
            capsys.readouterr()
        code = install_from_cache(["libdwarf", "--mirror", str(V2_MIRRORS / kind), "--platform",
                                   "test", "--os", "debian6", "--target", "m1", "--store",
                                   str(store), "--root", str(root), "--json", *extra])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        out = json.loads(capsys.readouterr().out)
        names = [b["name"] for b in out["builds"]]
        assert names[-1] == "libdwarf"
        assert set(names) == {"libdwarf", "libelf", "gcc-runtime"}
        for b in out["builds"]:
            prefix = Path(b["prefix"])
            assert prefix.is_relative_to(root)
            assert (prefix / ".spack" / "spec.json").is_file()
        assert (out["unsigned"] == []) == (kind == "signed")


class TestLibrary:
    def test_install_function(self, mirror_url: str, tmp_path: Path) -> None:
        store = Store(tmp_path / "s")
        _trust(tmp_path / "s")
        host = HostProfile(platform="linux", os="debian12", target="x86_64_v4", libc=None)
        events: list[str] = []

        from cacheclient.events import Reporter

        class Rec(Reporter):
            def installed(self, record: Any, prefix: str) -> None:
                events.append(record.name)

        result = install(["demo-tool@1.0.0"], mirrors=[mirror_url], root=tmp_path / "r",
                         store=store, host=host, reporter=Rec())  # fmt: skip
        assert events == [b.record.name for b in result.builds]
        assert result.builds[-1].record.hash == TOOL_V4
        assert _run_tool(tmp_path / "r").startswith("demo-tool 1.0.0")

    def test_every_signed_spec_with_signature_checks(self, mirror_url: str, tmp_path: Path) -> None:
        expected = json.loads((SPACK_V3_SIGNED.parent / "signed.expected.json").read_text())
        specs = [f"{s['name']}/{s['dag_hash']}" for s in expected["specs"]]
        _trust(tmp_path / "s")
        host = HostProfile(platform="linux", os="debian12", target="x86_64_v4", libc=None)
        result = install(specs, mirrors=[mirror_url], root=tmp_path / "r", store=tmp_path / "s",
                         host=host)  # fmt: skip
        assert {b.record.hash for b in result.builds} == {s["dag_hash"] for s in expected["specs"]}
        db = json.loads((tmp_path / "r" / ".cacheclient" / "installed.json").read_text())
        assert {r["signer"] for r in db["installs"].values()} == {
            expected["signing_key_fingerprint"]
        }
        tools = [s for s in expected["specs"] if s["name"] == "demo-tool"]
        for spec in tools:
            prefix = result.prefix_of(spec["dag_hash"])
            assert prefix is not None
            exe = prefix / "bin" / "demo-tool"
            out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
            assert out.startswith(f"demo-tool {spec['version']}")

    def test_install_function_checks_signatures(self, mirror_url: str, tmp_path: Path) -> None:
        host = HostProfile(platform="linux", os="debian12", target="x86_64_v4", libc=None)
        empty: Callable[[], TrustStore] = lambda: TrustStore(tmp_path / "trust")  # noqa: E731
        with pytest.raises(VerificationError):
            install(["demo-tool@1.0.0"], mirrors=[mirror_url], root=tmp_path / "r",
                    store=tmp_path / "s", host=host, trust=empty())  # fmt: skip
        assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*/demo-*"))
