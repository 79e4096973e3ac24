"""Moving bytes from mirrors: ``file://``, plain paths and ``http(s)://``, with retries and resume.

A :class:`Transport` (:mod:`.base`) knows one family of URL schemes. :func:`transport_for` picks
one from a registry that other packages extend through the ``cacheclient.transports`` entry-point
group (``scheme = "module:Class"``; the class is called with a :class:`TransportOptions`).
Built in: :class:`~.file.FileTransport` and :class:`~.http.HttpTransport` (imported only when an
HTTP URL is used, so commands that make no request never import ``requests``).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from typing import Any

from cacheclient.errors import DownloadError, UsageError, printable
from cacheclient.transport.base import (
    CHUNK_SIZE,
    INDEX_LIMIT,
    METADATA_LIMIT,
    USER_AGENT,
    DownloadResult,
    Fetched,
    ProgressCallback,
    Stream,
    Transport,
    TransportOptions,
    _scheme_of,
    join_url,
    requests_made,
)
from cacheclient.transport.file import FileTransport

__all__ = [
    "CHUNK_SIZE",
    "INDEX_LIMIT",
    "METADATA_LIMIT",
    "USER_AGENT",
    "DownloadResult",
    "Fetched",
    "FileTransport",
    "ProgressCallback",
    "Stream",
    "Transport",
    "TransportFactory",
    "TransportOptions",
    "builtin_for",
    "configure",
    "current_options",
    "join_url",
    "options_from_env",
    "reader_for",
    "register_transport",
    "requests_made",
    "transport_for",
]


def __dir__() -> list[str]:
    return __all__


TransportFactory = Callable[[TransportOptions], Transport]


def _http_transport(options: TransportOptions) -> Transport:
    return _http_class()(options)


def _http_class() -> type[Transport]:
    from cacheclient.transport.http import HttpTransport  # noqa: PLC0415 - it subclasses Transport

    return HttpTransport


def __getattr__(name: str) -> Any:
    # ``cacheclient.transport.HttpTransport`` without importing requests up front.
    if name == "HttpTransport":
        return _http_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_BUILTIN: dict[str, TransportFactory] = {
    "file": FileTransport,
    "http": _http_transport,
    "https": _http_transport,
}
_registry: dict[str, TransportFactory] = {}
_instances: dict[Any, Transport] = {}
_lock = threading.Lock()
_options: TransportOptions | None = None
_entry_points_loaded = False


def options_from_env(*, pool_size: int = 8) -> TransportOptions:
    """Options with timeouts from ``CACHECLIENT_CONNECT_TIMEOUT``/``CACHECLIENT_READ_TIMEOUT``,
    the per-request deadline of metadata from ``CACHECLIENT_DEADLINE`` and tries from
    ``CACHECLIENT_RETRIES`` (seconds / count) when set; ``nan``, ``inf``, ``1e400`` or a
    negative value is a usage error."""

    def number(name: str, default: float) -> float:
        raw = os.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"{name}={printable(raw)!r}: expected a number") from None
        if not math.isfinite(value) or value <= 0 or value > 1e6:
            raise UsageError(f"{name}={raw!r}: expected a positive number up to 1000000")
        return value

    defaults = TransportOptions()
    return TransportOptions(
        connect_timeout=number("CACHECLIENT_CONNECT_TIMEOUT", defaults.connect_timeout),
        read_timeout=number("CACHECLIENT_READ_TIMEOUT", defaults.read_timeout),
        attempts=max(1, min(100, int(number("CACHECLIENT_RETRIES", defaults.attempts)))),
        deadline=number("CACHECLIENT_DEADLINE", defaults.deadline),
        pool_size=pool_size,
    )


def register_transport(scheme: str, factory: TransportFactory) -> None:
    """Make *factory* handle URLs with *scheme* (overrides entry points and built-ins)."""
    with _lock:
        _registry[scheme.lower()] = factory


def configure(options: TransportOptions) -> None:
    """Set the options used by :func:`transport_for` from now on (closes cached transports)."""
    global _options  # noqa: PLW0603 - process-wide defaults, like requests' default session
    with _lock:
        _options = options
        for transport in _instances.values():
            transport.close()
        _instances.clear()


def _load_entry_points() -> None:
    global _entry_points_loaded  # noqa: PLW0603
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib import metadata  # noqa: PLC0415 - only when a transport is first asked for

    for entry in metadata.entry_points(group="cacheclient.transports"):
        if entry.name.lower() in _registry:
            continue
        try:
            factory = entry.load()
        except Exception:  # noqa: BLE001, S112 - a broken plugin must not break built-ins
            continue
        if callable(factory):
            _registry[entry.name.lower()] = factory


def current_options() -> TransportOptions:
    """The options :func:`transport_for` uses when it is given none."""
    return _options or options_from_env()


def builtin_for(url: str) -> bool:
    """Whether *url*'s scheme is served by a built-in transport (no transport registered for it,
    by :func:`register_transport` or the entry-point group)."""
    scheme = _scheme_of(url)
    with _lock:
        if scheme in _registry or scheme not in _BUILTIN:
            return False
    from importlib import metadata  # noqa: PLC0415 - names only: no plugin is imported here

    return all(
        entry.name.lower() != scheme or entry.value.replace(" ", "") in _BUILTIN_ENTRY_POINTS
        for entry in metadata.entry_points(group="cacheclient.transports")
    )


_BUILTIN_ENTRY_POINTS = frozenset(
    {"cacheclient.transport.file:FileTransport", "cacheclient.transport.http:HttpTransport"}
)
"""How this package's own entry points name its built-in transports (``pyproject.toml``)."""


def transport_for(url: str, options: TransportOptions | None = None) -> Transport:
    """The transport for *url*'s scheme (shared per factory, so http and https share a pool)."""
    scheme = _scheme_of(url)
    with _lock:
        _load_entry_points()
        factory = _registry.get(scheme) or _BUILTIN.get(scheme)
        if factory is None:
            raise DownloadError(f"{url}: unsupported URL scheme {scheme!r}", url=url)
        opts = options or _options or options_from_env()
        key = (factory, opts)
        transport = _instances.get(key)
        if transport is None:
            transport = factory(opts)
            _instances[key] = transport
        return transport


def reader_for(
    mirror_url: str, *, options: TransportOptions | None = None
) -> Callable[[str], bytes | None]:
    """A function reading paths relative to *mirror_url*: bytes, or ``None`` when missing.

    >>> read = reader_for("fixtures/spack-v3/signed")
    >>> read("v3/no-such-file") is None
    True
    """
    transport = transport_for(mirror_url, options)

    def read(relative: str) -> bytes | None:
        return transport.read(join_url(mirror_url, relative))

    return read
