"""The test infrastructure itself: nginx, the fault server and throwaway gpg keys work."""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from gpgtools import GPG, GpgError, GpgKey, gpg_run
from paths import FIXTURES, SEED_PAGE, SPACK_V3_KEY, SPACK_V3_SIGNED
from servers import Fault, FaultServer, NginxServer, refused_url

ServeDir = Callable[..., NginxServer]
MakeFaultServer = Callable[..., FaultServer]
MakeKey = Callable[..., GpgKey]

PAYLOAD = bytes(range(256)) * 64  # 16 KiB, every byte value


def _blob_paths() -> list[Path]:
    return sorted((SPACK_V3_SIGNED / "blobs" / "sha256").glob("*/*"))


def _get(url: str, headers: dict[str, str] | None = None) -> requests.Response:
    with requests.Session() as session:
        return session.get(url, headers=headers or {}, timeout=10)


def _raw(server_url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET over a raw socket: the status and every byte until the server closes."""
    host, port = server_url.removeprefix("http://").split(":")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class TestPaths:
    def test_fixture_folders_are_in_the_repository(self) -> None:
        assert FIXTURES.is_dir()
        assert SPACK_V3_KEY.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        assert SEED_PAGE.read_text().startswith("---\n")
        assert "shared" not in FIXTURES.parts


class TestNginx:
    def test_serves_a_fixture_blob_byte_for_byte(self, nginx_mirror: ServeDir) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        blob = _blob_paths()[0]
        rel = blob.relative_to(SPACK_V3_SIGNED).as_posix()
        resp = _get(f"{server.url}/{rel}")
        assert resp.status_code == 200
        assert resp.content == blob.read_bytes()
        assert hashlib.sha256(resp.content).hexdigest() == blob.name
        assert resp.headers["ETag"]
        assert resp.headers["Accept-Ranges"] == "bytes"

    @pytest.mark.parametrize(
        ("range_header", "start", "stop"),
        [("bytes=0-99", 0, 100), ("bytes=100-", 100, None), ("bytes=-50", -50, None)],
    )
    def test_honours_range(
        self, nginx_mirror: ServeDir, range_header: str, start: int, stop: int | None
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        blob = max(_blob_paths(), key=lambda p: p.stat().st_size)
        data = blob.read_bytes()
        rel = blob.relative_to(SPACK_V3_SIGNED).as_posix()
        resp = _get(f"{server.url}/{rel}", {"Range": range_header})
        assert resp.status_code == 206
        assert resp.content == data[start:stop]
        assert resp.headers["Content-Range"].endswith(f"/{len(data)}")
        (entry,) = server.requests()
        assert (entry.status, entry.range, entry.body_bytes) == (
            206,
            range_header,
            len(data[start:stop]),
        )

    def test_etag_revalidation_and_if_range(self, nginx_mirror: ServeDir) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        url = f"{server.url}/v3/manifests/index/index.manifest.json"
        first = _get(url)
        etag = first.headers["ETag"]
        assert _get(url, {"If-None-Match": etag}).status_code == 304
        stale = _get(url, {"Range": "bytes=0-9", "If-Range": '"0-0"'})
        assert (stale.status_code, stale.content) == (200, first.content)
        fresh = _get(url, {"Range": "bytes=0-9", "If-Range": etag})
        assert (fresh.status_code, fresh.content) == (206, first.content[:10])
        assert [e.if_none_match for e in server.requests()] == ["", etag, "", ""]

    def test_options_turn_etag_and_ranges_off(self, nginx_mirror: ServeDir) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED, etag=False, ranges=False)
        url = f"{server.url}/v3/manifests/index/index.manifest.json"
        resp = _get(url, {"Range": "bytes=0-9"})
        assert resp.status_code == 200
        assert "ETag" not in resp.headers
        assert len(resp.content) > 10

    def test_log_counts_keep_alive_and_read_only(self, nginx_mirror: ServeDir) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        blobs = [p.relative_to(SPACK_V3_SIGNED).as_posix() for p in _blob_paths()[:3]]
        with requests.Session() as session:
            for rel in blobs:
                assert session.get(f"{server.url}/{rel}", timeout=10).status_code == 200
            assert session.get(f"{server.url}/missing", timeout=10).status_code == 404
            assert session.put(f"{server.url}/x", data=b"1", timeout=10).status_code in (403, 405)
        assert server.count() == 3
        assert server.count("/", method=None) == 5
        entries = server.requests()
        assert len({e.connection for e in entries}) == 1  # one reused connection
        assert [e.connection_requests for e in entries][:3] == [1, 2, 3]
        assert all(e.user_agent.startswith("python-requests") for e in entries)
        server.clear_log()
        assert server.requests() == []

    def test_stop_frees_the_port(self, nginx_mirror: ServeDir) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        port = server.port
        server.stop()
        assert not server.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()

    def test_servers_run_side_by_side(self, nginx_mirror: ServeDir, tmp_path: Path) -> None:
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "f").write_bytes(b"first")
        one, two = nginx_mirror(tmp_path / "a"), nginx_mirror(SPACK_V3_SIGNED)
        assert one.port != two.port
        assert _get(f"{one.url}/f").content == b"first"
        assert _get(f"{two.url}/f").status_code == 404


@pytest.fixture
def served(fault_server: MakeFaultServer, tmp_path: Path) -> FaultServer:
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "a").write_bytes(PAYLOAD)
    (tmp_path / "blobs" / "b").write_bytes(b"bbbb")
    (tmp_path / "index.json").write_text('{"ok": true}')
    return fault_server(tmp_path)


class TestFaultServerBasics:
    def test_serves_files_with_etag_and_ranges(self, served: FaultServer) -> None:
        resp = _get(f"{served.url}/blobs/a")
        assert (resp.status_code, resp.content) == (200, PAYLOAD)
        etag = resp.headers["ETag"]
        assert _get(f"{served.url}/blobs/a", {"If-None-Match": etag}).status_code == 304
        part = _get(f"{served.url}/blobs/a", {"Range": "bytes=10-19", "If-Range": etag})
        assert (part.status_code, part.content) == (206, PAYLOAD[10:20])
        assert part.headers["Content-Range"] == f"bytes 10-19/{len(PAYLOAD)}"
        stale = _get(f"{served.url}/blobs/a", {"Range": "bytes=10-19", "If-Range": '"old"'})
        assert (stale.status_code, stale.content) == (200, PAYLOAD)
        suffix = _get(f"{served.url}/blobs/a", {"Range": "bytes=-5"})
        assert suffix.content == PAYLOAD[-5:]
        assert _get(f"{served.url}/blobs/a", {"Range": "bytes=999999-"}).status_code == 416

    def test_ranges_and_etag_can_be_off(
        self, fault_server: MakeFaultServer, tmp_path: Path
    ) -> None:
        (tmp_path / "f").write_bytes(PAYLOAD)
        server = fault_server(tmp_path, ranges=False, etag=False)
        resp = _get(f"{server.url}/f", {"Range": "bytes=0-9"})
        assert (resp.status_code, resp.content) == (200, PAYLOAD)
        assert "ETag" not in resp.headers
        assert "Accept-Ranges" not in resp.headers

    def test_missing_and_escaping_paths_are_404(self, served: FaultServer) -> None:
        assert _get(f"{served.url}/nope").status_code == 404
        assert _raw(served.url, "/../../etc/passwd")[0] == 404
        assert _raw(served.url, "/blobs/%2e%2e/%2e%2e/etc/passwd")[0] == 404

    def test_in_memory_files_and_request_log(self, served: FaultServer) -> None:
        served.put("/v3/x.json", b"{}")
        assert _get(f"{served.url}/v3/x.json").content == b"{}"
        with requests.Session() as session:
            session.head(f"{served.url}/blobs/b", timeout=10)
            session.get(f"{served.url}/blobs/b", headers={"Range": "bytes=1-"}, timeout=10)
        assert served.count() == 1
        assert served.count(method="HEAD") == 1
        assert served.count("/", method=None) == 3
        last = served.requests()[-1]
        assert (last.status, last.range, last.bytes_sent) == (206, "bytes=1-", 3)
        served.clear_log()
        assert served.requests() == []

    def test_stopped_server_refuses(self, served: FaultServer) -> None:
        url = served.url
        served.stop()
        with pytest.raises(requests.ConnectionError):
            _get(f"{url}/blobs/a")
        with pytest.raises(requests.ConnectionError):
            _get(f"{refused_url()}/blobs/a")


class TestFaults:
    def test_reset_mid_body(self, served: FaultServer) -> None:
        served.inject(Fault(kind="reset", path="/blobs/a", after_bytes=1000))
        # Usually the headers arrive first (ChunkedEncodingError while reading the body); on a
        # loaded machine the RST may win, and the client sees a reset before the headers.
        with pytest.raises(
            (requests.exceptions.ChunkedEncodingError, requests.ConnectionError), match="reset"
        ):
            _get(f"{served.url}/blobs/a")
        (record,) = served.requests()
        assert (record.fault, record.bytes_sent) == ("reset", 1000)

    def test_truncated_with_content_length(self, served: FaultServer) -> None:
        served.inject(Fault(kind="truncate", prefix="/blobs/", after_bytes=100))
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        conn.request("GET", "/blobs/a")
        resp = conn.getresponse()
        assert resp.headers["Content-Length"] == str(len(PAYLOAD))
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert info.value.partial == PAYLOAD[:100]
        conn.close()

    def test_truncated_without_content_length(self, served: FaultServer) -> None:
        served.inject(Fault(kind="truncate_no_length", after_bytes=100))
        status, body = _raw(served.url, "/blobs/a")
        assert (status, body) == (200, PAYLOAD[:100])
        resp = _get(f"{served.url}/blobs/a")
        assert "Content-Length" not in resp.headers
        assert resp.content == PAYLOAD[:100]  # looks complete to HTTP: only the size can tell

    def test_body_longer_than_declared(self, served: FaultServer) -> None:
        served.inject(Fault(kind="overlong", path="/blobs/b", extra=b"EXTRA"))
        resp = _get(f"{served.url}/blobs/b")
        assert resp.content == b"bbbbEXTRA"
        assert resp.headers["Content-Length"] == "9"

    def test_stalled_body_times_out_the_reader(self, served: FaultServer) -> None:
        served.inject(Fault(kind="stall", path="/blobs/a", after_bytes=10, stall_seconds=20))
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        conn.request("GET", "/blobs/a")
        resp = conn.getresponse()
        assert resp.read(10) == PAYLOAD[:10]
        assert conn.sock is not None
        conn.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            resp.read(1)
        conn.close()
        served.stop()  # ends the stall at once instead of after 20 s

    def test_stall_then_complete(self, served: FaultServer) -> None:
        served.inject(Fault(kind="stall", path="/blobs/b", after_bytes=2, stall_seconds=0.2))
        assert _get(f"{served.url}/blobs/b").content == b"bbbb"

    @pytest.mark.parametrize("status", [500, 502, 503, 429])
    @pytest.mark.parametrize("retry_after", [None, "0", "Wed, 21 Oct 2015 07:28:00 GMT"])
    def test_status_for_the_first_n_requests(
        self, served: FaultServer, status: int, retry_after: str | None
    ) -> None:
        fault = served.inject(
            Fault(
                kind="status", path="/index.json", status=status, retry_after=retry_after, times=2
            )
        )
        responses = [_get(f"{served.url}/index.json") for _ in range(3)]
        assert [r.status_code for r in responses] == [status, status, 200]
        assert [r.headers.get("Retry-After") for r in responses[:2]] == [retry_after] * 2
        assert responses[2].json() == {"ok": True}
        assert fault.hits == 2
        assert [r.fault for r in served.requests()] == ["status", "status", None]

    def test_not_found_for_the_first_request_only(self, served: FaultServer) -> None:
        served.inject(Fault(kind="not_found", path="/blobs/b", times=1))
        assert [_get(f"{served.url}/blobs/b").status_code for _ in range(2)] == [404, 200]
        assert _get(f"{served.url}/blobs/a").status_code == 200

    def test_redirect_loop(self, served: FaultServer) -> None:
        served.inject(Fault(kind="redirect_loop", path="/index.json"))
        with pytest.raises(requests.TooManyRedirects):
            _get(f"{served.url}/index.json")
        records = served.requests()
        assert len(records) > 10
        assert {r.status for r in records} == {302}

    def test_replaced_bytes_change_the_etag(self, served: FaultServer) -> None:
        honest = _get(f"{served.url}/blobs/b")
        served.inject(Fault(kind="replace", path="/blobs/b", body=b"evil"))
        evil = _get(f"{served.url}/blobs/b")
        assert evil.content == b"evil"
        assert evil.headers["ETag"] != honest.headers["ETag"]

    def test_faults_match_by_path_prefix_or_globally(self, served: FaultServer) -> None:
        served.inject(Fault(kind="status", status=500, path="/blobs/a", times=1))
        served.inject(Fault(kind="status", status=502, prefix="/blobs/", times=1))
        served.inject(Fault(kind="status", status=503, times=1))
        got = [_get(f"{served.url}{p}").status_code for p in ("/blobs/b", "/blobs/a", "/x", "/x")]
        assert got == [502, 500, 503, 404]
        served.clear_faults()
        assert _get(f"{served.url}/blobs/a").status_code == 200


class TestGpgKey:
    def test_clearsign_is_accepted_by_gpg_verify(self, gpg_key: GpgKey, tmp_path: Path) -> None:
        text = json.dumps({"spec": {"name": "demo"}}, indent=2) + "\n-leading dash\n"
        signed = gpg_key.clearsign(text)
        assert signed.startswith("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n")
        assert "\n- -leading dash\n" in signed  # dash-escaped
        home = Path(tempfile.mkdtemp(dir="/tmp"))
        try:
            gpg_run(home, "--import", stdin=gpg_key.public_key())
            ok = subprocess.run(
                [GPG, "--homedir", str(home), "--batch", "--status-fd", "1", "--verify"],
                input=signed.encode(),
                capture_output=True,
                check=False,
            )
            assert ok.returncode == 0
            assert f"VALIDSIG {gpg_key.fingerprint}" in ok.stdout.decode()
            tampered = signed.replace('"demo"', '"evil"')
            bad = subprocess.run(
                [GPG, "--homedir", str(home), "--batch", "--verify"],
                input=tampered.encode(),
                capture_output=True,
                check=False,
            )
            assert bad.returncode != 0
        finally:
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
            shutil.rmtree(home, ignore_errors=True)
        assert len(gpg_key.fingerprint) == 40
        exported = gpg_key.export_public(tmp_path / "k.asc").read_text()
        assert exported.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")

    def test_keys_are_distinct_and_isolated(self, gpg_key_factory: MakeKey) -> None:
        one, two = gpg_key_factory(), gpg_key_factory("other <o@cacheclient.invalid>")
        assert one.fingerprint != two.fingerprint
        assert one.home != two.home
        assert not two.verify(one.clearsign("x\n"))  # two's keyring does not know one's key
        assert one.verify(one.clearsign("x\n"))

    def test_revoked_and_expired_keys(self, gpg_key_factory: MakeKey) -> None:
        revoked = gpg_key_factory()
        signed = revoked.clearsign("payload\n")
        revoked.revoke()
        assert "REVKEYSIG" in _status(revoked, signed)
        expired = gpg_key_factory(expire="1d", faked_system_time="20200101T000000")
        with pytest.raises(GpgError, match="clearsign"):
            expired.clearsign("now\n")
        old = expired.clearsign("then\n", faked_system_time="20200101T010000")
        assert "EXPKEYSIG" in _status(expired, old)


def _status(key: GpgKey, signed: str) -> str:
    proc = subprocess.run(
        [GPG, "--homedir", str(key.home), "--batch", "--status-fd", "1", "--verify"],
        input=signed.encode(),
        capture_output=True,
        check=False,
    )
    return proc.stdout.decode()
