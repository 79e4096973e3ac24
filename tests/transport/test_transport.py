"""Transports against real servers: nginx for Range/ETag/keep-alive, the fault server for faults."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

from cacheclient.errors import (
    DownloadError,
    MetadataError,
    StoreError,
    UsageError,
    VerificationError,
)
from cacheclient.transport import (
    CHUNK_SIZE,
    USER_AGENT,
    Fetched,
    FileTransport,
    HttpTransport,
    Transport,
    TransportOptions,
    join_url,
    options_from_env,
    reader_for,
    register_transport,
    transport_for,
)
from paths import SPACK_V3_SIGNED
from servers import Fault, FaultServer, NginxServer, refused_url

INDEX = "v3/manifests/index/index.manifest.json"


def _validator(http: HttpTransport, url: str) -> str | None:
    """The ETag (or Last-Modified) the server gives *url* now."""
    stream = http._open(url, 0, None)
    stream.close()
    validator: str | None = stream.validator
    return validator


def _left_partial(tmp_path: Path, url: str, data: bytes, validator: str | None) -> Path:
    """A ``.partial`` file (and its sidecar) as an interrupted download of *url* leaves it."""
    part = tmp_path / "p"
    part.write_bytes(data)
    (tmp_path / "p.meta").write_text(json.dumps({"url": url, "validator": validator}))
    return part


def _bystanders(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Files named like file descriptors in *folder*, made the working directory: a download
    that mistakes a descriptor for a name would remove one."""
    monkeypatch.chdir(folder)
    paths = [folder / str(fd) for fd in range(3, 64)]
    for path in paths:
        path.write_text("keep")
    return paths


class Sleeps:
    """Records the delays the retry policy asks for instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def http(sleeps: Sleeps) -> Iterator[HttpTransport]:
    transport = HttpTransport(
        TransportOptions(attempts=4, backoff=0.01, backoff_max=5.0, read_timeout=1.0, sleep=sleeps)
    )
    yield transport
    transport.close()


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    """A 3 MiB file of varied bytes under tmp_path/mirror/blobs/big."""
    root = tmp_path / "mirror" / "blobs"
    root.mkdir(parents=True)
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(3 * 32768))
    target = root / "big"
    target.write_bytes(data)
    return target


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestJoinAndRegistry:
    @pytest.mark.parametrize(
        ("base", "rel", "expected"),
        [
            ("https://h/develop", "v3/x", "https://h/develop/v3/x"),
            ("https://h/develop/", "/v3/x", "https://h/develop/v3/x"),
            ("/srv/mirror", "blobs/a", "/srv/mirror/blobs/a"),
            ("file:///srv/m/", "a", "file:///srv/m/a"),
        ],
    )
    def test_join_keeps_path_prefix(self, base: str, rel: str, expected: str) -> None:
        assert join_url(base, rel) == expected

    def test_entry_points_declare_the_builtin_transports(self) -> None:
        eps = {e.name: e.value for e in metadata.entry_points(group="cacheclient.transports")}
        assert eps["file"] == "cacheclient.transport.file:FileTransport"
        assert eps["http"] == eps["https"] == "cacheclient.transport.http:HttpTransport"

    @pytest.mark.parametrize(
        ("url", "kind"),
        [
            ("/some/dir", FileTransport),
            ("relative/dir", FileTransport),
            ("file:///some/dir", FileTransport),
            ("http://127.0.0.1:1/x", HttpTransport),
            ("https://example.invalid/x", HttpTransport),
        ],
    )
    def test_scheme_dispatch(self, url: str, kind: type[Transport]) -> None:
        assert isinstance(transport_for(url), kind)

    def test_http_and_https_share_one_session(self) -> None:
        assert transport_for("http://a.invalid") is transport_for("https://b.invalid")

    def test_timeouts_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CACHECLIENT_CONNECT_TIMEOUT", "2.5")
        monkeypatch.setenv("CACHECLIENT_READ_TIMEOUT", "7")
        monkeypatch.setenv("CACHECLIENT_RETRIES", "2")
        options = options_from_env(pool_size=16)
        assert (options.connect_timeout, options.read_timeout) == (2.5, 7.0)
        assert (options.attempts, options.pool_size) == (2, 16)
        monkeypatch.setenv("CACHECLIENT_READ_TIMEOUT", "soon")
        with pytest.raises(UsageError, match="CACHECLIENT_READ_TIMEOUT"):
            options_from_env()

    def test_unknown_scheme(self) -> None:
        with pytest.raises(DownloadError, match="unsupported URL scheme 'gopher'"):
            transport_for("gopher://x/y")

    def test_registered_scheme(self, tmp_path: Path) -> None:
        (tmp_path / "f").write_bytes(b"hello")

        class Mem(FileTransport):
            def _get(self, url: str, etag: str | None, last_modified: str | None) -> Fetched:
                local = str(tmp_path / url.removeprefix("memtest://box/"))
                return super()._get(local, etag, last_modified)

        register_transport("memtest", Mem)
        assert reader_for("memtest://box")("f") == b"hello"
        assert reader_for("memtest://box")("g") is None


class TestReaderFor:
    @pytest.mark.parametrize("form", ["path", "file"])
    def test_local(self, form: str) -> None:
        url = str(SPACK_V3_SIGNED) if form == "path" else SPACK_V3_SIGNED.as_uri()
        read = reader_for(url)
        assert read(INDEX) == (SPACK_V3_SIGNED / INDEX).read_bytes()
        assert read("v3/missing.json") is None
        assert read("no/such/dir/file") is None

    def test_http_with_user_agent(self, nginx_mirror: Callable[..., NginxServer]) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        read = reader_for(server.url + "/")
        assert read(INDEX) == (SPACK_V3_SIGNED / INDEX).read_bytes()
        assert read("v3/missing.json") is None
        agents = {e.user_agent for e in server.requests()}
        assert agents == {USER_AGENT}
        assert USER_AGENT.startswith("cacheclient/")

    def test_other_4xx_is_an_error_without_retry(
        self, fault_server: Callable[..., FaultServer], http: HttpTransport
    ) -> None:
        server = fault_server(SPACK_V3_SIGNED)
        server.inject(Fault(kind="status", status=403, path="/" + INDEX))
        with pytest.raises(DownloadError, match="HTTP 403"):
            http.read(f"{server.url}/{INDEX}")
        assert server.count("/v3/") == 1


class TestRetries:
    @pytest.mark.parametrize("status", [500, 502, 503, 429])
    def test_transient_status_is_retried_honouring_retry_after(
        self,
        fault_server: Callable[..., FaultServer],
        http: HttpTransport,
        sleeps: Sleeps,
        status: int,
    ) -> None:
        server = fault_server(SPACK_V3_SIGNED)
        server.inject(Fault(kind="status", status=status, retry_after="2", times=2))
        assert http.read(f"{server.url}/{INDEX}") == (SPACK_V3_SIGNED / INDEX).read_bytes()
        assert server.count("/v3/") == 3
        assert sleeps.calls == [2.0, 2.0]

    def test_backoff_grows_and_gives_up(
        self, fault_server: Callable[..., FaultServer], http: HttpTransport, sleeps: Sleeps
    ) -> None:
        server = fault_server(SPACK_V3_SIGNED)
        server.inject(Fault(kind="status", status=500))
        with pytest.raises(DownloadError, match="HTTP 500"):
            http.read(f"{server.url}/{INDEX}")
        assert server.count("/v3/") == 4
        assert len(sleeps.calls) == 3
        # exponential with jitter: base 0.01, 0.02, 0.04, each plus up to as much again
        for n, delay in enumerate(sleeps.calls):
            assert 0.01 * 2**n <= delay <= 0.02 * 2**n

    def test_retry_after_is_capped(
        self, fault_server: Callable[..., FaultServer], http: HttpTransport, sleeps: Sleeps
    ) -> None:
        server = fault_server(SPACK_V3_SIGNED)
        server.inject(Fault(kind="status", status=503, retry_after="3600", times=1))
        assert http.read(f"{server.url}/{INDEX}") is not None
        assert sleeps.calls == [5.0]

    def test_404_retried_once_only_when_asked(
        self, fault_server: Callable[..., FaultServer], http: HttpTransport
    ) -> None:
        server = fault_server(SPACK_V3_SIGNED)
        assert http.read(f"{server.url}/v3/nothing") is None
        assert server.count("/v3/nothing") == 1
        assert http.read(f"{server.url}/v3/nothing", retry_not_found=True) is None
        assert server.count("/v3/nothing") == 3

    def test_404_push_race_recovers_on_the_retry(
        self, fault_server: Callable[..., FaultServer], http: HttpTransport
    ) -> None:
        server = fault_server(SPACK_V3_SIGNED)
        server.inject(Fault(kind="not_found", path="/" + INDEX, times=1))
        assert http.read(f"{server.url}/{INDEX}", retry_not_found=True) is not None

    def test_connection_refused(self, http: HttpTransport, sleeps: Sleeps) -> None:
        with pytest.raises(
            DownloadError,
            match=r"cannot connect to 127\.0\.0\.1:\d+: connection refused \(4 attempts in \d+ s\)",
        ):
            http.read(refused_url() + "/x")
        assert len(sleeps.calls) == 3


class TestDownload:
    def test_whole_file_hashed_while_streaming(
        self,
        nginx_mirror: Callable[..., NginxServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
    ) -> None:
        server = nginx_mirror(payload.parent.parent)
        part = tmp_path / "x.partial"
        seen: list[int] = []
        result = http.download(
            f"{server.url}/blobs/big",
            part,
            expected_size=payload.stat().st_size,
            progress=lambda done, total: seen.append(done),
        )
        assert result is not None
        assert result.sha256 == _sha(payload)
        assert result.size == payload.stat().st_size == seen[-1]
        assert part.read_bytes() == payload.read_bytes()
        assert result.resumed_from == 0

    def test_404_returns_none(
        self, nginx_mirror: Callable[..., NginxServer], http: HttpTransport, tmp_path: Path
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        assert http.download(f"{server.url}/blobs/none", tmp_path / "p") is None

    def test_resume_after_kill_9(
        self, fault_server: Callable[..., FaultServer], payload: Path, tmp_path: Path
    ) -> None:
        server = fault_server(payload.parent.parent)
        cut = 2 * CHUNK_SIZE + 1000
        server.inject(
            Fault(kind="stall", path="/blobs/big", after_bytes=cut, stall_seconds=30, times=1)
        )
        part = tmp_path / "big.partial"
        code = (
            "import sys; from pathlib import Path; from cacheclient.transport import "
            "HttpTransport, TransportOptions\n"
            "t = HttpTransport(TransportOptions(read_timeout=60))\n"
            "t.download(sys.argv[1], Path(sys.argv[2]))\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", code, f"{server.url}/blobs/big", str(part)])
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if part.exists() and part.stat().st_size >= cut:
                    break
                time.sleep(0.02)
            assert part.stat().st_size == cut  # every byte received reached the disk
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        meta = json.loads((tmp_path / "big.partial.meta").read_text())
        transport = HttpTransport(TransportOptions(sleep=lambda s: None))
        try:
            result = transport.download(
                f"{server.url}/blobs/big", part, expected_size=payload.stat().st_size
            )
        finally:
            transport.close()
        assert result is not None
        kept = cut
        assert result.resumed_from == kept
        assert result.sha256 == _sha(payload)
        last = server.requests()[-1]
        assert last.range == f"bytes={kept}-"
        assert last.headers["if-range"] == meta["validator"]
        assert last.bytes_sent == payload.stat().st_size - kept

    @pytest.mark.parametrize("kind", ["reset", "truncate"])
    def test_interrupted_body_resumes_with_range(
        self,
        fault_server: Callable[..., FaultServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
        kind: str,
    ) -> None:
        server = fault_server(payload.parent.parent)
        server.inject(Fault(kind=kind, path="/blobs/big", after_bytes=1 << 20, times=1))  # type: ignore[arg-type]
        result = http.download(
            f"{server.url}/blobs/big", tmp_path / "p", expected_size=payload.stat().st_size
        )
        assert result is not None
        assert result.sha256 == _sha(payload)
        ranges = [r.range for r in server.requests()]
        assert ranges[0] == ""
        assert ranges[-1].startswith("bytes=")
        assert ranges[-1] != "bytes=0-"
        assert result.resumed_from > 0

    def test_downloads_that_keep_advancing_get_extra_tries(
        self, fault_server: Callable[..., FaultServer], payload: Path, tmp_path: Path
    ) -> None:
        server = fault_server(payload.parent.parent)
        server.inject(Fault(kind="reset", path="/blobs/big", after_bytes=CHUNK_SIZE + 10))
        transport = HttpTransport(TransportOptions(attempts=2, sleep=lambda s: None))
        try:
            result = transport.download(
                f"{server.url}/blobs/big", tmp_path / "p", expected_size=payload.stat().st_size
            )
        finally:
            transport.close()
        assert result is not None
        assert result.sha256 == _sha(payload)
        assert len(server.requests()) == 3  # more than `attempts`: each try stored > 1 MiB

    def test_a_server_failing_half_way_still_fails(
        self, fault_server: Callable[..., FaultServer], http: HttpTransport, tmp_path: Path
    ) -> None:
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "small").write_bytes(b"x" * 4000)
        server = fault_server(tmp_path / "m")
        server.inject(Fault(kind="reset", path="/small"))
        with pytest.raises(DownloadError, match=r"interrupted|ended after|connection"):
            http.download(f"{server.url}/small", tmp_path / "p", expected_size=4000)
        assert len(server.requests()) <= 4 + 2  # a few halvings earn extra tries, not many

    def test_stalled_body_times_out_and_resumes(
        self,
        fault_server: Callable[..., FaultServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
    ) -> None:
        server = fault_server(payload.parent.parent)
        server.inject(Fault(kind="stall", path="/blobs/big", stall_seconds=10, times=1))
        result = http.download(
            f"{server.url}/blobs/big", tmp_path / "p", expected_size=payload.stat().st_size
        )
        assert result is not None
        assert result.sha256 == _sha(payload)
        assert len(server.requests()) == 2

    def test_server_ignoring_range_restarts_cleanly(
        self,
        nginx_mirror: Callable[..., NginxServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
    ) -> None:
        server = nginx_mirror(payload.parent.parent, ranges=False)
        url = f"{server.url}/blobs/big"
        part = _left_partial(tmp_path, url, payload.read_bytes()[:5000], _validator(http, url))
        result = http.download(url, part, expected_size=payload.stat().st_size)
        assert result is not None
        assert result.resumed_from == 0
        assert result.sha256 == _sha(payload)
        assert server.requests()[-1].status == 200

    def test_changed_validator_restarts(
        self,
        nginx_mirror: Callable[..., NginxServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
    ) -> None:
        server = nginx_mirror(payload.parent.parent)
        url = f"{server.url}/blobs/big"
        # stale bytes from an older version of the file
        part = _left_partial(tmp_path, url, b"\0" * 5000, '"old-etag"')
        result = http.download(url, part, expected_size=payload.stat().st_size)
        assert result is not None
        assert result.sha256 == _sha(payload)
        last = server.requests()[-1]
        assert last.if_range == '"old-etag"'
        assert last.status == 200

    def test_resume_with_nginx_range(
        self,
        nginx_mirror: Callable[..., NginxServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
    ) -> None:
        server = nginx_mirror(payload.parent.parent)
        url = f"{server.url}/blobs/big"
        part = _left_partial(tmp_path, url, payload.read_bytes()[:123457], _validator(http, url))
        result = http.download(url, part, expected_size=payload.stat().st_size)
        assert result is not None
        assert result.resumed_from == 123457
        assert result.sha256 == _sha(payload)
        last = server.requests()[-1]
        assert (last.status, last.range) == (206, "bytes=123457-")

    def test_partial_longer_than_the_file_restarts_after_416(
        self,
        nginx_mirror: Callable[..., NginxServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
    ) -> None:
        server = nginx_mirror(payload.parent.parent)
        url = f"{server.url}/blobs/big"
        data = payload.read_bytes() + b"trailing junk"
        part = _left_partial(tmp_path, url, data, _validator(http, url))
        result = http.download(url, part)  # size unknown, as for v2 tarballs
        assert result is not None
        assert result.sha256 == _sha(payload)
        assert [e.status for e in server.requests()][-2:] == [416, 200]

    @pytest.mark.parametrize(
        ("bound", "fault", "error", "match"),
        [
            # 10 bytes more than the size the caller expects
            (
                "expected_size",
                Fault(kind="overlong", path="/blobs/big", extra=b"x" * 10),
                VerificationError,
                "more than the expected",
            ),
            # 1.5 MiB without a length, against a 1 MiB limit
            (
                "limit",
                Fault(kind="truncate_no_length", path="/blobs/big"),
                MetadataError,
                "more than 1048576 bytes exceeds",
            ),
        ],
    )
    def test_a_body_longer_than_allowed_fails_and_leaves_nothing(  # noqa: PLR0917 - cases
        self,
        fault_server: Callable[..., FaultServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        bound: str,
        fault: Fault,
        error: type[Exception],
        match: str,
    ) -> None:
        bystanders = _bystanders(tmp_path, monkeypatch)
        server = fault_server(payload.parent.parent)
        server.inject(fault)
        part = tmp_path / "p"
        size = payload.stat().st_size if bound == "expected_size" else 1 << 20
        with pytest.raises(error, match=match):
            http.download(f"{server.url}/blobs/big", part, **{bound: size})
        assert not part.exists()
        assert not part.with_name("p.meta").exists()
        assert all(path.read_text() == "keep" for path in bystanders)

    def test_limit_refuses_an_announced_longer_body_and_leaves_nothing(
        self,
        nginx_mirror: Callable[..., NginxServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
    ) -> None:
        server = nginx_mirror(payload.parent.parent)
        part = tmp_path / "p"
        limit = payload.stat().st_size - 1
        with pytest.raises(MetadataError, match="exceeds the"):
            http.download(f"{server.url}/blobs/big", part, limit=limit)
        assert not part.exists()
        assert not part.with_name("p.meta").exists()
        result = http.download(f"{server.url}/blobs/big", part, limit=limit + 1)
        assert result is not None
        assert result.sha256 == _sha(payload)

    def test_download_reports_the_strong_etag(
        self,
        nginx_mirror: Callable[..., NginxServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
    ) -> None:
        server = nginx_mirror(payload.parent.parent)
        url = f"{server.url}/blobs/big"
        result = http.download(url, tmp_path / "p")
        assert result is not None
        assert result.etag is not None
        fetched = http.get(url)
        assert fetched is not None
        assert result.etag == fetched.etag

    def test_short_body_is_a_size_mismatch(
        self,
        nginx_mirror: Callable[..., NginxServer],
        http: HttpTransport,
        payload: Path,
        tmp_path: Path,
    ) -> None:
        server = nginx_mirror(payload.parent.parent)
        part = tmp_path / "p"
        with pytest.raises(VerificationError, match="size mismatch") as info:
            http.download(f"{server.url}/blobs/big", part, expected_size=payload.stat().st_size + 1)
        assert info.value.expected == str(payload.stat().st_size + 1)
        assert not part.exists()

    def test_file_transport_resumes_too(self, payload: Path, tmp_path: Path) -> None:
        transport = FileTransport()
        part = tmp_path / "p"
        first = transport.download(str(payload), part)
        assert first is not None
        part.write_bytes(payload.read_bytes()[:777])
        again = transport.download(str(payload), part, expected_size=payload.stat().st_size)
        assert again is not None
        assert again.resumed_from == 777
        assert again.sha256 == _sha(payload)

    def test_keep_alive_reuses_one_connection(
        self, nginx_mirror: Callable[..., NginxServer], http: HttpTransport
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        for _ in range(5):
            assert http.read(f"{server.url}/{INDEX}") is not None
        assert len({e.connection for e in server.requests()}) == 1


class TestDiskFull:
    def test_enospc_while_streaming_is_a_store_error(
        self, nginx_mirror: Callable[..., NginxServer], payload: Path, tmp_path: Path
    ) -> None:
        mount = tmp_path / "small"
        mount.mkdir()
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]  # CI runs as root or with sudo
        options = "size=1m,mode=1777"
        subprocess.run(
            [*sudo, "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True
        )
        try:
            server = nginx_mirror(payload.parent.parent)
            transport = HttpTransport(TransportOptions(sleep=lambda s: None))
            with pytest.raises(StoreError, match="No space left on device"):
                transport.download(
                    f"{server.url}/blobs/big", mount / "p", expected_size=payload.stat().st_size
                )
            transport.close()
        finally:
            subprocess.run([*sudo, "umount", "-l", str(mount)], check=False)
