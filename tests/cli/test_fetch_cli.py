"""``cacheclient fetch`` end to end: real nginx, real signatures, the store on disk."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from builders import trust_key
from cacheclient.cli.main import main
from cacheclient.cli.render import (
    JsonLinesReporter,
    LogReporter,
    TtyReporter,
    format_bytes,
    make_reporter,
)
from cacheclient.events import Reporter
from paths import SEED_PAGE, SPACK_V3_SIGNED, SPACK_V3_UNSIGNED
from servers import FaultServer, NginxServer

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
SELECTED = "vwaicymp67emhvtu53ght22dv5pm6y2b"  # demo-tool@1.0.0 for x86_64_v4

Capture = pytest.CaptureFixture[str]


def fetch(mirror: str, store: Path, *extra: str) -> int:
    return main(
        ["fetch", "demo-tool@1.0.0", "--mirror", mirror, *HOST, "--store", str(store), *extra]
    )


trust = trust_key


class TestSignedMirror:
    def test_refused_until_trusted_then_fetched(
        self, nginx_mirror: Callable[..., NginxServer], tmp_path: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store = tmp_path / "s"
        assert fetch(server.url, store) == 4
        err = capsys.readouterr().err
        assert "789B96D6B931B1D5" in err
        assert "not trusted" in err
        assert [p for p in (store / "blobs").rglob("*") if p.is_file()] == []
        trust(store)
        capsys.readouterr()
        assert fetch(server.url, store, "--json") == 0
        out = capsys.readouterr()
        data = json.loads(out.out)
        assert data["requests"][0]["selected"] == SELECTED
        assert data["not_signature_checked"] == []
        builds = data["builds"]
        assert builds[-1]["hash"] == SELECTED  # dependencies first, the root last
        assert len(builds) == len(data["requests"][0]["closure"]) == 4
        for build in builds:
            assert build["signed"] is True
            assert build["mirror"] == server.url
            for blob in build["blobs"]:
                assert blob["digest"].startswith("sha256:")
                assert blob["size"] > 0
                assert blob["mirror"] == server.url
                assert blob["already_present"] is False
                assert Path(blob["path"]).stat().st_size == blob["size"]
        events = [json.loads(line) for line in out.err.splitlines() if line.strip()]
        assert events[0]["event"] == "starting"
        assert events[-1]["event"] == "finished"
        assert {"download_started", "download_finished"} <= {e["event"] for e in events}

        before = server.count("/blobs/")
        assert fetch(server.url, store, "--json", "--quiet") == 0
        again = json.loads(capsys.readouterr().out)
        assert all(b["already_present"] for build in again["builds"] for b in build["blobs"])
        assert server.count("/blobs/") == before

    def test_offline_after_fetch_and_plain_output(
        self, nginx_mirror: Callable[..., NginxServer], tmp_path: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store = tmp_path / "s"
        trust(store)
        assert fetch(server.url, store) == 0
        out = capsys.readouterr()
        assert "downloaded  demo-tool@1.0.0" in out.err  # not a terminal: plain log lines
        assert "installed" not in out.err  # each build is reported once, on stdout
        assert out.out.count("fetched ") == 4
        assert "signed by DB2679D9E5CB03ADB239ACC6789B96D6B931B1D5" in out.out
        server.stop()
        assert fetch(server.url, store, "--offline", "--quiet") == 0
        out = capsys.readouterr()
        assert out.out.count("present ") == 4
        assert out.err == ""
        # offline without any source: the store is a mirror of what it holds
        args = ["fetch", "demo-tool@1.0.0", *HOST, "--store", str(store), "--offline", "-q"]
        assert main(args) == 0
        assert capsys.readouterr().out.count("present ") == 4


class TestTerminal:
    def test_progress_display_on_a_terminal(
        self, nginx_mirror: Callable[..., NginxServer], tmp_path: Path
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        store = tmp_path / "s"
        trust(store)
        main_fd, child_fd = os.openpty()
        shown: list[bytes] = []

        def drain() -> None:  # read while the child writes: a full pty would block it
            with contextlib.suppress(OSError):
                while chunk := os.read(main_fd, 65536):
                    shown.append(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        command = [sys.executable, "-m", "cacheclient", "fetch", "demo-tool@1.0.0"]
        try:
            proc = subprocess.run(
                [*command, "--mirror", server.url, *HOST, "--store", str(store)],
                stderr=child_fd,
                stdout=subprocess.PIPE,
                check=False,
                timeout=120,
            )
        finally:
            os.close(child_fd)
            reader.join(timeout=30)
            os.close(main_fd)
        text = b"".join(shown).decode()
        assert proc.returncode == 0
        assert "\r\x1b[2K" in text  # the status line is redrawn in place
        assert "ETA" in text
        assert "/s" in text
        assert proc.stdout.decode().count("fetched ") == 4


class TestUnsignedAndOffline:
    def test_unsigned_needs_the_flag_and_is_reported(
        self, nginx_mirror: Callable[..., NginxServer], tmp_path: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(SPACK_V3_UNSIGNED)
        store = tmp_path / "s"
        assert fetch(server.url, store, "--quiet") == 4
        assert "not signed" in capsys.readouterr().err
        assert fetch(server.url, store, "--allow-unsigned", "--quiet") == 0
        out = capsys.readouterr().out
        assert "NOT signature-checked" in out
        assert "4 build(s) were not signature-checked" in out
        assert fetch(server.url, store, "--allow-unsigned", "--json", "--quiet") == 0
        data = json.loads(capsys.readouterr().out)
        assert len(data["not_signature_checked"]) == 4

    def test_offline_names_the_missing_builds(self, tmp_path: Path, capsys: Capture) -> None:
        assert fetch(str(SPACK_V3_SIGNED), tmp_path / "s", "--offline") == 5
        err = capsys.readouterr().err
        assert "offline: 4 build(s) missing" in err
        assert SELECTED in err

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ([], "no source given"),
            (["--mirror", str(SPACK_V3_SIGNED), "--jobs", "0"], "--jobs"),
        ],
    )
    def test_usage_errors(
        self, tmp_path: Path, capsys: Capture, args: list[str], message: str
    ) -> None:
        code = main(["fetch", "demo-tool", *HOST, "--store", str(tmp_path / "s"), *args])
        assert code == 2
        assert message in capsys.readouterr().err


class TestPages:
    def test_page_stacks_map_to_mirrors_under_the_base(
        self, fault_server: Callable[..., FaultServer], tmp_path: Path, capsys: Capture
    ) -> None:
        base = fault_server(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
        code = main(
            [
                "fetch",
                "py-pyproject-hooks",
                "--metadata",
                str(SEED_PAGE),
                "--mirror-base",
                base.url + "/develop",
                "--platform",
                "linux",
                "--os",
                "ubuntu24.04",
                "--target",
                "x86_64_v4",
                "--store",
                str(tmp_path / "s"),
                "--quiet",
            ]
        )
        # every candidate's own binary is missing from every stack: rejected on closure, exit 3
        assert code == 3
        err = capsys.readouterr().err
        assert "rejected by closure" in err
        assert "not found on any mirror" in err
        paths = {r.path for r in base.requests()}
        manifest = "/v3/manifests/spec/py-pyproject-hooks/"
        assert any(p.startswith("/develop" + manifest) for p in paths)  # root stack
        assert any(p.startswith("/develop/ml-linux-x86_64-cpu" + manifest) for p in paths)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestReporters:
    @pytest.mark.parametrize(
        ("stream", "json_output", "quiet", "kind"),
        [
            (_Terminal, False, False, TtyReporter),
            (io.StringIO, False, False, LogReporter),
            (_Terminal, True, False, JsonLinesReporter),
            (_Terminal, False, True, Reporter),
        ],
    )
    def test_choice(
        self, stream: type[io.StringIO], json_output: bool, quiet: bool, kind: type[Reporter]
    ) -> None:
        chosen = make_reporter(json_output=json_output, quiet=quiet, stream=stream())
        assert type(chosen) is kind

    def _drive(self, reporter: Reporter) -> None:
        reporter.starting(2, 3 << 20)
        reporter.download_started("zlib@1.3/abcdefg tarball", 2 << 20)
        reporter.download_progress("zlib@1.3/abcdefg tarball", 1 << 20, 2 << 20)
        reporter.download_progress("zlib@1.3/abcdefg tarball", 2 << 20, 2 << 20)
        reporter.download_finished("zlib@1.3/abcdefg tarball", False)
        reporter.download_finished("zlib@1.3/abcdefg spec", True)
        reporter.warning("mirror x is slow")
        reporter.finished({"builds": 1, "downloaded_bytes": 2 << 20})

    def test_terminal_shows_rate_and_eta(self) -> None:
        out = _Terminal()
        self._drive(TtyReporter(out, interval=0.0, level=1, width=lambda: 100))
        text = out.getvalue()
        assert "\r\x1b[2K" in text
        assert "ETA" in text
        assert "fetching [0/2] 1.0 MiB/3.0 MiB" in text
        assert "downloaded  zlib@1.3/abcdefg tarball (2.0 MiB" in text
        assert "present     zlib@1.3/abcdefg spec" in text
        assert "warning: mirror x is slow" in text

    def test_json_lines(self) -> None:
        out = io.StringIO()
        self._drive(JsonLinesReporter(out, interval=0.0))
        events = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [e["event"] for e in events] == [
            "starting",
            "download_started",
            "download_progress",
            "download_progress",
            "download_finished",
            "download_finished",
            "warning",
            "finished",
        ]
        assert events[3]["done"] == events[3]["total"] == 2 << 20
        assert events[-1]["downloaded_bytes"] == 2 << 20

    @pytest.mark.parametrize(
        ("count", "text"), [(12, "12 B"), (1536, "1.5 KiB"), (3 << 30, "3.0 GiB")]
    )
    def test_format_bytes(self, count: int, text: str) -> None:
        assert format_bytes(count) == text
