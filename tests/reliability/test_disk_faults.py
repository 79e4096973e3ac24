"""Disk faults: a full disk while downloading and while installing, a file size limit, and
read-only stores and roots.

How the faults are made (the tests run as root, here and in CI):

* ENOSPC: a small ``tmpfs`` mounted for the test (``mount -t tmpfs -o size=...``), filled or
  too small for what is fetched or installed, then grown with ``mount -o remount,size=...``
  so the same command can be run again;
* EFBIG: ``RLIMIT_FSIZE`` set in the child process (Python ignores ``SIGXFSZ``, so writes
  past the limit fail with ``File too large``);
* read-only: the tmpfs remounted ``ro`` (``chmod`` would not do: root bypasses it).

Every case checks the exit code and the one-line message, that the store holds only
verified blobs and the root only complete, recorded prefixes, and that once the disk has room
again (or is writable again) the same command succeeds.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from cacheclient.mirrors.writer import WrittenMirror
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED
from reliability import (
    BIG_HOST,
    assert_clean,
    assert_one_line_error,
    cli_env,
    run_cli,
    store_builds,
    write_big_mirror,
)
from servers import NginxServer

ServeDir = Callable[..., NginxServer]
Mount = Callable[[str], Path]
HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """Factory: ``mount(size)`` -> a fresh tmpfs of that size, unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
            check=True,
        )
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def remount(point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> WrittenMirror:
    """``bigpkg`` (~12 MiB tarball) and ``smallpkg`` (a few KiB), unsigned."""
    root = tmp_path_factory.mktemp("disk") / "mirror"
    return write_big_mirror(root, megabytes=12, files=60, small=True)


def fetch_args(mirror: Path | str, store: Path, spec: str = "bigpkg") -> list[str]:
    return ["fetch", spec, *BIG_HOST, "--mirror", str(mirror), "--store", str(store),
            "--allow-unsigned", "--quiet"]  # fmt: skip


def install_args(mirror: Path | str, store: Path, root: Path, spec: str = "bigpkg") -> list[str]:
    return ["install", *fetch_args(mirror, store, spec)[1:], "--root", str(root)]


class TestDiskFullWhileDownloading:
    def test_tarball_larger_than_the_free_space(
        self, big: WrittenMirror, tmpfs: Mount, nginx_mirror: ServeDir
    ) -> None:
        server = nginx_mirror(big.root)
        point = tmpfs("4m")
        store = point / "store"
        result = run_cli(fetch_args(server.url, store))
        assert_one_line_error(result.err, result.code, 8, "no space left on device")
        assert store_builds(store) == {}
        assert_clean(store, allow_partials=False)  # the partial file was given back
        remount(point, "size=64m")
        result = run_cli(fetch_args(server.url, store))
        assert result.code == 0, result.err
        assert len(store_builds(store)) == 1
        assert_clean(store, allow_partials=False)

    @pytest.mark.parametrize("free_kib", [0, 8, 24, 48])
    def test_metadata_writes_on_a_nearly_full_disk(
        self, free_kib: int, tmpfs: Mount, nginx_mirror: ServeDir
    ) -> None:
        """The signed fixture's small blobs, manifests and records, with almost no room."""
        server = nginx_mirror(SPACK_V3_SIGNED)
        point = tmpfs("1m")
        store = point / "store"
        assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
        filler = point / "filler"
        stat = os.statvfs(point)
        room = stat.f_bavail * stat.f_frsize - free_kib * 1024
        filler.write_bytes(b"\0" * max(room, 0))
        args = ["fetch", "demo-tool@1.0.0", *HOST, "--mirror", server.url, "--store", str(store)]
        result = run_cli([*args, "--quiet"])
        assert_one_line_error(result.err, result.code, 8, "no space left on device")
        assert_clean(store)
        filler.unlink()
        result = run_cli([*args, "--quiet"])
        assert result.code == 0, result.err
        assert len(store_builds(store)) == 4
        assert_clean(store, allow_partials=False)

    def test_file_size_limit(self, big: WrittenMirror, tmp_path: Path) -> None:
        """EFBIG from RLIMIT_FSIZE (1 MiB): the same clean failure as a full disk."""
        store = tmp_path / "store"

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

        proc = subprocess.run(
            [sys.executable, "-m", "cacheclient", *fetch_args(big.root, store)],
            env=cli_env(),
            capture_output=True,
            text=True,
            preexec_fn=limit,
            timeout=120,
            check=False,
        )
        assert_one_line_error(proc.stderr, proc.returncode, 8, "File too large")
        assert store_builds(store) == {}
        assert_clean(store, allow_partials=False)
        result = run_cli(fetch_args(big.root, store))
        assert result.code == 0, result.err
        assert_clean(store, allow_partials=False)


class TestDiskFullWhileInstalling:
    def test_root_too_small_keeps_earlier_installs(
        self, big: WrittenMirror, tmpfs: Mount, tmp_path: Path
    ) -> None:
        store = tmp_path / "store"
        point = tmpfs("6m")
        root = point / "root"
        small = run_cli(install_args(big.root, store, root, "smallpkg"))
        assert small.code == 0, small.err
        before = (root / ".cacheclient" / "installed.json").read_text()
        result = run_cli(install_args(big.root, store, root))
        assert_one_line_error(result.err, result.code, 8, "no space left on device")
        assert (root / ".cacheclient" / "installed.json").read_text() == before
        assert_clean(store, root, allow_partials=False)
        remount(point, "size=64m")
        result = run_cli(install_args(big.root, store, root))
        assert result.code == 0, result.err
        assert len(list(root.glob("linux-x86_64_v3/*pkg-*"))) == 2
        assert_clean(store, root, allow_partials=False)

    @pytest.mark.parametrize("free_kib", range(0, 28, 4))
    def test_every_stage_on_a_nearly_full_root(
        self, free_kib: int, big: WrittenMirror, tmpfs: Mount, tmp_path: Path
    ) -> None:
        """Extraction, relocation, the rename and the database write each meet ENOSPC for
        some free space: the root never holds a prefix its database does not list."""
        store = tmp_path / "store"
        assert run_cli(fetch_args(big.root, store, "smallpkg")).code == 0
        point = tmpfs("1m")
        root = point / "root"
        filler = point / "filler"
        stat = os.statvfs(point)
        filler.write_bytes(b"\0" * max(stat.f_bavail * stat.f_frsize - free_kib * 1024, 0))
        result = run_cli(install_args(big.root, store, root, "smallpkg"))
        if result.code != 0:
            assert_one_line_error(result.err, result.code, 8, "no space left on device")
        assert_clean(store, root, allow_partials=False)
        filler.unlink()
        result = run_cli(install_args(big.root, store, root, "smallpkg"))
        assert result.code == 0, result.err
        assert len(list(root.glob("linux-x86_64_v3/smallpkg-*"))) == 1
        assert_clean(store, root, allow_partials=False)


class TestReadOnly:
    def test_empty_read_only_store(
        self, big: WrittenMirror, tmpfs: Mount, nginx_mirror: ServeDir
    ) -> None:
        server = nginx_mirror(big.root)
        point = tmpfs("1m")
        remount(point, "ro")
        store = point / "store"
        result = run_cli(fetch_args(server.url, store, "smallpkg"))
        assert_one_line_error(result.err, result.code, 8, "read-only")
        assert not store.exists()

    def test_warm_read_only_store_installs_online_and_offline(
        self, big: WrittenMirror, tmpfs: Mount, nginx_mirror: ServeDir, tmp_path: Path
    ) -> None:
        server = nginx_mirror(big.root)
        point = tmpfs("8m")
        store = point / "store"
        assert run_cli(fetch_args(server.url, store, "smallpkg")).code == 0
        remount(point, "ro")
        for i, extra in enumerate(([], ["--offline"])):
            root = tmp_path / f"root{i}"
            args = [*install_args(server.url, store, root, "smallpkg"), *extra]
            result = run_cli(args)
            assert result.code == 0, result.err
            assert_clean(store, root, allow_partials=False)
        # a build the read-only store does not hold: a clean error naming the store
        result = run_cli(fetch_args(server.url, store))
        assert_one_line_error(result.err, result.code, 8, "read-only")
        assert_clean(store)

    def test_read_only_root(self, big: WrittenMirror, tmpfs: Mount, tmp_path: Path) -> None:
        store = tmp_path / "store"
        point = tmpfs("1m")
        remount(point, "ro")
        result = run_cli(install_args(big.root, store, point / "root", "smallpkg"))
        assert_one_line_error(result.err, result.code, 8, str(point / "root"))
        assert_clean(store)
