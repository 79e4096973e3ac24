"""``cacheclient resolve`` and ``cacheclient host`` end to end (in-process, real data)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cacheclient.cli.main import main
from paths import REALDATA, SEED_PAGE, SPACK_V3_SIGNED, SPACK_V3_UNSIGNED
from servers import NginxServer

Run = Callable[..., tuple[int, str, str]]
PKG = "py-pyproject-hooks"
V4 = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def call(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call


def selected_hash(out: str) -> str | None:
    data: dict[str, Any] = json.loads(out)
    sel = data["requests"][0]["selected"]
    return None if sel is None else str(sel["hash"])


class TestContract:
    def test_page_ubuntu2404_v4(self, run: Run) -> None:
        code, out, _ = run(
            "resolve", PKG, "--metadata", str(SEED_PAGE), "--platform", "linux",
            "--os", "ubuntu24.04", "--target", "x86_64_v4", "--json",
        )  # fmt: skip
        assert code == 0
        assert selected_hash(out) in (
            "7gxinepk7daz7rk5xrpl2pln6lc5i37l",
            "yibbnvcp4erbz3pvcmyzvhlxsf77ehrt",
        )
        data = json.loads(out)
        assert data["host"] == {
            "platform": "linux",
            "os": "ubuntu24.04",
            "target": "x86_64_v4",
            "libc": {"name": "glibc", "version": "2.39"},
        }
        sel = data["requests"][0]["selected"]
        assert sel["version"] == "1.2.0"
        assert sel["target"] == "x86_64_v3"
        assert len(sel["stacks"]) == 4

    def test_page_nothing_matches_exit_3_with_reasons(self, run: Run) -> None:
        code, out, err = run(
            "resolve", PKG, "--metadata", str(SEED_PAGE), "--platform", "linux",
            "--os", "ubuntu22.04", "--target", "x86_64_v2", "--json",
        )  # fmt: skip
        assert code == 3
        data = json.loads(out)
        req = data["requests"][0]
        assert req["selected"] is None
        assert all(c["reasons"] for c in req["candidates"])
        assert "rejected by target" in req["message"]
        assert "nothing matches" in err

    def test_mirror_file_url(self, run: Run) -> None:
        code, out, _ = run(
            "resolve", "demo-tool@1.0.0", "--mirror", f"file://{SPACK_V3_SIGNED}", *V4, "--json"
        )
        assert code == 0
        assert selected_hash(out) == "vwaicymp67emhvtu53ght22dv5pm6y2b"
        closure = json.loads(out)["requests"][0]["closure"]
        assert closure[-1]["name"] == "demo-tool"
        assert {c["name"] for c in closure} == {
            "demo-tool",
            "demo-libfoo",
            "demo-zlib",
            "demo-pyhooks",
        }


class TestResolveCommand:
    def test_http_mirror(self, run: Run, nginx_mirror: Callable[..., NginxServer]) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        code, out, _ = run("resolve", "demo-tool@1.0.0", "--mirror", server.url, *V4, "--json")
        assert code == 0
        assert selected_hash(out) == "vwaicymp67emhvtu53ght22dv5pm6y2b"

    def test_several_specs_and_sources(self, run: Run) -> None:
        code, out, _ = run(
            "resolve", "demo-zlib@1.2.13", "demo-pyhooks", "backend=flit",
            "--mirror", str(SPACK_V3_SIGNED), "--mirror", str(SPACK_V3_UNSIGNED),
            "--platform", "linux", "--os", "debian12", "--target", "zen4", "--json",
        )  # fmt: skip
        assert code == 0
        reqs = json.loads(out)["requests"]
        assert [r["request"] for r in reqs] == ["demo-zlib@1.2.13", "demo-pyhooks backend=flit"]
        assert reqs[0]["selected"]["version"] == "1.2.13"
        assert "backend=flit" in reqs[1]["selected"]["variants"]
        # the first mirror given is preferred among identical builds
        assert reqs[0]["selected"]["stacks"][0].endswith("signed")

    def test_human_output_and_explain(self, run: Run) -> None:
        code, out, _ = run(
            "resolve", "demo-tool", "+docs", "--mirror", str(SPACK_V3_SIGNED),
            "--platform", "linux", "--os", "debian12", "--target", "haswell", "--explain",
        )  # fmt: skip
        assert code == 0
        assert "demo-tool@0.9.0" in out
        assert "#1" in out
        assert "[variant] the build has ~docs; the request asks for +docs" in out
        assert "needs avx512" in out

    def test_human_no_match(self, run: Run) -> None:
        code, out, err = run(
            "resolve", PKG, "--metadata", str(SEED_PAGE), "--platform", "linux",
            "--os", "ubuntu22.04", "--target", "x86_64_v2",
        )  # fmt: skip
        assert code == 3
        assert "nothing matches" in out
        assert "more rejected builds" in out
        assert "error: nothing matches 'py-pyproject-hooks'" in err
        assert "closest:" in err

    def test_os_compat_libc(self, run: Run) -> None:
        code, out, _ = run(
            "resolve", PKG, "--metadata", str(SEED_PAGE), "--platform", "linux",
            "--os", "debian12", "--target", "icelake", "--os-compat", "libc", "--json",
        )  # fmt: skip
        assert code == 0
        assert json.loads(out)["os_compat"] == "libc"
        assert selected_hash(out) == "7slhosia3sxtqjg3ms3njoppbdu3jazb"

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["resolve", "zlib@@1", "--metadata", str(SEED_PAGE)], "position 5"),
            (["resolve", PKG, "--metadata", str(SEED_PAGE), "--target", "zen9"], "did you mean"),
            (["resolve", PKG], "no source given"),
            (["resolve", PKG, "--metadata", "/nonexistent/page.md"], "cannot read"),
            (["resolve", PKG, "--metadata", str(SEED_PAGE), "--libc", "x"], "invalid libc"),
        ],
    )
    def test_usage_errors_exit_2(self, run: Run, argv: list[str], message: str) -> None:
        code, _, err = run(*argv, "--platform", "linux", "--os", "ubuntu22.04")
        assert code == 2
        assert message in err
        assert "Traceback" not in err

    def test_env_and_config(
        self, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(
            f"mirrors: [{SPACK_V3_SIGNED}]\nplatform: linux\nos: debian12\ntarget: x86_64_v2\n"
        )
        monkeypatch.setenv("CACHECLIENT_CONFIG", str(cfg))
        monkeypatch.setenv("CACHECLIENT_TARGET", "x86_64_v4")
        code, out, _ = run("resolve", "demo-tool@1.0.0", "--json")
        assert code == 0
        assert selected_hash(out) == "vwaicymp67emhvtu53ght22dv5pm6y2b"
        code, out, _ = run("resolve", "demo-tool@1.0.0", "--target", "x86_64_v3", "--json")
        assert json.loads(out)["requests"][0]["selected"]["target"] == "x86_64_v3"

    def test_bad_config_exit_2(
        self, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        cfg = tmp_path / "config.yaml"
        cfg.write_text("mirors: [x]\n")
        monkeypatch.setenv("CACHECLIENT_CONFIG", str(cfg))
        code, _, err = run("resolve", PKG, "--metadata", str(SEED_PAGE))
        assert code == 2
        assert "unknown key mirors" in err


class TestHostCommand:
    def test_from_files(self, run: Run) -> None:
        code, out, _ = run(
            "host", "--cpuinfo", str(REALDATA / "cpuinfo" / "linux-rocky9-zen5"),
            "--family", "x86_64",
            "--os-release", str(REALDATA / "os-release" / "rocky9.os-release"), "--json",
        )  # fmt: skip
        assert code == 0
        data = json.loads(out)
        assert data["os"] == "rocky9"
        assert data["target"] == "zen5"
        assert data["libc"] == {"name": "glibc", "version": "2.34"}
        assert data["compatible_targets"][:3] == ["zen5", "zen4", "zen3"]
        assert data["compatible_targets"][-1] == "x86_64"

    def test_flags_override_files(self, run: Run) -> None:
        code, out, _ = run(
            "host", "--cpuinfo", str(REALDATA / "cpuinfo" / "linux-rocky9-zen5"),
            "--family", "x86_64", "--target", "haswell", "--os", "ubuntu22.04",
        )  # fmt: skip
        assert code == 0
        assert "target    haswell" in out
        assert "os        ubuntu22.04" in out
        assert "runs      haswell, ivybridge, x86_64_v3" in out

    def test_probe(self, run: Run) -> None:
        code, out, _ = run("host", "--json")
        assert code == 0
        data = json.loads(out)
        assert data["compatible_targets"][0] == data["target"]

    def test_missing_file(self, run: Run) -> None:
        code, _, err = run("host", "--cpuinfo", "/nonexistent/cpuinfo")
        assert code == 2
        assert "--cpuinfo /nonexistent/cpuinfo: cannot read" in err
