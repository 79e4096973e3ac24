"""``http://`` and ``https://``: :class:`HttpTransport`, one shared :class:`requests.Session`.

Registered for both schemes by :mod:`cacheclient.transport`.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse

import requests
import requests.adapters

from cacheclient.errors import DownloadError, printable
from cacheclient.transport.base import (
    METADATA_LIMIT,
    Fetched,
    Stream,
    Transport,
    TransportOptions,
    _NotFound,
    _parse_retry_after,
    _Transient,
    strong_etag,
    too_large,
)

__all__ = ["HttpTransport", "pooled_session"]


def __dir__() -> list[str]:
    return __all__


_RETRY_STATUS = frozenset({429})  # and every 5xx; no other 4xx (404: see retry_not_found)


class _HttpStream:
    def __init__(self, url: str, response: requests.Response, offset: int) -> None:
        self._url = url
        self._response = response
        self.offset = offset
        headers = response.headers
        self.etag = strong_etag(headers.get("ETag"))
        self.validator: str | None = self.etag or headers.get("Last-Modified")
        self.total: int | None = None
        content_range = headers.get("Content-Range", "")
        if response.status_code == 206 and "/" in content_range:
            tail = content_range.rsplit("/", 1)[1]
            self.total = int(tail) if tail.isdigit() else None
        elif (length := headers.get("Content-Length", "")).isdigit():
            self.total = int(length)

    def read(self, size: int) -> bytes:
        try:
            data: bytes = self._response.raw.read1(size, decode_content=False)
        except Exception as exc:  # noqa: BLE001
            # urllib3 raises ProtocolError/ReadTimeoutError/IncompleteRead here.
            raise _Transient(f"transfer interrupted: {type(exc).__name__}: {exc}") from None
        return data

    def close(self) -> None:
        self._response.close()


def pooled_session(options: TransportOptions) -> requests.Session:
    """A session whose connection pool fits *options*' parallel downloads; retries are ours
    (tenacity, in :mod:`.base`), never urllib3's."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=max(4, options.pool_size),
        pool_maxsize=max(4, options.pool_size),
        max_retries=0,
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class HttpTransport(Transport):
    """``http://`` and ``https://`` through one shared :class:`requests.Session`."""

    schemes = ("http", "https")

    def __init__(
        self, options: TransportOptions | None = None, session: requests.Session | None = None
    ) -> None:
        super().__init__(options)
        self.session = session if session is not None else pooled_session(self.options)
        self.session.headers["User-Agent"] = self.options.user_agent

    def close(self) -> None:
        self.session.close()

    @property
    def _timeout(self) -> tuple[float, float]:
        return (self.options.connect_timeout, self.options.read_timeout)

    def _request(self, url: str, headers: dict[str, str], *, stream: bool) -> requests.Response:
        try:
            response = self.session.get(url, headers=headers, timeout=self._timeout, stream=stream)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(_connection_failure(url, exc, self.options), standalone=True) from None
        except requests.exceptions.ChunkedEncodingError as exc:  # body cut (stream=False)
            raise _Transient(f"transfer interrupted: {_short(exc)}") from None
        except requests.RequestException as exc:
            raise DownloadError(f"{url}: {_short(exc)}", url=url) from None
        status = response.status_code
        if status in (200, 206, 304) or (status == 416 and "Range" in headers):
            return response
        response.close()
        if status in (404, 410):
            raise _NotFound(url)
        reason = f"HTTP {status} {printable(response.reason or '')[:200]}".strip()
        if status in _RETRY_STATUS or status >= 500:
            raise _Transient(reason, _parse_retry_after(response.headers.get("Retry-After")))
        raise DownloadError(f"{url}: {reason}", url=url)

    def _get(self, url: str, etag: str | None, last_modified: str | None) -> Fetched:
        return self._get_bounded(url, etag, last_modified, METADATA_LIMIT)

    def _get_bounded(
        self, url: str, etag: str | None, last_modified: str | None, limit: int
    ) -> Fetched:
        """GET a metadata document: at most *limit* bytes, within the options' deadline, and
        no transparent decompression (``Accept-Encoding: identity``; the raw bytes are read
        whatever the server claims)."""
        started = time.monotonic()
        headers: dict[str, str] = {"Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        response = self._request(url, headers, stream=True)
        try:
            new_etag = strong_etag(response.headers.get("ETag"))
            modified = response.headers.get("Last-Modified")
            if response.status_code == 304:
                return Fetched(status=304, body=b"", etag=new_etag or etag, last_modified=modified)
            if response.status_code != 200:
                raise DownloadError(
                    f"{url}: unexpected HTTP {response.status_code} to a plain GET", url=url
                )
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > limit:
                raise too_large(url, int(announced), limit)
            body = self._read_bounded(url, response, limit, started)
        finally:
            response.close()
        return Fetched(status=200, body=body, etag=new_etag, last_modified=modified)

    def _read_bounded(
        self, url: str, response: requests.Response, limit: int, started: float
    ) -> bytes:
        deadline = started + self.options.deadline
        body = bytearray()
        while True:
            if time.monotonic() > deadline:
                raise DownloadError(
                    f"{url}: no complete answer within {self.options.deadline:g}s (the server "
                    "is too slow); giving up",
                    url=url,
                )
            try:
                chunk: bytes = response.raw.read1(1 << 16, decode_content=False)
            except Exception as exc:  # noqa: BLE001 - urllib3 ProtocolError/ReadTimeoutError
                raise _Transient(f"transfer interrupted: {_short(exc)}") from None
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > limit:
                raise too_large(url, f"more than {limit}", limit)

    def _open(self, url: str, offset: int, if_range: str | None) -> Stream:
        headers = {"Accept-Encoding": "identity"}
        if offset and if_range:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = if_range
        response = self._request(url, headers, stream=True)
        start = 0
        if response.status_code == 416:  # the partial file is longer than the resource
            response.close()
            return self._open(url, 0, None)
        if response.status_code == 206:
            content_range = response.headers.get("Content-Range", "")
            try:
                start = int(content_range.split()[1].split("-")[0])
            except (IndexError, ValueError):
                response.close()
                raise DownloadError(
                    f"{url}: bad Content-Range {content_range!r}", url=url
                ) from None
            if start != offset:
                response.close()
                if not offset or "Range" not in headers:  # a 206 nobody asked for: never loop
                    raise DownloadError(
                        f"{url}: answered 206 from byte {start} to a request "
                        + (f"for byte {offset}" if "Range" in headers else "without a Range"),
                        url=url,
                    )
                # Not what we asked for: start again without a range (once).
                return self._open(url, 0, None)
        elif response.status_code == 304:
            response.close()
            raise DownloadError(f"{url}: unexpected HTTP 304", url=url)
        return _HttpStream(url, response, start)


def _causes(exc: BaseException) -> list[BaseException]:
    """*exc* and what it wraps (``__cause__``, ``__context__``, exception arguments, urllib3's
    ``reason``), breadth first."""
    seen: list[BaseException] = []
    queue = [exc]
    while queue and len(seen) < 20:
        item = queue.pop(0)
        if any(item is s for s in seen):
            continue
        seen.append(item)
        nested = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
        queue.extend(n for n in nested if isinstance(n, BaseException))
    return seen


def _connection_failure(url: str, exc: BaseException, options: TransportOptions) -> str:
    """``cannot connect to HOST:PORT: connection refused`` and its kin, from the exception
    chain (urllib3's own text is long and repeats the URL)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"{parts.hostname or '?'}:{port}"
    chain = _causes(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"cannot connect to {host}: no answer within {options.connect_timeout:g} s"
    if isinstance(exc, requests.exceptions.ReadTimeout) or any(
        isinstance(c, (socket.timeout, TimeoutError)) for c in chain
    ):
        return f"{host}: no data for {options.read_timeout:g} s"
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = cause.verify_message or "certificate verification failed"
            return f"cannot connect to {host}: TLS certificate not accepted: {detail}"
        if isinstance(cause, socket.gaierror):
            return f"cannot connect to {host}: host name not found"
        if isinstance(cause, (ConnectionResetError, http.client.RemoteDisconnected)):
            return f"connection to {host} lost: closed by the server"
        if isinstance(cause, OSError) and cause.errno and cause.strerror:
            return f"cannot connect to {host}: {cause.strerror[:1].lower()}{cause.strerror[1:]}"
    return f"cannot connect to {host}: {_short(exc)}"


def _short(exc: BaseException) -> str:
    text = printable(str(exc))
    return text if len(text) < 200 else text[:197] + "..."
