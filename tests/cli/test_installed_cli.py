"""``list``, ``location``, ``env`` and ``uninstall`` on a root installed from Spack's own
fixture mirror (real tarballs, real gpg), driven through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cacheclient.cli.main import main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
TOOL = "vwaicymp67emhvtu53ght22dv5pm6y2b"
ZLIB = "4pnfv56zoqkyu4cep6uzu76sb73mlq2w"
LIBFOO = "5s4uqu7gef2mqgoqw7kykodn5gxxbsvp"
PYHOOKS = "ztdmdn3qjmq5eonho2hoaqjrxlhkzymp"


def _install(tmp: Path, root: Path, *specs: str) -> None:
    store = tmp / "store"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    args = [*specs, "--mirror", str(SPACK_V3_SIGNED), *HOST, "--store", str(store), "-q"]
    assert main(["install", *args, "--root", str(root)]) == 0


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root with demo-tool@1.0.0 and its closure (shared by the read-only tests)."""
    tmp = tmp_path_factory.mktemp("installed")
    root = tmp / "root"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHECLIENT_")}
    env["XDG_CONFIG_HOME"] = str(tmp / "config")
    env["XDG_CACHE_HOME"] = str(tmp / "cache")
    env["XDG_DATA_HOME"] = str(tmp / "data")
    cli = [sys.executable, "-m", "cacheclient"]
    store = str(tmp / "store")
    subprocess.run(
        [*cli, "keys", "trust", str(SPACK_V3_KEY), "--store", store], env=env, check=True
    )
    subprocess.run(
        [
            *cli,
            "install",
            "demo-tool@1.0.0",
            "--mirror",
            str(SPACK_V3_SIGNED),
            *HOST,
            "--store",
            store,
            "--root",
            str(root),
            "-q",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    return root


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


class TestList:
    def test_all_builds(self, installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = _cli(capsys, "list", "--root", str(installed))
        assert code == 0
        lines = out.splitlines()
        assert [line.split()[1] for line in lines] == [
            "demo-libfoo@2.1.0",
            "demo-pyhooks@1.0.0",
            "demo-tool@1.0.0",
            "demo-zlib@1.3.1",
        ]
        assert lines[2].split() == ["vwaicym", "demo-tool@1.0.0", "linux-debian12-x86_64_v4"]

    def test_spec_filter_paths_and_json(
        self, installed: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = _cli(capsys, "list", "-p", "demo-zlib+shared", "--root", str(installed))
        assert code == 0
        (line,) = out.splitlines()
        prefix = line.split()[-1]
        assert Path(prefix).is_dir()
        assert prefix.endswith(ZLIB)
        code, out, _ = _cli(capsys, "list", "target=x86_64_v3", "--json", "--root", str(installed))
        doc = json.loads(out)
        assert doc["schema"] == "cacheclient.list"
        assert {b["hash"] for b in doc["builds"]} == {ZLIB, LIBFOO}
        assert {b["arch"] for b in doc["builds"]} == {"linux-debian12-x86_64_v3"}
        libfoo = next(b for b in doc["builds"] if b["hash"] == LIBFOO)
        assert libfoo["dependencies"] == [ZLIB]

    def test_no_match_is_exit_3(self, installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = _cli(capsys, "list", "demo-tool@2:", "--root", str(installed))
        assert (code, out) == (3, "")
        assert "no installed build matches 'demo-tool@2:'" in err

    def test_missing_root_lists_nothing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = _cli(capsys, "list", "--root", str(tmp_path / "none"))
        assert code == 0
        assert "no builds installed" in out
        assert not (tmp_path / "none").exists()


class TestLocation:
    def test_runs_the_installed_tool(self, installed: Path) -> None:
        """The README's quick start: ``$(cacheclient location demo-tool)/bin/demo-tool``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CACHECLIENT_")}
        env["CACHECLIENT_ROOT"] = str(installed)
        script = f'"$({sys.executable} -m cacheclient location demo-tool)/bin/demo-tool"'
        done = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, check=True
        )
        assert done.stdout.startswith("demo-tool 1.0.0 ")

    def test_by_hash_prefix(self, installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = _cli(capsys, "location", f"/{ZLIB[:7]}", "--root", str(installed))
        assert code == 0
        assert out.strip().endswith(f"demo-zlib-1.3.1-{ZLIB}")

    @pytest.mark.parametrize(
        ("spec", "words"),
        [
            ("demo-nothing", ["no installed build matches 'demo-nothing'"]),
            ("demo-tool@2", ["no installed build matches", "installed: demo-tool@1.0.0 /vwaicym"]),
            ("target=x86_64_v3", ["matches 2 installed builds", "/4pnfv56", "/5s4uqu7"]),
        ],
    )
    def test_none_or_ambiguous_is_exit_3(
        self, installed: Path, capsys: pytest.CaptureFixture[str], spec: str, words: list[str]
    ) -> None:
        code, out, err = _cli(capsys, "location", spec, "--root", str(installed))
        assert (code, out) == (3, "")
        for word in words:
            assert word in err


class TestEnv:
    def test_sh_puts_the_closure_on_path(self, installed: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CACHECLIENT_")}
        env["PATH"] = "/usr/bin:/bin"
        env.pop("MANPATH", None)
        env.pop("PKG_CONFIG_PATH", None)
        cmd = f"{sys.executable} -m cacheclient env demo-tool --root {installed}"
        script = (
            f'eval "$({cmd})" && demo-tool && command -v demo-tool && '
            'echo "PKG=$PKG_CONFIG_PATH" && echo "CMAKE=$CMAKE_PREFIX_PATH"'
        )
        done = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, check=True
        )
        lines = done.stdout.splitlines()
        assert lines[0].startswith("demo-tool 1.0.0 ")
        assert lines[1].endswith(f"demo-tool-1.0.0-{TOOL}/bin/demo-tool")
        pkg = lines[2].removeprefix("PKG=").split(":")
        assert [Path(p).parent.parent.name for p in pkg] == [
            f"demo-libfoo-2.1.0-{LIBFOO}",
            f"demo-zlib-1.3.1-{ZLIB}",
        ]
        cmake = lines[3].removeprefix("CMAKE=").split(":")
        assert [c.rsplit("-", 1)[-1] for c in cmake] == [TOOL, PYHOOKS, LIBFOO, ZLIB]

    def test_shells(self, installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
        for shell, start in (("csh", "setenv PATH '"), ("fish", "set -gx PATH '")):
            code, out, _ = _cli(
                capsys, "env", "demo-zlib", "--shell", shell, "--root", str(installed)
            )
            assert code == 0
            path_line = next(
                line
                for line in out.splitlines()
                if "PATH " in line and "CMAKE" not in line and "PKG" not in line
            )
            assert path_line.startswith(start)
            assert ZLIB in path_line

    def test_default_shell_follows_the_login_shell(
        self, installed: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for shell, start in (
            ("/usr/bin/fish", "set -gx "),
            ("/bin/tcsh", "setenv "),
            ("", "export "),
        ):
            monkeypatch.setenv("SHELL", shell)
            code, out, _ = _cli(capsys, "env", "demo-zlib", "--root", str(installed))
            assert code == 0
            assert all(line.startswith(start) for line in out.splitlines())

    def test_only_package_and_json(
        self, installed: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, _ = _cli(
            capsys, "env", "demo-tool", "--only", "package", "--json", "--root", str(installed)
        )
        assert code == 0
        doc = json.loads(out)
        assert [b["hash"] for b in doc["builds"]] == [TOOL]
        assert doc["variables"]["CMAKE_PREFIX_PATH"].split(":")[0].endswith(TOOL)


class TestUninstall:
    def test_refuses_a_needed_build_then_removes_in_order(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = tmp_path / "root"
        _install(tmp_path, root, "demo-tool@1.0.0")
        capsys.readouterr()
        zlib_prefix = next(root.glob(f"*/demo-zlib-1.3.1-{ZLIB}"))
        code, _, err = _cli(capsys, "uninstall", "demo-zlib", "--root", str(root))
        assert code == 2
        assert "needed by demo-libfoo@2.1.0 /5s4uqu7, demo-tool@1.0.0 /vwaicym" in err
        assert zlib_prefix.is_dir()
        code, out, _ = _cli(capsys, "uninstall", "demo-tool", "--root", str(root))
        assert code == 0
        assert out.startswith("uninstalled demo-tool@1.0.0 /vwaicym")
        assert not list(root.glob("*/demo-tool-*"))
        code, out, _ = _cli(capsys, "uninstall", "demo-zlib", "demo-libfoo", "--root", str(root))
        assert code == 0
        assert [line.split()[1] for line in out.splitlines()] == [
            "demo-libfoo@2.1.0",
            "demo-zlib@1.3.1",
        ]
        assert not zlib_prefix.exists()
        code, out, _ = _cli(capsys, "list", "--root", str(root))
        assert out.split()[1] == "demo-pyhooks@1.0.0"
        assert not list(root.rglob(".*tmp-*"))

    def test_force_removes_a_needed_build(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = tmp_path / "root"
        _install(tmp_path, root, "demo-tool@1.0.0")
        capsys.readouterr()
        code, _, err = _cli(capsys, "uninstall", "demo-zlib", "--force", "--root", str(root))
        assert code == 0
        assert "warning: demo-zlib@1.3.1 /4pnfv56 removed although" in err
        db = json.loads((root / ".cacheclient" / "installed.json").read_text())
        assert ZLIB not in db["installs"]
        # env leaves the missing dependency out, with a warning
        code, out, err = _cli(capsys, "env", "demo-tool", "--root", str(root))
        assert code == 0
        assert ZLIB not in out
        assert "/4pnfv56 is not installed" in err

    @pytest.mark.parametrize("bad", ["/", "{root}", "{root}/../elsewhere", "{root}/.cacheclient"])
    def test_never_deletes_outside_the_root(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
    ) -> None:
        """The database is read back from disk: a tampered prefix is refused, not deleted."""
        root = tmp_path / "root"
        _install(tmp_path, root, f"demo-zlib/{ZLIB}")
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "keep").write_text("precious")
        db_path = root / ".cacheclient" / "installed.json"
        db = json.loads(db_path.read_text())
        db["installs"][ZLIB]["prefix"] = bad.format(root=root)
        db_path.write_text(json.dumps(db))
        capsys.readouterr()
        code, _, err = _cli(capsys, "uninstall", "demo-zlib", "--root", str(root))
        assert code == 8
        assert "not removing it" in err
        assert (tmp_path / "elsewhere" / "keep").read_text() == "precious"
        assert (root / ".cacheclient" / "installed.json").is_file()
        assert ZLIB in json.loads(db_path.read_text())["installs"]

    def test_symlinked_prefix_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = tmp_path / "root"
        _install(tmp_path, root, f"demo-zlib/{ZLIB}")
        prefix = next(root.glob(f"*/demo-zlib-1.3.1-{ZLIB}"))
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "keep").write_text("x")
        prefix.rename(tmp_path / "moved")
        prefix.symlink_to(outside)
        capsys.readouterr()
        code, _, err = _cli(capsys, "uninstall", "demo-zlib", "--root", str(root))
        assert code == 8
        assert "symbolic link" in err
        assert (outside / "keep").exists()


def test_the_library_result_maps_each_request_to_its_prefix(tmp_path: Path) -> None:
    from cacheclient.api import install
    from cacheclient.resolution.host import HostProfile
    from cacheclient.store import Store
    from cacheclient.trust import TrustStore

    store = Store(tmp_path / "store")
    TrustStore(store.trust_dir).trust(str(SPACK_V3_KEY))
    host = HostProfile(platform="linux", os="debian12", target="x86_64_v4")
    result = install(
        ["demo-tool@1.0.0", f"demo-zlib/{ZLIB}"],
        mirrors=[str(SPACK_V3_SIGNED)],
        root=tmp_path / "root",
        store=store,
        host=host,
    )
    tool = result.prefix_for("demo-tool@1.0.0")
    assert tool is not None
    assert tool.name == f"demo-tool-1.0.0-{TOOL}"
    assert (tool / "bin" / "demo-tool").is_file()
    assert result.to_dict()["requests"][f"demo-zlib/{ZLIB}"].endswith(ZLIB)
    assert result.prefix_for("nothing") is None


def test_json_outputs_follow_their_published_schemas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib import resources

    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    folder = resources.files("cacheclient") / "schemas"
    schemas = {
        e.name.removesuffix(".json"): json.loads(e.read_text("utf-8"))
        for e in folder.iterdir()
        if e.name.endswith(".json")
    }
    registry: Registry[Any] = Registry().with_resources(
        (f"https://cacheclient.invalid/schemas/{n}.json", Resource.from_contents(d))
        for n, d in schemas.items()
    )
    root = tmp_path / "root"
    _install(tmp_path, root, "demo-tool@1.0.0")
    for argv in (
        ["list", "-p"],
        ["list", "demo-nothing"],
        ["env", "demo-tool"],
        ["uninstall", "demo-tool"],
        ["uninstall", "demo-zlib"],
    ):
        capsys.readouterr()
        main([*argv, "--root", str(root), "--json"])
        doc = json.loads(capsys.readouterr().out)
        name = doc["schema"].removeprefix("cacheclient.")
        errors = list(Draft202012Validator(schemas[name], registry=registry).iter_errors(doc))
        assert not errors, (argv, [e.message for e in errors[:3]])
        assert (doc.get("error") is None) == (argv[-1] not in ("demo-nothing", "demo-zlib"))


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("relative/prefix", "is not an absolute path"),
        ("/tmp/x\n/evil", "holds a control character"),
        ("/tmp/x:/evil", "holds ':'"),
    ],
)
def test_a_tampered_prefix_is_never_handed_to_a_shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, why: str
) -> None:
    root = tmp_path / "root"
    _install(tmp_path, root, f"demo-zlib/{ZLIB}")
    db_path = root / ".cacheclient" / "installed.json"
    db = json.loads(db_path.read_text())
    db["installs"][ZLIB]["prefix"] = bad
    db["installs"][ZLIB]["name"] = "demo-zlib\x1b[2J"
    db_path.write_text(json.dumps(db))
    capsys.readouterr()
    code, out, err = _cli(capsys, "location", f"/{ZLIB[:7]}", "--root", str(root))
    assert (code, out) == (8, "")
    assert why in err
    code, out, err = _cli(capsys, "env", f"/{ZLIB[:7]}", "--root", str(root))
    assert code == 0
    assert "/evil" not in out
    assert "left out" in err
    code, out, _ = _cli(capsys, "list", "--root", str(root))
    assert "\x1b" not in out
    assert "demo-zlib?[2J" in out
