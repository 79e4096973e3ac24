"""A small threaded HTTP/1.1 server on 127.0.0.1 whose misbehaviour each test chooses.

Faults per path, prefix or globally, for the first N requests or always: connection reset,
truncated bodies (with and without Content-Length), bodies longer than declared, stalls,
500/502/503/429 with or without Retry-After, 404, redirect loops, wrong bytes; Range and ETag
support can be switched off. Every request is logged. Stalls are bounded and end when it stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, cast
from urllib.parse import unquote, urlsplit

__all__ = ["Fault", "FaultKind", "FaultServer", "RequestRecord"]

_MAX_STALL = 30.0


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
    "trickle",  # the body one byte every `stall_seconds` (until the server stops)
    "bad_range",  # 206 with a Content-Range starting at `after_bytes`, whatever was asked
    "encoded",  # serve `body` with ``Content-Encoding: gzip`` (e.g. a gzip bomb)
    "reason",  # answer `status` with the reason phrase `body` (hostile text)
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
        if fault is not None and kind == "reason":
            record.status = fault.status
            self.send_response_only(fault.status, fault.body.decode("latin-1"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault is not None and kind in ("trickle", "bad_range", "encoded"):
            self._odd(record, fault, owner._content(path) or b"")
            return
        content = fault.body if fault is not None and kind == "replace" else owner._content(path)
        if content is None:
            self._simple(record, 404, {})
            return
        self._send_content(record, content, fault, head=head)

    def _odd(self, record: RequestRecord, fault: Fault, content: bytes) -> None:
        """The faults that need their own answer: trickle, bad_range, encoded."""
        if fault.kind == "encoded":
            record.status = 200
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(fault.body)))
            self.end_headers()
            self._write(record, fault.body)
            return
        if fault.kind == "bad_range":
            start = fault.after_bytes or 1
            payload = content[start:]
            record.status = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self._write(record, payload)
            return
        record.status = 200
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        for i in range(len(content)):
            self._write(record, content[i : i + 1])
            self.wfile.flush()
            if self.owner._stopping.wait(fault.stall_seconds):
                self.close_connection = True
                return

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
                # Let the client read what was sent: on Linux an RST discards unread data.
                owner._stopping.wait(0.05)
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
