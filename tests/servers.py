"""Test servers on 127.0.0.1: Debian's nginx serving a directory, and a fault-injecting HTTP server.

``NginxServer`` is the real thing (Range, ETag, keep-alive, sendfile) with a JSON access log the
tests read back. ``FaultServer`` is a small threaded HTTP/1.1 server whose misbehaviour tests
choose per path or globally (resets, truncation, stalls, 5xx/429, 404, redirect loops, wrong bytes).
Both bind loopback only, start in well under a second and stop cleanly.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, cast
from urllib.parse import unquote, urlsplit

__all__ = [
    "NGINX",
    "AccessEntry",
    "Fault",
    "FaultKind",
    "FaultServer",
    "NginxError",
    "NginxServer",
    "RequestRecord",
    "free_port",
    "refused_url",
]

NGINX = "/usr/sbin/nginx"
_SYNC_PATH = "/__nginx_sync__"
_START_TIMEOUT = 10.0
_MAX_STALL = 30.0


class NginxError(RuntimeError):
    """nginx is missing or would not start; the message says why (and how CI installs it)."""


def free_port() -> int:
    """A loopback port that nothing listened on a moment ago (the caller must cope with races)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting to it is refused."""
    return f"http://127.0.0.1:{free_port()}"


def _wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.02)
    return False


# --------------------------------------------------------------------------------------------
# nginx


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessEntry:
    """One line of the nginx access log."""

    method: str
    uri: str  # decoded path, without the query string
    request_uri: str  # as the client sent it, with the query string
    status: int
    body_bytes: int
    bytes_sent: int
    range: str  # the Range header, "" when absent
    if_range: str
    if_none_match: str
    connection: int  # connection serial number: equal numbers mean a reused (keep-alive) connection
    connection_requests: int
    completed: bool  # False when the client went away before the response was sent
    user_agent: str


_LOG_FORMAT = (
    '{"method":"$request_method","uri":"$uri","request_uri":"$request_uri",'
    '"status":"$status","body_bytes":"$body_bytes_sent","bytes_sent":"$bytes_sent",'
    '"range":"$http_range","if_range":"$http_if_range","if_none_match":"$http_if_none_match",'
    '"connection":"$connection","connection_requests":"$connection_requests",'
    '"completion":"$request_completion","user_agent":"$http_user_agent"}'
)


def _nginx_config(
    *, root: Path, work: Path, port: int, etag: bool, ranges: bool, extra: str
) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f'    {kind}_temp_path "{work / kind}";'
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
daemon off;
master_process on;
pid "{work / "nginx.pid"}";
lock_file "{work / "nginx.lock"}";
error_log "{work / "error.log"}" warn;
events {{ worker_connections 512; }}
http {{
    default_type application/octet-stream;
    types {{ application/json json; text/plain txt asc md; }}
    log_format cacheclient escape=json '{_LOG_FORMAT}';
    access_log "{work / "access.log"}" cacheclient;
    open_log_file_cache off;
{temp}
    sendfile on;
    tcp_nopush on;
    server_tokens off;
    keepalive_timeout 30s;
    keepalive_requests 10000;
    etag {"on" if etag else "off"};
    {"" if ranges else "max_ranges 0;"}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root "{root}";
        autoindex off;
        location = {_SYNC_PATH} {{ return 204; }}
        location / {{
            limit_except GET {{ deny all; }}
            try_files $uri =404;
        }}
{extra}
    }}
}}
"""


class NginxServer:
    """Debian's nginx serving ``root`` read-only on a free 127.0.0.1 port.

    ``etag=False`` turns ETags off; ``ranges=False`` makes nginx ignore Range (``max_ranges 0``);
    ``extra`` is raw configuration inserted into the ``server`` block.
    """

    def __init__(
        self,
        root: Path | str,
        workdir: Path | str | None = None,
        *,
        etag: bool = True,
        ranges: bool = True,
        extra: str = "",
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NginxError(f"nginx: {self.root} is not a directory")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="nginx-")).resolve()
        self.etag = etag
        self.ranges = ranges
        self.extra = extra
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> NginxServer:
        if not os.access(NGINX, os.X_OK):
            raise NginxError(
                f"{NGINX} not found: install Debian's nginx-light "
                "(`apt-get install -y nginx-light`; .ci/run installs it)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _attempt in range(8):  # a free port can be taken between our probe and nginx's bind
            port = free_port()
            conf = self.workdir / "nginx.conf"
            conf.write_text(
                _nginx_config(
                    root=self.root,
                    work=self.workdir,
                    port=port,
                    etag=self.etag,
                    ranges=self.ranges,
                    extra=self.extra,
                )
            )
            (self.workdir / "access.log").write_bytes(b"")
            error_log = self.workdir / "error.log"
            error_log.write_bytes(b"")
            proc = subprocess.Popen(
                [NGINX, "-p", str(self.workdir), "-c", str(conf), "-e", str(error_log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if _wait_for_port(port, proc, _START_TIMEOUT):
                self._proc = proc
                self.port = port
                return self
            _, stderr = _finish(proc)
            last_error = (stderr.decode(errors="replace") + error_log.read_text()).strip()
            if "Address already in use" not in last_error:
                break
        raise NginxError(f"nginx did not start on 127.0.0.1: {last_error or 'no message'}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            _finish(proc)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NginxServer:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:41234``."""
        if not self.port:
            raise NginxError("nginx has not been started")
        return f"http://127.0.0.1:{self.port}"

    # -- the access log ---------------------------------------------------------------------
    def _sync(self) -> None:
        """Make every request answered so far visible in the log.

        One worker handles requests in order and writes each log line when the request ends, so
        once a marker request of ours is in the log, every earlier answered request is too.
        """
        if not self.running:
            return
        marker = uuid.uuid4().hex
        req = urllib.request.Request(f"{self.url}{_SYNC_PATH}?{marker}", method="GET")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
        deadline = time.monotonic() + 10
        log = self.workdir / "access.log"
        while time.monotonic() < deadline:
            if marker in log.read_text(errors="replace"):
                return
            time.sleep(0.01)
        raise NginxError("nginx did not write its access log within 10 s")

    def requests(self) -> list[AccessEntry]:
        """Every request nginx answered, oldest first (our own log-sync requests excluded)."""
        self._sync()
        entries: list[AccessEntry] = []
        text = (self.workdir / "access.log").read_text(errors="replace")
        for line in text.splitlines():
            if not line.strip():
                continue
            raw = json.loads(line)
            if raw["uri"] == _SYNC_PATH:
                continue
            entries.append(
                AccessEntry(
                    method=raw["method"],
                    uri=raw["uri"],
                    request_uri=raw["request_uri"],
                    status=int(raw["status"]),
                    body_bytes=int(raw["body_bytes"] or 0),
                    bytes_sent=int(raw["bytes_sent"] or 0),
                    range=raw["range"],
                    if_range=raw["if_range"],
                    if_none_match=raw["if_none_match"],
                    connection=int(raw["connection"] or 0),
                    connection_requests=int(raw["connection_requests"] or 0),
                    completed=raw["completion"] == "OK",
                    user_agent=raw["user_agent"],
                )
            )
        return entries

    def count(self, prefix: str = "/blobs/", *, method: str | None = "GET") -> int:
        """Requests of ``method`` (None: any) to paths starting with ``prefix``."""
        return sum(
            1
            for e in self.requests()
            if e.uri.startswith(prefix) and (method is None or e.method == method)
        )

    def clear_log(self) -> None:
        """Forget the requests logged so far (e.g. between a warm-up run and the measured one)."""
        self._sync()
        (self.workdir / "access.log").write_bytes(b"")


def _finish(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    return out or b"", err or b""


# --------------------------------------------------------------------------------------------
# the fault-injecting server

FaultKind = Literal[
    "reset",  # send headers (full Content-Length) and part of the body, then a TCP RST
    "truncate",  # full Content-Length, part of the body, then a clean close
    "truncate_no_length",  # no Content-Length, part of the body, then a clean close
    "overlong",  # the body plus `extra` bytes, with a Content-Length that matches what is sent
    "stall",  # part of the body, then sleep `stall_seconds` (bounded), then the rest
    "status",  # answer `status` (500/502/503/429...) with an optional Retry-After
    "not_found",  # answer 404
    "redirect_loop",  # 302 to the same URL, forever
    "replace",  # serve `body` instead of the file's bytes (a mirror serving the wrong blob)
]


@dataclass(kw_only=True)
class Fault:
    """A fault rule. ``path`` matches exactly, ``prefix`` by prefix, neither means every path.

    ``times`` limits it to the first N matching requests (None: every one); ``hits`` counts how
    often it fired. ``after_bytes`` is how much of the body goes out before a reset, truncation
    or stall (None: half of it).
    """

    kind: FaultKind
    path: str | None = None
    prefix: str | None = None
    times: int | None = None
    status: int = 503
    retry_after: str | None = None
    after_bytes: int | None = None
    stall_seconds: float = 3.0
    extra: bytes = b"\0" * 64
    body: bytes = b""
    hits: int = 0

    def matches(self, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.path is not None:
            return path == self.path
        if self.prefix is not None:
            return path.startswith(self.prefix)
        return True


@dataclass(kw_only=True)
class RequestRecord:
    """One request the fault server received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int = 0
    fault: FaultKind | None = None
    bytes_sent: int = 0  # body bytes handed to the socket (the last write may have failed)

    @property
    def range(self) -> str:
        return self.headers.get("range", "")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FaultServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up on a fault is the point; keep stderr quiet."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultserver"
    sys_version = ""
    timeout = 10  # idle keep-alive connections end on their own

    @property
    def owner(self) -> FaultServer:
        return cast(_Server, self.server).owner

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.owner._track(self.connection, add=True)

    def finish(self) -> None:
        self.owner._track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default stderr log; the owner keeps a structured one."""

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    # -- helpers ----------------------------------------------------------------------------
    def _write(self, record: RequestRecord, data: bytes) -> None:
        # Counted before the write: a client may read the log as soon as the bytes arrive.
        record.bytes_sent += len(data)
        self.wfile.write(data)

    def _simple(self, record: RequestRecord, status: int, headers: dict[str, str]) -> None:
        body = f"{status} {http.HTTPStatus(status).phrase}\n".encode()
        record.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self._write(record, body)

    def _serve(self, *, head: bool) -> None:
        owner = self.owner
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        fault = owner._take_fault(path)
        record = owner._log(
            RequestRecord(
                method=self.command,
                path=path,
                query=parts.query,
                headers={k.lower(): v for k, v in self.headers.items()},
                fault=fault.kind if fault else None,
            )
        )
        kind = fault.kind if fault else None
        if fault is not None and kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._simple(record, fault.status, extra)
            return
        if kind == "not_found":
            self._simple(record, 404, {})
            return
        if kind == "redirect_loop":
            self._simple(record, 302, {"Location": f"{owner.url}{self.path}"})
            return
        content = fault.body if fault is not None and kind == "replace" else owner._content(path)
        if content is None:
            self._simple(record, 404, {})
            return
        self._send_content(record, content, fault, head=head)

    def _send_content(
        self, record: RequestRecord, content: bytes, fault: Fault | None, *, head: bool
    ) -> None:
        owner = self.owner
        headers: dict[str, str] = {"Content-Type": "application/octet-stream"}
        etag = f'"{hashlib.sha256(content).hexdigest()[:32]}"' if owner.etag else None
        if etag is not None:
            headers["ETag"] = etag
            if self.headers.get("If-None-Match", "") == etag:
                record.status = 304
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
        status, payload = 200, content
        if owner.ranges:
            headers["Accept-Ranges"] = "bytes"
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if wanted is not None and (if_range is None or if_range == etag):
                span = _parse_range(wanted, len(content))
                if span == "unsatisfiable":
                    self._simple(record, 416, {"Content-Range": f"bytes */{len(content)}"})
                    return
                if span is not None:
                    start, end = span
                    status, payload = 206, content[start : end + 1]
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        kind = fault.kind if fault is not None else None
        if kind == "overlong" and fault is not None:
            payload += fault.extra
        cut = len(payload) // 2
        if fault is not None and fault.after_bytes is not None:
            cut = min(fault.after_bytes, len(payload))
        record.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if kind == "truncate_no_length":
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if head:
            return
        if kind in ("reset", "truncate", "truncate_no_length"):
            self._write(record, payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            if kind == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
            else:
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_WR)
            return
        if kind == "stall" and fault is not None:
            self._write(record, payload[:cut])
            self.wfile.flush()
            if owner._stopping.wait(min(fault.stall_seconds, _MAX_STALL)):
                self.close_connection = True
                return
            self._write(record, payload[cut:])
            return
        self._write(record, payload)


def _parse_range(value: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """A single ``bytes=`` range as (first, last); None when it is not one we honour."""
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                return "unsatisfiable"
            return max(size - length, 0), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


class FaultServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 serving ``root`` (and in-memory files), with faults.

    >>> srv = FaultServer(tmp_path).start()
    >>> srv.inject(Fault(kind="status", status=503, retry_after="1", times=2))
    >>> ...; srv.count("/blobs/"); srv.stop()

    After ``stop()`` the port refuses connections. Stalls end early when the server stops.
    """

    def __init__(
        self, root: Path | str | None = None, *, ranges: bool = True, etag: bool = True
    ) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self.ranges = ranges
        self.etag = etag
        self._faults: list[Fault] = []
        self._files: dict[str, bytes] = {}
        self._log_entries: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> FaultServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self.port = int(server.server_address[1])
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (new connections are refused) and cut every open connection."""
        server, self._server = self._server, None
        self._stopping.set()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start() if self._server is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL without a trailing slash. Still valid (and refused) after ``stop()``."""
        if not self.port:
            raise RuntimeError("fault server has not been started")
        return f"http://127.0.0.1:{self.port}"

    # -- configuration ----------------------------------------------------------------------
    def inject(self, fault: Fault) -> Fault:
        """Add a fault rule (rules are tried in the order they were added); returns it."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def put(self, path: str, data: bytes) -> None:
        """Serve ``data`` at URL path ``path`` (takes precedence over the directory)."""
        with self._lock:
            self._files[path] = data

    # -- the request log --------------------------------------------------------------------
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log_entries)

    def count(self, prefix: str = "/blobs/", *, method: str | None = "GET") -> int:
        """Requests of ``method`` (None: any) to paths starting with ``prefix``."""
        return sum(
            1
            for r in self.requests()
            if r.path.startswith(prefix) and (method is None or r.method == method)
        )

    def clear_log(self) -> None:
        with self._lock:
            self._log_entries.clear()

    # -- used by the handler ----------------------------------------------------------------
    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path):
                    fault.hits += 1
                    return fault
        return None

    def _log(self, record: RequestRecord) -> RequestRecord:
        with self._lock:
            self._log_entries.append(record)
        return record

    def _content(self, path: str) -> bytes | None:
        with self._lock:
            if path in self._files:
                return self._files[path]
        if self.root is None:
            return None
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target.read_bytes()
