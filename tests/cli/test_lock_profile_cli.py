"""``install --from-lock`` on a host that is not exactly a lock profile: the best profile it can
run (target ancestry, OS/libc policy) or ``--profile NAME``, chosen before any download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED

Capture = pytest.CaptureFixture[str]
TOOL_V3 = "p3ni4vm"
TOOL_V4 = "vwaicym"


@pytest.fixture(scope="module")
def lock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("lock")
    manifest = tmp / "m.yaml"
    manifest.write_text(
        f"mirrors:\n  - url: {SPACK_V3_SIGNED}\n"
        "profiles:\n"
        "  - {platform: linux, os: debian12, target: x86_64_v3}\n"
        "  - {platform: linux, os: debian12, target: x86_64_v4}\n"
        "specs: [demo-tool@1.0.0]\n"
    )
    store = tmp / "store"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    path = tmp / "ci.lock"
    assert main(["warm", str(manifest), "--store", str(store), "--lock", str(path), "-q"]) == 0
    return path


def _install(lock: Path, tmp_path: Path, *extra: str) -> tuple[int, Path, Path]:
    store, root = tmp_path / "runner", tmp_path / "root"
    if not store.exists():
        assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    args = ["install", "--from-lock", str(lock), "--store", str(store), "--root", str(root)]
    return main([*args, "--platform", "linux", *extra]), store, root


def _tool_hash(root: Path) -> str:
    (tool,) = root.glob("*/demo-tool-1.0.0-*")
    return tool.name.rsplit("-", 1)[-1][:7]


@pytest.mark.parametrize(
    "case",
    [
        (["--os", "debian12", "--target", "x86_64_v3"], TOOL_V3, None),
        (["--os", "debian12", "--target", "zen4"], TOOL_V4, "x86_64_v4 is the closest target"),
        (["--os", "debian12", "--target", "haswell"], TOOL_V3, "x86_64_v3 is the closest target"),
        (
            ["--os", "ubuntu24.04", "--target", "x86_64_v4", "--os-compat", "libc"],
            TOOL_V4,
            "debian12's libc runs on ubuntu24.04",
        ),
        (
            ["--os", "debian12", "--target", "x86_64_v4", "--profile", "linux-debian12-x86_64_v3"],
            TOOL_V3,
            "chosen with --profile",
        ),
    ],
)
def test_best_runnable_profile(
    lock: Path, tmp_path: Path, capsys: Capture, case: tuple[list[str], str, str | None]
) -> None:
    host, profile, said = case
    code, _, root = _install(lock, tmp_path, *host)
    assert code == 0
    err = capsys.readouterr().err
    assert _tool_hash(root) == profile
    if said is None:
        assert "using lock profile" not in err
    else:
        assert "cacheclient: using lock profile linux-debian12-x86_64_v" in err
        assert said in err


@pytest.mark.parametrize(
    "case",
    [
        (["--os", "debian12", "--target", "x86_64"], 3, "x86_64_v3 does not run on x86_64"),
        (["--os", "ubuntu24.04", "--target", "x86_64_v4"], 3, "OS debian12, host is ubuntu24.04"),
        (["--os", "rhel8", "--target", "x86_64_v4", "--os-compat", "libc"], 3, "needs glibc@2.36"),
        (["--os", "debian12", "--target", "x86_64_v4", "--profile", "linux-x"], 2, "no profile"),
    ],
)
def test_no_runnable_profile_fails_before_any_download(
    lock: Path, tmp_path: Path, capsys: Capture, case: tuple[list[str], int, str]
) -> None:
    host, code, said = case
    got, store, root = _install(lock, tmp_path, *host)
    assert got == code
    assert said in capsys.readouterr().err
    assert not (store / "blobs").exists()
    assert not root.exists()


def test_an_explicit_profile_the_host_cannot_run_is_taken_with_a_warning(
    lock: Path, tmp_path: Path, capsys: Capture
) -> None:
    profile = ["--profile", "linux-debian12-x86_64_v4"]
    code, _, root = _install(lock, tmp_path, "--os", "debian12", "--target", "haswell", *profile)
    assert code == 0
    assert "this host may not run it: target x86_64_v4 does not run on haswell" in (
        capsys.readouterr().err
    )
    assert _tool_hash(root) == TOOL_V4


def test_lock_lists_the_profiles(lock: Path) -> None:
    profiles = [p["profile"]["target"] for p in json.loads(lock.read_text())["profiles"]]
    assert profiles == ["x86_64_v3", "x86_64_v4"]


def test_json_names_the_installed_profile(lock: Path, tmp_path: Path, capsys: Capture) -> None:
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(tmp_path / "runner")]) == 0
    capsys.readouterr()
    code, _, _ = _install(lock, tmp_path, "--os", "debian12", "--target", "zen4", "--json", "-q")
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["lock_profile"] == "linux-debian12-x86_64_v4"
