"""Debian's ``docker-registry`` (the CNCF distribution registry) on 127.0.0.1, for tests.

:class:`RegistryServer` writes a configuration (filesystem storage in a directory the test owns,
optional read-only mode, htpasswd Basic auth, token auth, TLS), starts ``docker-registry serve``
on a free port, and parses its access log, so tests can count requests.
:class:`TokenServer` is a small token service issuing JWTs (RS256, with the certificate in
``x5c``) that the registry verifies against the certificate its ``auth.token`` names.
:func:`make_certificate` makes a self-signed certificate (for TLS or token signing).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from nginxserver import free_port
from paths import FIXTURES

__all__ = [
    "REGISTRY",
    "SPACK_OCI",
    "AccessLine",
    "CutProxy",
    "MakeRegistry",
    "RegistryServer",
    "TokenServer",
    "make_certificate",
    "registry_factory",
    "write_htpasswd",
]

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SPACK_OCI = FIXTURES / "spack-oci"
"""Spack's own OCI build cache: ``registry/`` is a registry's storage (see its README)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessLine:
    method: str
    path: str
    status: int


_ACCESS = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3}) ')


def make_certificate(folder: Path, *, name: str = "cert") -> tuple[Path, Path]:
    """A self-signed RSA certificate for ``IP:127.0.0.1`` and ``DNS:localhost``:
    ``(cert.pem, key.pem)``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file with bcrypt hashes (the only kind docker-registry accepts)."""
    import bcrypt

    lines = [
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"
        for user, password in users.items()
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(kw_only=True)
class _TokenState:
    users: dict[str, str]
    issuer: str
    service: str
    cert_der: bytes
    key_pem: bytes
    anonymous_pull: bool
    lifetime: int
    field_name: str
    requests: list[dict[str, str]] = field(default_factory=list)


class TokenServer:
    """A token service: ``GET /token?service=...&scope=repository:NAME:ACTIONS``.

    Users in *users* (Basic auth) get every action they ask for; anonymous callers get ``pull``
    when *anonymous_pull*, nothing otherwise. The answer is ``{"token": ..., "expires_in": N}``
    (or ``access_token`` with ``field_name="access_token"``). Every request is recorded.
    """

    def __init__(
        self,
        *,
        cert: Path,
        key: Path,
        users: dict[str, str],
        issuer: str = "test-issuer",
        service: str = "test-registry",
        anonymous_pull: bool = False,
        lifetime: int = 300,
        field_name: str = "token",
    ) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert_obj = x509.load_pem_x509_certificate(cert.read_bytes())
        self.state = _TokenState(
            users=users,
            issuer=issuer,
            service=service,
            cert_der=cert_obj.public_bytes(serialization.Encoding.DER),
            key_pem=key.read_bytes(),
            anonymous_pull=anonymous_pull,
            lifetime=lifetime,
            field_name=field_name,
        )
        self.port = free_port()
        state = self.state

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                scopes = urllib.parse.parse_qs(parts.query).get("scope", [])
                user = _basic_user(self.headers.get("Authorization", ""), state.users)
                state.requests.append({"user": user or "", "scope": " ".join(scopes), **query})
                if self.headers.get("Authorization") and user is None:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                access: list[dict[str, Any]] = []
                for scope in scopes:
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    wanted = [a for a in actions.split(",") if a]
                    if user is not None:
                        granted = wanted
                    elif state.anonymous_pull:
                        granted = [a for a in wanted if a == "pull"]
                    else:
                        granted = []
                    access.append({"type": kind, "name": name, "actions": granted})
                token = _jwt(state, user or "", access, query.get("service", ""))
                body = json.dumps({state.field_name: token, "expires_in": state.lifetime}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def requests(self) -> list[dict[str, str]]:
        """Every token request so far: user (empty when anonymous), scope, service."""
        return list(self.state.requests)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _basic_user(header: str, users: dict[str, str]) -> str | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user if users.get(user) == password else None


def _jwt(state: _TokenState, subject: str, access: list[dict[str, Any]], aud: str) -> str:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(state.cert_der).decode()]}
    claims = {
        "iss": state.issuer,
        "sub": subject,
        "aud": aud or state.service,
        "exp": now + state.lifetime,
        "nbf": now - 10,
        "iat": now,
        "jti": os.urandom(8).hex(),
        "access": access,
    }
    signing_input = (
        _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
    )
    key = serialization.load_pem_private_key(state.key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


class RegistryServer:
    """``docker-registry serve`` on a free 127.0.0.1 port, storage in *storage*."""

    def __init__(
        self,
        work: Path,
        storage: Path,
        *,
        readonly: bool = False,
        htpasswd: Path | None = None,
        token: TokenServer | None = None,
        token_cert: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        port: int | None = None,
    ) -> None:
        self.work = work
        self.storage = storage
        self.readonly = readonly
        self.htpasswd = htpasswd
        self.token = token
        self.token_cert = token_cert
        self.tls = tls
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work / "registry.log"
        self._log_offset = 0

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "    readonly:",
            f"      enabled: {'true' if self.readonly else 'false'}",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
        ]
        if self.tls is not None:
            lines += ["  tls:", f"    certificate: {self.tls[0]}", f"    key: {self.tls[1]}"]
        if self.htpasswd is not None:
            lines += ["auth:", "  htpasswd:", "    realm: test", f"    path: {self.htpasswd}"]
        elif self.token is not None:
            assert self.token_cert is not None
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token.realm}",
                f"    service: {self.token.state.service}",
                f"    issuer: {self.token.state.issuer}",
                f"    rootcertbundle: {self.token_cert}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> RegistryServer:
        if not os.access(REGISTRY, os.X_OK):
            raise RuntimeError(
                f"{REGISTRY} is missing: install Debian's docker-registry (.ci/run does)"
            )
        self.work.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.work / "config.yml"
        config.write_text(self._config(), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [REGISTRY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, repository: str = "demo/buildcache") -> str:
        scheme = "oci" if self.tls else "oci+http"
        return f"{scheme}://{self.host}/{repository}"

    def requests(self) -> list[AccessLine]:
        """Access-log lines written since the last :meth:`clear_log`."""
        time.sleep(0.05)  # the registry writes its access log right after the response
        try:
            text = self.log_path.read_bytes()[self._log_offset :].decode("utf-8", "replace")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            match = _ACCESS.search(line)
            if match:
                out.append(
                    AccessLine(
                        method=match.group(1),
                        path=match.group(2),
                        status=int(match.group(3)),
                    )
                )
        return out

    def clear_log(self) -> None:
        try:
            self._log_offset = self.log_path.stat().st_size
        except OSError:
            self._log_offset = 0

    def count(self, fragment: str, *, method: str | None = "GET") -> int:
        return sum(
            1
            for line in self.requests()
            if fragment in line.path and (method is None or line.method == method)
        )


class CutProxy:
    """A forwarding HTTP proxy in front of a registry that can die in the middle of a blob.

    With ``cut_path`` set, the first GET of that path gets its headers (full Content-Length)
    and ``cut_after`` bytes of body, then the proxy stops listening at once: to the client the
    registry went away mid-blob. With ``stop_after_puts``, it stops right after answering that
    many PUTs (a registry lost in the middle of a push). Every request's ``Range`` header is
    recorded in ``ranges``. Start a new proxy on the same ``port`` to bring the "registry" back.
    """

    def __init__(
        self,
        upstream: str,
        *,
        port: int | None = None,
        cut_path: str | None = None,
        cut_after: int = 0,
        stop_after_puts: int | None = None,
        page_size: int | None = None,
    ) -> None:
        import http.client

        self.upstream = upstream
        self.port = port or free_port()
        self.cut_path = cut_path
        self.cut_after = cut_after
        self.stop_after_puts = stop_after_puts
        self.page_size = page_size
        self.puts = 0
        self.ranges: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def _paginate(self) -> bool:
                """Serve ``tags/list`` in pages of ``page_size`` with ``Link`` headers, as
                ghcr.io and other registries do (docker-registry 2.8 does not)."""
                parts = urllib.parse.urlsplit(self.path)
                if proxy.page_size is None or not parts.path.endswith("/tags/list"):
                    return False
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    conn.request("GET", parts.path, headers={"Host": proxy.upstream})
                    response = conn.getresponse()
                    everything = json.loads(response.read())
                finally:
                    conn.close()
                query = dict(urllib.parse.parse_qsl(parts.query))
                tags = sorted(everything.get("tags") or [])
                if "last" in query:
                    tags = [tag for tag in tags if tag > query["last"]]
                size = min(proxy.page_size, int(query.get("n", proxy.page_size)))
                page, rest = tags[:size], tags[size:]
                body = json.dumps({"name": everything.get("name"), "tags": page}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if rest:
                    nxt = urllib.parse.urlencode({"n": size, "last": page[-1]})
                    self.send_header("Link", f'<{parts.path}?{nxt}>; rel="next"')
                self.end_headers()
                self.wfile.write(body)
                return True

            def _forward(self) -> None:
                proxy.ranges.append((self.path, self.headers.get("Range", "")))
                if self.command == "GET" and self._paginate():
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.upstream
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                cut = (
                    proxy.cut_path is not None
                    and self.command == "GET"
                    and self.path == proxy.cut_path
                    and response.status == 200
                )
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if cut:
                    proxy.cut_path = None
                    self.wfile.write(data[: proxy.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    threading.Thread(target=proxy.stop, daemon=True).start()
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)
                if self.command == "PUT":
                    proxy.puts += 1
                    if proxy.stop_after_puts is not None and proxy.puts >= proxy.stop_after_puts:
                        self.close_connection = True
                        threading.Thread(target=proxy.stop, daemon=True).start()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._stopped = False

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()


MakeRegistry = Callable[..., RegistryServer]


@pytest.fixture
def registry_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRegistry]:
    """Factory: ``make(*, spack_cache=False, **options) -> RegistryServer`` (started).

    With *spack_cache*, the registry serves a fresh copy of Spack's OCI fixture cache
    (repository ``demo/buildcache``); otherwise it starts empty. Every registry is stopped at
    teardown. Fails (never skips) when docker-registry is not installed.
    """
    if not os.access(REGISTRY, os.X_OK):
        pytest.fail(
            f"{REGISTRY} is missing: install Debian's docker-registry (.ci/run does)",
            pytrace=False,
        )
    started: list[RegistryServer] = []

    def make(*, spack_cache: bool = False, **options: Any) -> RegistryServer:
        work = tmp_path_factory.mktemp("registry")
        storage = work / "storage"
        if spack_cache:  # writable even when the checkout is not (the registry writes)
            shutil.copytree(SPACK_OCI / "registry", storage, copy_function=shutil.copyfile)
            for path in [storage, *storage.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        server = RegistryServer(work, storage, **options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
