"""One small GET without the HTTP library, for asking whether a cached index is still current.

Once a cached index's TTL has passed, a command asks the mirror whether it changed: one small
request (the v3 index manifest, ``index.json`` with ``If-None-Match``, or ``index.json.hash``).
Importing ``requests`` takes longer than that request on a near mirror, so :func:`quick_get`
makes it with the standard library's :mod:`http.client`, and only where it behaves as
:class:`~.http.HttpTransport` would:

* a plain ``http``/``https`` URL without credentials in it, served by the built-in transport
  (the caller checks that no other is registered for the scheme:
  :func:`cacheclient.transport.builtin_for`);
* no proxy in the environment (``http_proxy``, ``https_proxy``, ``all_proxy``, any case) and
  no ``.netrc`` (``NETRC``, ``~/.netrc``, ``~/_netrc``): requests would use them;
* certificates checked against the bundle requests would use (``REQUESTS_CA_BUNDLE``, then
  ``CURL_CA_BUNDLE``, then certifi's), host names checked;
* the same request headers (user agent, ``Accept-Encoding: identity``, ``If-None-Match``).

It takes only a 200 (whole body within *limit*) or a 304 for an answer. Anything else (a
redirect, another status, a refused or slow connection, a body cut short or too large, a TLS
failure) is ``None``, and the caller asks the full transport, which retries, follows redirects
and explains failures. So this path can make a run faster but never changes its outcome.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from cacheclient.transport.base import (
    METADATA_LIMIT,
    USER_AGENT,
    Fetched,
    _count_request,
    strong_etag,
)

__all__ = ["QUICK_TIMEOUT", "quick_get"]


def __dir__() -> list[str]:
    return __all__


QUICK_TIMEOUT = 5.0
"""Seconds for connecting and for each read at most (less when the transport options say
so); a slower mirror gets the full transport."""

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def _applies(parts: urllib.parse.SplitResult, env: Mapping[str, str]) -> bool:
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.username is not None or parts.password is not None:
        return False
    if sys.platform in ("darwin", "win32"):  # proxies also come from the system settings there
        return False
    if any(env.get(v) or env.get(v.upper()) for v in _PROXY_VARIABLES):
        return False
    home = env.get("HOME") or os.path.expanduser("~")
    netrcs = (env.get("NETRC", ""), f"{home}/.netrc", f"{home}/_netrc")
    return not any(p and os.path.lexists(p) for p in netrcs)


def _tls_context(env: Mapping[str, str]) -> ssl.SSLContext:
    bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    if not bundle:
        import certifi  # noqa: PLC0415 - requests' own bundle, only for https

        bundle = certifi.where()
    if Path(bundle).is_dir():
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


def quick_get(
    url: str,
    *,
    etag: str | None = None,
    limit: int = METADATA_LIMIT,
    user_agent: str = USER_AGENT,
    timeout: float = QUICK_TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> Fetched | None:
    """``GET`` *url* (conditionally with *etag*); ``None`` when the full transport must ask.

    ``status`` is 304 when *etag* still matched, else 200 with the body (at most *limit* bytes).
    *timeout* bounds the connection and each read (the whole answer: twice that).
    """
    env = os.environ if environ is None else environ
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not _applies(parts, env):
        return None
    host = parts.hostname or ""
    connection: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=_tls_context(env)
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
    except (OSError, ValueError):  # an unreadable CA bundle: the full transport explains
        return None
    headers = {"User-Agent": user_agent, "Accept-Encoding": "identity", "Accept": "*/*"}
    if etag:
        headers["If-None-Match"] = etag
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    started = time.monotonic()
    try:
        _count_request(url)
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        new_etag = strong_etag(response.getheader("ETag"))
        modified = response.getheader("Last-Modified")
        if response.status == 304:
            return Fetched(status=304, body=b"", etag=new_etag or etag, last_modified=modified)
        if response.status != 200:
            return None
        body = _body(response, limit, started + 2 * timeout)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        connection.close()
    if body is None:
        return None
    return Fetched(status=200, body=body, etag=new_etag, last_modified=modified)


def _body(response: http.client.HTTPResponse, limit: int, deadline: float) -> bytes | None:
    """The whole body, or ``None``: over *limit*, cut short, or slower than the time allowed."""
    announced = response.getheader("Content-Length", "")
    if announced.isdigit() and int(announced) > limit:
        return None
    body = bytearray()
    while len(body) <= limit:
        if time.monotonic() > deadline:
            return None
        chunk = response.read1(1 << 16)
        if not chunk:
            if announced.isdigit() and int(announced) != len(body):
                return None
            return bytes(body)
        body += chunk
    return None
