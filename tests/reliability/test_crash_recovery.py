"""``kill -9`` in the middle of a download, an extraction and every store or root write,
and Ctrl-C while a download is blocked.

After each kill, the store still holds only verified blobs and the root only complete
prefixes that its database lists; the same command run again resumes (downloads continue
with a ``Range`` request, also when another process was waiting for the dead one's lock) or
restarts, and ends verified with nothing left over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cacheclient.cli.main import main
from cacheclient.mirrors.writer import WrittenBuild, WrittenMirror
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED
from reliability import (
    BIG_HOST,
    assert_clean,
    cli_env,
    root_problems,
    run_cli,
    store_builds,
    store_problems,
    write_big_mirror,
)
from servers import Fault, FaultServer, NginxServer

MakeFaultServer = Callable[..., FaultServer]
ServeDir = Callable[..., NginxServer]

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> WrittenMirror:
    return write_big_mirror(tmp_path_factory.mktemp("big") / "mirror", megabytes=24, files=1500)


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert proc.poll() is None, f"the command ended ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cacheclient", *args],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


class _Stalled(NamedTuple):
    build: WrittenBuild
    tar_url_path: str
    server: FaultServer
    store: Path
    args: list[str]
    partial: Path


def _stalled_fetch(
    big: WrittenMirror,
    fault_server: MakeFaultServer,
    tmp_path: Path,
    *,
    after_bytes: int,
    times: int | None = None,
) -> _Stalled:
    """A mirror whose tarball stalls after *after_bytes*, and the ``fetch`` that hits it."""
    (build,) = big.builds.values()
    tar_url_path = "/" + build.tarball.path
    server = fault_server(big.root)
    server.inject(
        Fault(
            kind="stall",
            path=tar_url_path,
            after_bytes=after_bytes,
            stall_seconds=30,
            times=times,
        )
    )
    store = tmp_path / "store"
    args = ["fetch", "bigpkg", *BIG_HOST, "--mirror", server.url, "--store", str(store)]
    args += ["--allow-unsigned", "--quiet"]
    partial = store / ".cacheclient" / "partial" / f"{build.tarball.checksum}.partial"
    return _Stalled(build, tar_url_path, server, store, args, partial)


class TestKillDuringDownload:
    def test_rerun_resumes_with_a_range_request(
        self, big: WrittenMirror, fault_server: MakeFaultServer, tmp_path: Path
    ) -> None:
        cut = 8 << 20
        build, tar_url_path, server, store, args, partial = _stalled_fetch(
            big, fault_server, tmp_path, after_bytes=cut
        )
        proc = _start(args)
        _wait_for(lambda: partial.exists() and partial.stat().st_size >= cut, proc, "8 MiB")
        _kill(proc)
        assert store_problems(store) == []
        assert store_builds(store) == {}
        server.clear_faults()
        result = run_cli(args)
        assert result.code == 0, result.err
        ranges = [r.range for r in server.requests() if r.path == tar_url_path]
        assert ranges[0] == ""
        assert ranges[-1].startswith("bytes=")
        assert int(ranges[-1][len("bytes=") : -1]) >= cut
        assert set(store_builds(store)) == {build.record.hash}
        assert_clean(store, allow_partials=False)

    def test_rerun_after_kill_with_the_mirror_changed_restarts(
        self, big: WrittenMirror, fault_server: MakeFaultServer, tmp_path: Path
    ) -> None:
        """The kept prefix no longer matches (the validator changed): start from zero."""
        build, _, server, store, args, partial = _stalled_fetch(
            big, fault_server, tmp_path, after_bytes=4 << 20
        )
        proc = _start(args)
        _wait_for(lambda: partial.exists() and partial.stat().st_size >= 4 << 20, proc, "4 MiB")
        _kill(proc)
        # Garble the kept prefix: a resume would produce the wrong digest once, then restart.
        with open(partial, "r+b") as handle:
            handle.write(b"\0" * 4096)
        server.clear_faults()
        result = run_cli(args)
        assert result.code == 0, result.err
        assert set(store_builds(store)) == {build.record.hash}
        assert_clean(store, allow_partials=False)

    def test_a_waiting_process_takes_over_the_dead_download(
        self, big: WrittenMirror, fault_server: MakeFaultServer, tmp_path: Path
    ) -> None:
        """B waits for A's download lock; A is killed; B continues A's partial file."""
        cut = 8 << 20
        build, tar_url_path, server, store, args, partial = _stalled_fetch(
            big, fault_server, tmp_path, after_bytes=cut, times=1
        )
        first = _start(args)
        _wait_for(lambda: partial.exists() and partial.stat().st_size >= cut, first, "8 MiB")
        manifest = "/" + str(build.manifest_path)
        second = subprocess.Popen(
            [sys.executable, "-m", "cacheclient", *args],
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(lambda: server.count(manifest) == 2, second, "the second run read the manifest")
        time.sleep(0.3)  # now blocked on the download lock A holds
        assert second.poll() is None
        _kill(first)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        ranges = [r.range for r in server.requests() if r.path == tar_url_path]
        assert len(ranges) == 2, ranges
        assert ranges[0] == ""
        assert int(ranges[1][len("bytes=") : -1]) >= cut
        assert set(store_builds(store)) == {build.record.hash}
        assert_clean(store, allow_partials=False)

    def test_ctrl_c_ends_at_once_and_the_rerun_resumes(
        self, big: WrittenMirror, fault_server: MakeFaultServer, tmp_path: Path
    ) -> None:
        """SIGINT while a download thread is blocked in a read: exit 130 now, one line."""
        cut = 8 << 20
        _, tar_url_path, server, store, args, partial = _stalled_fetch(
            big, fault_server, tmp_path, after_bytes=cut, times=1
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "cacheclient", *args],
            env=cli_env({"CACHECLIENT_READ_TIMEOUT": "60"}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(lambda: partial.exists() and partial.stat().st_size >= cut, proc, "8 MiB")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)  # the stall lasts 30 s: waiting for it fails
        assert proc.returncode == 130
        assert err == "cacheclient: interrupted\n"
        assert store_problems(store) == []
        result = run_cli(args)
        assert result.code == 0, result.err
        ranges = [r.range for r in server.requests() if r.path == tar_url_path]
        assert int(ranges[-1][len("bytes=") : -1]) >= cut
        assert_clean(store, allow_partials=False)


class TestKillDuringExtraction:
    def test_root_keeps_only_complete_prefixes_and_rerun_installs(
        self, big: WrittenMirror, tmp_path: Path
    ) -> None:
        (build,) = big.builds.values()
        store, root = tmp_path / "store", tmp_path / "root"
        common = ["bigpkg", *BIG_HOST, "--mirror", str(big.root), "--store", str(store)]
        common += ["--allow-unsigned", "--quiet"]
        assert run_cli(["fetch", *common]).code == 0
        args = ["install", *common, "--root", str(root)]
        work_parent = root / "linux-x86_64_v3"

        def extracting() -> bool:
            for work in work_parent.glob(".bigpkg-*"):
                share = work / "prefix" / "share" / "bigpkg"
                if share.is_dir() and any(share.iterdir()):
                    return True
            return False

        proc = _start(args)
        _wait_for(extracting, proc, "the extraction started")
        _kill(proc)
        assert root_problems(root, after_crash=True) == []
        assert not list(work_parent.glob("bigpkg-*")), "a prefix appeared half-installed"
        result = run_cli(args)
        assert result.code == 0, result.err
        (prefix,) = work_parent.glob("bigpkg-*")
        out = subprocess.run([str(prefix / "bin" / "hello")], capture_output=True, check=True)
        assert out.stdout == b"hello\n"
        assert_clean(store, root, allow_partials=False)
        assert build.record.hash in store_builds(store)


# Run a cacheclient command, SIGKILL it right before or after the N-th rename whose target
# contains a given text: the deterministic way to die in the middle of a store/root write.
_KILLER = r"""
import os, signal, sys
pattern, when, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = 0
def wrap(real):
    def rename(src, dst, *args, **kw):
        global seen
        where = os.fspath(dst)
        if kw.get("dst_dir_fd") is not None:  # renamed relative to an open directory
            where = os.readlink(f"/proc/self/fd/{kw['dst_dir_fd']}") + "/" + where
        hit = pattern in where
        if hit:
            seen += 1
        if hit and seen == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst, *args, **kw)
        if hit and seen == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
    return rename
os.replace = wrap(os.replace)
os.rename = wrap(os.rename)
from cacheclient.cli.main import main
sys.exit(main(sys.argv[4:]))
"""

KILL_POINTS = [
    ("blobs/sha256/", "before", 1),
    ("blobs/sha256/", "after", 3),
    ("v3/manifests/spec/", "before", 1),
    ("v3/manifests/spec/", "after", 2),
    (".cacheclient/builds/", "before", 2),
    (".cacheclient/builds/", "after", 1),
    (".cacheclient/indices/", "before", 1),
    ("index.manifest.json", "before", 1),
    ("installed.json", "before", 1),
    ("installed.json", "after", 2),
    ("/linux-x86_64_v", "before", 2),
    ("/linux-x86_64_v", "after", 3),
    ("/bin/sbang", "before", 1),
]


@pytest.mark.parametrize(("pattern", "when", "nth"), KILL_POINTS, ids=str)
def test_kill_9_during_a_write_then_rerun(
    pattern: str, when: str, nth: int, nginx_mirror: ServeDir, tmp_path: Path
) -> None:
    server = nginx_mirror(SPACK_V3_SIGNED)
    store, root = tmp_path / "store", tmp_path / "root"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    common = ["demo-tool@1.0.0", *HOST, "--mirror", server.url, "--store", str(store), "--quiet"]
    args = ["install", *common, "--root", str(root), "--jobs", "1"]
    killed = subprocess.run(
        [sys.executable, "-c", _KILLER, pattern, when, str(nth), *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, f"never reached the kill point: {killed.stderr}"
    assert store_problems(store) == []
    assert root_problems(root, after_crash=True) == []
    result = run_cli(args)
    assert result.code == 0, result.err
    assert_clean(store, root, allow_partials=False)
    (tool,) = root.glob("linux-x86_64_v4/demo-tool-*/bin/demo-tool")
    out = subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout
    assert out.startswith("demo-tool 1.0.0")
    # and the store is complete enough to install again without any server
    server.stop()
    again = run_cli(["install", *common, "--root", str(tmp_path / "root2"), "--offline"])
    assert again.code == 0, again.err
    assert os.path.isdir(tmp_path / "root2")
