"""Debian's nginx serving a directory on a free 127.0.0.1 port, with a JSON access log tests read.

The real thing for Range, ETag, keep-alive and sendfile behaviour. Works as root (``user root``)
and as a normal user; its config, pid, temp and log files live in a private work directory.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["NGINX", "AccessEntry", "NginxError", "NginxServer", "free_port", "refused_url"]

NGINX = "/usr/sbin/nginx"
_SYNC_PATH = "/__nginx_sync__"
_START_TIMEOUT = 10.0

# Servers still running when the interpreter exits (a test run interrupted before teardown)
# are stopped then, so no nginx outlives the test process.
_RUNNING: set[NginxServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        server.stop()


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
                _RUNNING.add(self)
                self.port = port
                return self
            _, stderr = _finish(proc)
            last_error = (stderr.decode(errors="replace") + error_log.read_text()).strip()
            if "Address already in use" not in last_error:
                break
        raise NginxError(f"nginx did not start on 127.0.0.1: {last_error or 'no message'}")

    def stop(self) -> None:
        _RUNNING.discard(self)
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
