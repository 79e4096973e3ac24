"""The quick GET (standard library only) against nginx on loopback, over HTTP and TLS: it answers
200 or 304 like the full transport, and ``None`` for everything it leaves to the full transport
(making no request at all where requests would behave differently)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from builders import RESOLVE_PROBE
from cacheclient import transport
from cacheclient.mirrors.indexcache import open_mirror
from cacheclient.store import Store
from cacheclient.transport.base import USER_AGENT, Fetched
from cacheclient.transport.http import HttpTransport
from cacheclient.transport.quick import quick_get
from paths import SPACK_V3_SIGNED
from registryserver import make_certificate
from servers import NginxServer, free_port, refused_url

INDEX = "/v3/manifests/index/index.manifest.json"
ServeDir = Callable[..., NginxServer]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No proxy, no .netrc: a home of its own."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), **extra}


def test_a_body_then_304_with_the_same_headers_as_the_transport(
    nginx_mirror: ServeDir, tmp_path: Path
) -> None:
    server = nginx_mirror(SPACK_V3_SIGNED)
    env = clean_env(tmp_path)
    first = quick_get(server.url + INDEX, environ=env)
    assert first is not None
    assert first.status == 200
    assert first.body == (SPACK_V3_SIGNED / INDEX.lstrip("/")).read_bytes()
    assert first.etag
    again = quick_get(server.url + INDEX, etag=first.etag, environ=env)
    assert again is not None
    assert (again.status, again.body, again.etag) == (304, b"", first.etag)
    log = server.requests()
    assert [(e.uri, e.status, bool(e.if_none_match)) for e in log] == [
        (INDEX, 200, False),
        (INDEX, 304, True),
    ]
    assert {e.user_agent for e in log} == {USER_AGENT}


def test_what_it_leaves_to_the_full_transport(nginx_mirror: ServeDir, tmp_path: Path) -> None:
    server = nginx_mirror(SPACK_V3_SIGNED, extra=f"location = /moved {{ return 301 {INDEX}; }}")
    env = clean_env(tmp_path)
    assert quick_get(server.url + "/missing", environ=env) is None  # 404
    assert quick_get(server.url + "/moved", environ=env) is None  # a redirect
    assert quick_get(server.url + INDEX, limit=10, environ=env) is None  # too large
    assert len(server.requests()) == 3
    assert quick_get(refused_url() + INDEX, environ=env) is None


@pytest.mark.parametrize(
    "setting",
    ["https_proxy", "HTTP_PROXY", "all_proxy", "netrc", "home-netrc", "credentials", "scheme"],
)
def test_no_request_where_requests_would_differ(
    nginx_mirror: ServeDir, tmp_path: Path, setting: str
) -> None:
    server = nginx_mirror(SPACK_V3_SIGNED)
    env = clean_env(tmp_path)
    url = server.url + INDEX
    if setting.lower().endswith("_proxy"):
        env[setting] = refused_url()
    elif setting == "netrc":
        (tmp_path / "n").write_text("machine 127.0.0.1 login u password p\n")
        env["NETRC"] = str(tmp_path / "n")
    elif setting == "home-netrc":
        (Path(env["HOME"]) / ".netrc").write_text("machine 127.0.0.1 login u password p\n")
    elif setting == "credentials":
        url = url.replace("http://", "http://user:secret@")
    else:
        url = url.replace("http://", "ftp://")
    assert quick_get(url, environ=env) is None
    assert server.requests() == []


class TestTls:
    @pytest.fixture
    def tls_server(self, nginx_mirror: ServeDir, tmp_path: Path) -> tuple[NginxServer, str, Path]:
        cert, key = make_certificate(tmp_path / "tls")
        port = free_port()
        server = nginx_mirror(
            SPACK_V3_SIGNED,
            extra=(
                f"listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};"
            ),
        )
        return server, f"https://127.0.0.1:{port}", cert

    def test_checked_against_the_bundle_requests_would_use(
        self, tls_server: tuple[NginxServer, str, Path], tmp_path: Path
    ) -> None:
        server, url, cert = tls_server
        trusted = quick_get(url + INDEX, environ=clean_env(tmp_path, REQUESTS_CA_BUNDLE=str(cert)))
        assert trusted is not None
        assert trusted.status == 200
        curl = quick_get(url + INDEX, environ=clean_env(tmp_path, CURL_CA_BUNDLE=str(cert)))
        assert curl is not None
        # certifi's bundle does not hold the test certificate: the full transport must say so
        assert quick_get(url + INDEX, environ=clean_env(tmp_path)) is None
        assert [e.status for e in server.requests()] == [200, 200]


def test_a_warm_resolve_after_the_ttl_asks_once_and_imports_no_http_library(
    nginx_mirror: ServeDir, tmp_path: Path
) -> None:
    """End to end: the TTL has passed, the index is unchanged: one request (304), no
    ``requests`` import; then the index changes and the same command notices it (the manifest
    the quick check brought is used, not asked for again)."""
    mirror = tmp_path / "mirror"
    shutil.copytree(SPACK_V3_SIGNED, mirror)
    server = nginx_mirror(mirror)
    env = clean_env(tmp_path, PATH="/usr/bin:/bin")

    def run() -> str:
        expire()
        cmd = [sys.executable, "-c", RESOLVE_PROBE, server.url, str(tmp_path / "s")]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        return done.stdout.splitlines()[-1]

    def expire() -> None:
        for meta in (tmp_path / "s").rglob("meta.json"):
            state = json.loads(meta.read_text())
            meta.write_text(json.dumps({**state, "checked_at": 0}))

    assert run() == "0 True"  # cold: the full transport downloads the index
    server.clear_log()
    assert run() == "0 False"
    assert [(e.uri, e.status) for e in server.requests()] == [(INDEX, 304)]

    # The same records, written anew: a new checksum
    manifest = json.loads((mirror / INDEX.lstrip("/")).read_text())
    entry = manifest["data"][0]
    old = mirror / "blobs" / "sha256" / entry["checksum"][:2] / entry["checksum"]
    data = json.dumps(json.loads(old.read_bytes()), indent=1).encode()
    digest = hashlib.sha256(data).hexdigest()
    (mirror / "blobs" / "sha256" / digest[:2]).mkdir(exist_ok=True)
    (mirror / "blobs" / "sha256" / digest[:2] / digest).write_bytes(data)
    entry.update(checksum=digest, contentLength=len(data))
    (mirror / INDEX.lstrip("/")).write_text(json.dumps(manifest))
    server.clear_log()
    assert run() == "0 True"
    blob = f"/blobs/sha256/{digest[:2]}/{digest}"
    assert [(e.uri, e.status) for e in server.requests()] == [(INDEX, 200), (blob, 200)]


def test_a_silent_server_is_left_to_the_full_transport(tmp_path: Path) -> None:
    """A server that accepts and never answers: ``None`` once the timeout has passed."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}{INDEX}"
        assert quick_get(url, timeout=0.2, environ=clean_env(tmp_path)) is None


def test_a_transport_registered_for_http_is_asked_instead(
    nginx_mirror: ServeDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin serving ``http`` (auth, a proxy of its own...) is never bypassed."""
    server = nginx_mirror(SPACK_V3_SIGNED)
    monkeypatch.setattr(transport, "_registry", {})
    monkeypatch.setattr(transport, "_instances", {})
    asked: list[str] = []

    class Plugin(HttpTransport):
        def _get_bounded(
            self, url: str, etag: str | None, last_modified: str | None, limit: int
        ) -> Fetched:
            asked.append(url)
            return super()._get_bounded(url, etag, last_modified, limit)

    with Store(tmp_path / "store") as store:
        open_mirror(server.url, store=store)  # cold, built-in transport
        transport.register_transport("http", Plugin)
        server.clear_log()
        open_mirror(server.url, store=store, ttl=0)
    assert asked == [server.url + INDEX]
    assert [(e.uri, e.status) for e in server.requests()] == [(INDEX, 304)]
