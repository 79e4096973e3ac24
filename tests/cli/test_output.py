"""What a person sees (issue 16, items 1-3, 7, 13): progress that fits an 80-column terminal
and does not scroll, one stream of human output, -q/-v/--debug everywhere, errors a person can
act on, commands that refuse a store that was never created, completion and ``config``.

The terminal tests run the real command under a pseudo-terminal sized with TIOCSWINSZ and feed
every byte it wrote to a small VT100 model (``tests/vtscreen.py``), which counts lines that
would wrap and lines that scroll off the screen.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from cacheclient.errors import StoreError
from cacheclient.mirrors.writer import WrittenMirror
from cacheclient.store import Store
from faultserver import Fault, FaultServer
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED
from reliability import BIG_HOST, write_big_mirror
from servers import refused_url
from vtscreen import Screen

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v2"]
NAMES = ("bigpkg-with-a-long-name-that-does-not-fit-in-eighty-columns-at-all", "other", "third")
COLUMNS, ROWS = 80, 24

Capture = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def big_mirror(tmp_path_factory: pytest.TempPathFactory) -> WrittenMirror:
    root = tmp_path_factory.mktemp("big") / "mirror"
    return write_big_mirror(root, megabytes=2, files=8, names=NAMES)


@pytest.fixture
def slow_server(big_mirror: WrittenMirror) -> Iterator[FaultServer]:
    """Serves the mirror; every blob stops half-way for a while, so the display is redrawn many
    times while bytes are in flight."""
    with FaultServer(big_mirror.root) as server:
        server.inject(Fault(kind="stall", prefix="/blobs/", stall_seconds=1.5))
        yield server


def _pty_run(
    argv: list[str], env: dict[str, str], *, interrupt_after: str = "", stdout_too: bool = False
) -> tuple[int, str, str]:
    """Run ``python -m cacheclient ARGV`` with stderr (and with *stdout_too*, stdout) on an 80x24
    pseudo-terminal; return the exit code, everything written to the terminal, and stdout. With
    *interrupt_after*, send SIGINT once that text has appeared on the terminal."""
    main_fd, child_fd = os.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    shown: list[bytes] = []
    seen = threading.Event()

    def drain() -> None:  # read while the child writes: a full pty would block it
        with contextlib.suppress(OSError):
            while chunk := os.read(main_fd, 65536):
                shown.append(chunk)
                if interrupt_after and interrupt_after.encode() in b"".join(shown):
                    seen.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cacheclient", *argv],
            stdin=child_fd,
            stderr=child_fd,
            stdout=child_fd if stdout_too else subprocess.PIPE,
            env=env,
        )
        if interrupt_after:
            assert seen.wait(60), b"".join(shown)
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        out = out or b""
    finally:
        os.close(child_fd)
        reader.join(timeout=30)
        os.close(main_fd)
    return proc.returncode, b"".join(shown).decode("utf-8", "replace"), out.decode()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    env["TERM"] = "xterm"
    env.update(extra)
    return env


def _fetch_argv(server: FaultServer, store: Path) -> list[str]:
    return ["fetch", *NAMES, "--mirror", server.url, "--store", str(store), "--allow-unsigned",
            *BIG_HOST, "-j", "4"]  # fmt: skip


class TestProgressOnATerminal:
    def test_fits_80_columns_and_never_scrolls(
        self, slow_server: FaultServer, tmp_path: Path
    ) -> None:
        code, text, out = _pty_run(_fetch_argv(slow_server, tmp_path / "s"), _env())
        assert code == 0, text
        screen = Screen(columns=COLUMNS, rows=ROWS)
        screen.feed(text)
        assert screen.unknown == []
        assert screen.wrapped == 0, "a line was wider than the terminal"
        assert screen.scrolled == 0
        # Newlines only where the block grows: three downloads and the total line.
        assert screen.newlines <= len(NAMES)
        redraws = text.count("\x1b[2K  other@1.0/")
        assert redraws >= 3, text  # redrawn in place while the bytes were in flight
        assert "fetching [" in text
        assert "…" in text  # the long name is elided, its hash and kind kept
        assert re.search(r"…[a-z-]*@1\.0/[a-z0-9]{7} tarball", text), text
        assert all(line == "" for line in screen.text()), "the display is removed at the end"
        assert out.count("fetched ") == len(NAMES)  # the result, once, on stdout

    def test_results_on_the_same_terminal_are_not_mixed_with_progress(
        self, slow_server: FaultServer, tmp_path: Path
    ) -> None:
        """stdout on the display's terminal: the "reading metadata" line shown while the spec
        blobs stall is removed before the plan is printed."""
        argv = ["install", *NAMES, "--dry-run", "--mirror", slow_server.url, "--store",
                str(tmp_path / "s"), "--root", str(tmp_path / "r"), "--allow-unsigned",
                *BIG_HOST]  # fmt: skip
        code, text, _ = _pty_run(argv, _env(), stdout_too=True)
        assert code == 0, text
        assert "reading indexes and signed metadata" in text  # shown while waiting
        screen = Screen(columns=COLUMNS, rows=ROWS)
        screen.feed(text)
        shown = [line for line in screen.text() if line]
        assert shown[0].startswith("dry run: nothing is changed"), shown
        assert shown[-1].startswith("3 build(s) to install"), shown
        assert not any("reading indexes" in line for line in shown)

    @pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
    def test_plain_lines_for_dumb_terminals_and_no_color(
        self, slow_server: FaultServer, tmp_path: Path, env: dict[str, str]
    ) -> None:
        code, text, _ = _pty_run(_fetch_argv(slow_server, tmp_path / "s"), _env(**env))
        assert code == 0, text
        assert "\x1b" not in text
        assert text.count("downloaded  ") == len(NAMES)

    def test_interrupt_message_lands_on_a_clean_line(
        self, slow_server: FaultServer, tmp_path: Path
    ) -> None:
        code, text, _ = _pty_run(
            _fetch_argv(slow_server, tmp_path / "s"), _env(), interrupt_after="fetching ["
        )
        assert code == 130
        screen = Screen(columns=COLUMNS, rows=ROWS)
        screen.feed(text)
        assert [line for line in screen.text() if line] == ["cacheclient: interrupted"]


class TestWaitingForAnotherProcess:
    def test_says_so_and_carries_on(self, big_mirror: WrittenMirror, tmp_path: Path) -> None:
        store_dir = tmp_path / "s"
        (build,) = [b for b in big_mirror.builds.values() if b.record.name == "other"]
        argv = [sys.executable, "-m", "cacheclient", "fetch", "other", "--mirror", big_mirror.url,
                "--store", str(store_dir), "--allow-unsigned", *BIG_HOST]  # fmt: skip
        store = Store(store_dir)
        store.ensure()
        with store.download_lock(build.tarball.checksum):  # "another process" holds it
            proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stderr is not None
            first = proc.stderr.readline()  # blocks until the child says why it waits
        out, err = proc.communicate(timeout=120)
        assert first == "waiting for another process downloading other@1.0/" + (
            f"{build.record.short_hash} tarball\n"
        )
        assert proc.returncode == 0, err
        assert "fetched  other@1.0" in out


@pytest.fixture
def trusted_store(tmp_path: Path, capsys: Capture) -> Path:
    store = tmp_path / "store"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    capsys.readouterr()
    return store


def _install(store: Path, root: Path, *extra: str) -> int:
    return main(["install", "demo-tool@1.0.0", "--mirror", str(SPACK_V3_SIGNED), *HOST,
                 "--store", str(store), "--root", str(root), *extra])  # fmt: skip


class TestOneStream:
    def test_each_build_reported_once(
        self, trusted_store: Path, tmp_path: Path, capsys: Capture
    ) -> None:
        assert _install(trusted_store, tmp_path / "r") == 0
        out, err = capsys.readouterr()
        assert out.count("\ninstalled ") + out.startswith("installed ") == 4
        assert "installed" not in err
        assert "done " not in err
        assert "=" not in err  # no key=value debug lines
        assert err.count("downloaded  ") == 4  # not a terminal: one plain line per download

    def test_quiet_and_verbose_after_the_command(
        self, trusted_store: Path, tmp_path: Path, capsys: Capture
    ) -> None:
        assert _install(trusted_store, tmp_path / "r", "-q") == 0
        out, err = capsys.readouterr()
        assert err == ""
        assert "4 build(s) installed" in out
        assert _install(trusted_store, tmp_path / "r2", "-v") == 0
        err = capsys.readouterr().err
        assert "present     demo-tool@1.0.0" in err  # -v: blobs already in the store
        assert "installing  demo-tool@1.0.0" in err

    @pytest.mark.parametrize(
        "argv",
        [
            ["verify", "--store", "{missing}", "--debug"],
            ["--debug", "verify", "--store", "{missing}"],
            ["gc", "--max-size", "1G", "--store", "{missing}", "--debug"],
        ],
    )
    def test_debug_before_or_after_the_command(self, tmp_path: Path, argv: list[str]) -> None:
        argv = [a.replace("{missing}", str(tmp_path / "nope")) for a in argv]
        with pytest.raises(StoreError):
            main(argv)

    @pytest.mark.parametrize("command", ["host", "inspect", "resolve", "verify", "keys list"])
    def test_every_command_takes_q_and_v(self, command: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "cacheclient", *command.split(), "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        for flag in ("-q, --quiet", "-v, --verbose", "--debug"):
            assert flag in proc.stdout


class TestActionableErrors:
    def test_connection_refused_once_with_retries_under_v(
        self, tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CACHECLIENT_RETRIES", "3")
        url = refused_url()
        args = ["fetch", "demo-tool", "--mirror", url, *HOST, "--store", str(tmp_path / "s")]
        assert main(args) == 5
        err = capsys.readouterr().err
        host = url.split("://", 1)[1]
        pattern = (
            rf"cacheclient: error: cannot connect to {host}: connection refused "
            r"\(3 attempts in \d+ s\)"
        )
        assert re.fullmatch(pattern + "\n", err), err  # one line, nothing else
        assert main([*args, "-v"]) == 5
        err = capsys.readouterr().err
        assert err.count("retrying in") == 2
        assert err.count(f"cannot connect to {host}") == 3  # two retries, one error

    def test_a_fresh_process_imports_logging_to_log_and_routes_it_the_same(
        self, tmp_path: Path
    ) -> None:
        """The CLI does not import ``logging`` itself (events.when_logging): the retries of
        ``-v`` and a warning still come out through the renderer, as in-process above."""
        probe = (
            "import sys\n"
            "from cacheclient.cli.main import main\n"
            "loaded = 'logging' in sys.modules\n"
            "print(loaded, main(sys.argv[1:]))\n"
        )
        store = str(tmp_path / "s")

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "CACHECLIENT_RETRIES": "3"}
            cmd = [sys.executable, "-c", probe, *args]
            return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)

        url = refused_url()
        host = url.split("://", 1)[1]
        proc = run("fetch", "demo-tool", "--mirror", url, *HOST, "--store", store, "-v")
        assert proc.stdout.splitlines()[-1] == "False 5"
        retries, error = proc.stderr.splitlines()[:2], proc.stderr.splitlines()[2:]
        for line in retries:  # INFO: no prefix
            assert re.fullmatch(rf"cannot connect to {host}: .*; retrying in .*", line), line
        assert len(error) == 1
        assert error[0].startswith(f"cacheclient: error: cannot connect to {host}")
        proc = run("resolve", "demo-tool@9", "demo-zlib@9", "--mirror", str(SPACK_V3_SIGNED),
                   *HOST, "--store", store)  # fmt: skip
        assert proc.stdout.splitlines()[-1] == "False 3"
        warnings = [x for x in proc.stderr.splitlines() if x.startswith("cacheclient: warning: ")]
        assert len(warnings) == 1
        assert "demo-zlib" in warnings[0]

    def test_unknown_hash_prefix_lists_the_builds(
        self, trusted_store: Path, capsys: Capture
    ) -> None:
        args = ["resolve", "demo-tool/zzzzzzz", "--mirror", str(SPACK_V3_SIGNED), *HOST]
        assert main([*args, "--store", str(trusted_store)]) == 3
        err = capsys.readouterr().err
        assert "no build of demo-tool has hash prefix zzzzzzz (builds: " in err
        assert "k6pbkms (1.0.0, x86_64_v2)" in err
        assert "did you mean" not in err

    def test_untrusted_key_prints_the_next_commands(self, tmp_path: Path, capsys: Capture) -> None:
        store = tmp_path / "s"
        assert _install(store, tmp_path / "r") == 4
        lines = capsys.readouterr().err.splitlines()
        assert lines[-3:] == [
            "  To trust that key, check its fingerprint with its owner, then run:",
            f"    cacheclient keys fetch {SPACK_V3_SIGNED} --store {store}",
            f"    cacheclient keys trust 789B96D6B931B1D5 --store {store}",
        ]
        assert sum("error:" in line for line in lines) == 1
        # once the key was fetched, the hint names its full fingerprint
        assert main(["keys", "fetch", str(SPACK_V3_SIGNED), "--store", str(store)]) == 0
        capsys.readouterr()
        assert _install(store, tmp_path / "r") == 4
        fpr = "DB2679D9E5CB03ADB239ACC6789B96D6B931B1D5"
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"    cacheclient keys trust {fpr} --store {store}"
        )


class TestMissingStore:
    @pytest.mark.parametrize(
        "argv", [["verify"], ["gc", "--max-size", "1G"], ["keys", "list"], ["verify", "--json"]]
    )
    def test_is_an_error(self, tmp_path: Path, capsys: Capture, argv: list[str]) -> None:
        assert main([*argv, "--store", str(tmp_path / "never-restored")]) == 8
        out, err = capsys.readouterr()
        assert "never-restored does not exist" in err
        assert not (tmp_path / "never-restored").exists()  # not created either
        if "--json" in argv:
            assert json.loads(out)["error"]["exit_code"] == 8

    def test_an_empty_directory_is_not_a_store(self, tmp_path: Path, capsys: Capture) -> None:
        (tmp_path / "empty").mkdir()
        assert main(["verify", "--store", str(tmp_path / "empty")]) == 8
        assert "is not a cacheclient store" in capsys.readouterr().err


class TestCompletion:
    def test_bash(self, tmp_path: Path, capsys: Capture) -> None:
        assert main(["completion", "bash"]) == 0
        script = tmp_path / "c.bash"
        script.write_text(capsys.readouterr().out)
        probe = (
            f"source {script}; COMP_WORDS=(cacheclient ins); COMP_CWORD=1; _shtab_cacheclient; "
            'echo "${COMPREPLY[@]}"; COMP_WORDS=(cacheclient install --ro); COMP_CWORD=2; '
            '_shtab_cacheclient; echo "${COMPREPLY[@]}"'
        )
        proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
        assert proc.stdout.split("\n")[:2] == ["inspect install", "--root"]

    def test_fish(self, tmp_path: Path, capsys: Capture) -> None:
        assert shutil.which("fish"), "fish is needed (apt-get install fish)"
        assert main(["completion", "fish"]) == 0
        script = tmp_path / "c.fish"
        script.write_text(capsys.readouterr().out)

        def complete(line: str) -> list[str]:
            proc = subprocess.run(
                ["fish", "--no-config", "-c", f"source {script}; complete -C {line!r}"],
                capture_output=True,
                text=True,
                check=True,
            )
            return [row.split("\t")[0] for row in proc.stdout.splitlines()]

        assert complete("cacheclient ins") == ["inspect", "install"]
        assert "--root" in complete("cacheclient install --r")
        assert complete("cacheclient completion ") == ["bash", "fish", "zsh"]
        assert "list" in complete("cacheclient keys ")

    def test_zsh_registers_the_completion(self, capsys: Capture) -> None:
        assert shutil.which("zsh"), "zsh is needed (apt-get install zsh)"
        assert main(["completion", "zsh"]) == 0
        script = capsys.readouterr().out
        probe = (
            'autoload -U compinit; compinit -u; eval "$SCRIPT"; print -r -- $_comps[cacheclient]'
        )
        proc = subprocess.run(
            ["zsh", "-f", "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "SCRIPT": script},
        )
        assert proc.stdout.strip() == "_shtab_cacheclient"


class TestConfig:
    def test_each_setting_names_its_source(
        self, tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = tmp_path / "config.yaml"
        config.write_text("jobs: 3\nmirrors: [https://example.invalid/m]\n")
        monkeypatch.setenv("CACHECLIENT_CONFIG", str(config))
        monkeypatch.setenv("CACHECLIENT_STORE", str(tmp_path / "env-store"))
        assert main(["config", "--mirror-base", "https://base.invalid", "--json"]) == 0
        settings = {s["key"]: s for s in json.loads(capsys.readouterr().out)["settings"]}
        assert settings["config"]["source"] == "env CACHECLIENT_CONFIG"
        assert settings["jobs"] == {
            "key": "jobs",
            "value": 3,
            "source": f"config {config}",
            "env": "CACHECLIENT_JOBS",
        }
        assert settings["mirrors"]["value"] == ["https://example.invalid/m"]
        assert settings["store"]["source"] == "env CACHECLIENT_STORE"
        assert settings["mirror_base"]["source"] == "--mirror-base"
        assert settings["retries"]["source"] == "default"
        assert settings["target"]["source"] == "probed"
        assert main(["config", "--target", "x86_64_v3"]) == 0
        text = capsys.readouterr().out
        assert re.search(r"^target +x86_64_v3 +\(--target\)$", text, re.MULTILINE), text
        assert re.search(r"^jobs +3 +\(config .*config\.yaml\)$", text, re.MULTILINE), text

    def test_every_key_and_variable_is_documented(self) -> None:
        from cacheclient.settings import effective_settings

        repo = Path(__file__).resolve().parents[2]
        docs = "".join(
            path.read_text(encoding="utf-8")
            for path in (repo / "README.md", repo / "docs-draft" / "cliout.md")
            if path.is_file()
        )
        for setting in effective_settings():
            assert f"`{setting.key}`" in docs, setting.key
            if setting.env:
                assert f"`{setting.env}`" in docs, setting.env


def test_a_stalled_download_shows_no_rate() -> None:
    """The rate is over the last seconds: a transfer that stopped does not claim MiB/s."""
    from cacheclient.cli import render

    rate = render._Rate()
    rate.add(100.0, 0)
    rate.add(101.0, 4 << 20)
    assert rate.per_second(101.0) == 4 << 20
    for t in (103.0, 105.0, 107.0):
        rate.add(t, 4 << 20)
    assert rate.per_second(110.0) < 1 << 20


def test_a_short_terminal_keeps_the_total_line() -> None:
    """A 4-row terminal shows at most 3 lines: the downloads that fit, then the total."""
    from cacheclient.cli.render import TtyReporter

    main_fd, child_fd = os.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 4, 60, 0, 0))
    try:
        with os.fdopen(os.dup(child_fd), "w", encoding="ascii") as stream:
            reporter = TtyReporter(stream, interval=0.0)
            reporter.starting(5, 5 << 20)
            for i in range(5):
                reporter.download_started(f"pkg{i}@1.0/abcdefg tarball", 1 << 20)
            lines = reporter.lines()
            assert len(lines) == 3
            assert lines[-1].startswith("fetching [0/5]")
            reporter.download_started("naïve-ünïcode-name-that-is-far-too-long-for-60-cols", 1)
            reporter.close()
        text = os.read(main_fd, 65536).decode("ascii")  # ASCII stream: nothing unencodable
    finally:
        os.close(child_fd)
        os.close(main_fd)
    screen = Screen(columns=60, rows=4)
    screen.feed(text)
    assert screen.wrapped == 0
    assert screen.scrolled == 0


class TestHostileNames:
    """Fields of untrusted metadata reach stdout shown, never run by the terminal."""

    @staticmethod
    def _mirror(folder: Path) -> Path:
        # A v2 index whose dependency is named with a terminal escape (clear screen, red).
        evil = "\x1b[2J\x1b[31mdep"
        installs = {}
        for name, dag_hash, deps in (("tool", "a" * 32, [(evil, "b" * 32)]), (evil, "b" * 32, [])):
            node = {
                "name": name,
                "version": "1",
                "hash": dag_hash,
                "arch": {"platform": "linux", "platform_os": "debian12", "target": "x86_64"},
                "dependencies": [
                    {"name": n, "hash": h, "parameters": {"deptypes": ["link"], "virtuals": []}}
                    for n, h in deps
                ],
            }
            installs[dag_hash] = {"spec": node, "in_buildcache": True}
        (folder / "build_cache").mkdir(parents=True)
        doc = {"database": {"version": "8", "installs": installs}}
        (folder / "build_cache/index.json").write_text(json.dumps(doc))
        return folder

    def test_a_name_with_a_terminal_escape_is_shown_not_run(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        mirror = self._mirror(tmp_path / "m")
        host = ["--platform", "linux", "--os", "debian12", "--target", "x86_64"]
        args = ["resolve", "tool", "--mirror", str(mirror), *host, "--store", str(tmp_path / "s")]
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out
        assert "needs \\x1b[2J\\x1b[31mdep@1 /bbbbbbb (x86_64)\n" in out
        assert len(out.splitlines()) == 3  # host, the selection, its one dependency
        assert main([*args, "--json"]) == 0  # JSON escapes it itself: unchanged
        doc = json.loads(capsys.readouterr().out)
        assert doc["requests"][0]["closure"][0]["name"] == "\x1b[2J\x1b[31mdep"
