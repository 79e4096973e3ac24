"""The transport interface: options, results, retries and resumable, hashed downloads.

A :class:`Transport` knows one family of URL schemes. :func:`transport_for` picks one from a
registry that other packages extend through the ``cacheclient.transports`` entry-point group
(``scheme = "module:Class"``; the class is called with a :class:`TransportOptions`).

All HTTP traffic of a process goes through one shared :class:`requests.Session` whose connection
pool is sized for the number of parallel downloads. Connection errors, 429 and 5xx are retried
with exponential backoff and jitter (tenacity), honouring ``Retry-After``; a 404 is retried once
when the caller asks for it (a writer may be re-pushing the entry: FORMATS §10 pitfall 25); other
4xx are never retried.

:meth:`Transport.download` streams into a ``.partial`` file, hashing while it writes. A later call
(after a crash or ``kill -9``) hashes the existing prefix once and continues it with
``Range``/``If-Range``; when the server ignores the range (200) or the validator changed, it
starts again from zero. The length is checked against the expected size while streaming.
Large downloads receive, hash and write on three threads (:class:`cacheclient.transport.sink.Sink`),
so the sha256 costs little wall time, and memory stays bounded by two small queues.

Timeouts and tries come from :class:`TransportOptions` (``CACHECLIENT_CONNECT_TIMEOUT``,
``CACHECLIENT_READ_TIMEOUT``, ``CACHECLIENT_RETRIES`` through :func:`options_from_env`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from cacheclient._version import __version__
from cacheclient.errors import (
    DownloadError,
    MetadataError,
    StoreError,
    UsageError,
    VerificationError,
)
from cacheclient.events import get_logger
from cacheclient.transport.sink import (
    PIPELINE_MIN,
    Sink,
    hash_prefix,
    open_partial,
    read_meta,
    write_meta,
)

if TYPE_CHECKING:
    import tenacity

__all__ = [
    "CHUNK_SIZE",
    "INDEX_LIMIT",
    "METADATA_LIMIT",
    "USER_AGENT",
    "DownloadResult",
    "Fetched",
    "ProgressCallback",
    "Stream",
    "Transport",
    "TransportOptions",
    "join_url",
    "requests_made",
    "too_large",
]


def __dir__() -> list[str]:
    return __all__


_R = TypeVar("_R")

USER_AGENT = f"cacheclient/{__version__}"
CHUNK_SIZE = 1 << 20
"""Bytes read per chunk while streaming a download."""

METADATA_LIMIT = 16 << 20
"""Bytes a metadata document may have (index and spec manifests, spec files, key indexes and
keys, pages) unless the caller gives another bound (the index: its manifest's contentLength)."""
INDEX_LIMIT = 2 << 30
"""Bytes a v2 ``index.json`` may have (its size is announced nowhere)."""

ProgressCallback = Callable[[int, "int | None"], None]
"""Called with ``(bytes_done, bytes_total)`` while a download streams."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TransportOptions:
    """Timeouts, retry policy and pool size shared by every transport of a run."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    attempts: int = 5
    """Total tries for a transient failure (connection error, 429, 5xx)."""
    backoff: float = 0.5
    """First backoff delay in seconds; doubles each try, plus up to as much random jitter."""
    backoff_max: float = 30.0
    """Upper bound of one delay, also applied to ``Retry-After``."""
    not_found_delay: float = 0.5
    """Delay before the single retry of a 404 (push race)."""
    pool_size: int = 8
    deadline: float = 300.0
    """Seconds one metadata request may take in all (a server trickling bytes cannot hold a
    run: the read timeout only bounds the gap between two bytes)."""
    user_agent: str = USER_AGENT
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Fetched:
    """A small whole-body response. ``status`` is 200, or 304 when the validator still matched."""

    status: int
    body: bytes
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DownloadResult:
    """What :meth:`Transport.download` wrote: sha256 and size of the whole file."""

    sha256: str
    size: int
    resumed_from: int = 0
    """How many bytes of an earlier partial download were kept (0 when it started afresh)."""
    etag: str | None = None
    """The response's strong ETag, for a later ``If-None-Match`` (``None``: none given)."""


class Stream(Protocol):
    """An open response body, possibly starting at an offset."""

    offset: int
    """Where the body starts in the resource (0 when the server sent the whole thing)."""
    validator: str | None
    """A strong ETag or Last-Modified value for a later ``If-Range``."""
    etag: str | None
    """The strong ETag alone (``None`` when the response has none)."""
    total: int | None
    """Size of the whole resource when known."""

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Internal failure kinds that drive the retry policy.


class _Transient(Exception):
    """A failure worth retrying (connection error, 429, 5xx).

    *standalone*: the message names the host already (``cannot connect to host:port: ...``),
    so the final error does not repeat the URL.
    """

    def __init__(
        self, message: str, retry_after: float | None = None, *, standalone: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.standalone = standalone
        self.progressed = False
        """Set when a download stored new bytes before failing (the next try resumes)."""


class _NotFound(Exception):
    """404 / ENOENT."""


_PROGRESS_RETRIES = 10
"""Extra tries for a download that stored a good share of new bytes in each failed try."""


def _advanced(before: int, after: int, total: int | None) -> bool:
    """Whether a failed try moved a download on enough to earn an extra try: 1 MiB, or a
    quarter of the file (a server that always fails half-way still ends up failing)."""
    gained = after - before
    return gained >= CHUNK_SIZE or (total is not None and gained * 4 >= total)


def strong_etag(value: str | None) -> str | None:
    """*value* if it is a strong ``ETag`` (a weak one, ``W/...``, cannot validate bytes)."""
    if not value or value.startswith(("W/", "w/")):
        return None
    return value


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # noqa: PLC0415 - rare: a Retry-After given as a date

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retrying(
    options: TransportOptions, *, retry_not_found: bool, url: str = ""
) -> tenacity.Retrying:
    import tenacity  # noqa: PLC0415 - only once a request is made (fast warm commands)

    def should_retry(state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _NotFound):
            return retry_not_found and state.attempt_number == 1
        if not isinstance(exc, _Transient):
            return False
        if exc.progressed:  # a resumable download that keeps advancing keeps going (bounded)
            return state.attempt_number < options.attempts + _PROGRESS_RETRIES
        return state.attempt_number < options.attempts

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _NotFound):
            return options.not_found_delay
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, options.backoff_max)
        if isinstance(exc, _Transient) and exc.progressed:
            return options.backoff
        growth: float = 2.0 ** (state.attempt_number - 1)
        base = min(options.backoff * growth, options.backoff_max)
        return min(base + random.uniform(0, base), options.backoff_max)  # noqa: S311

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        what = str(exc) if getattr(exc, "standalone", False) else f"{url}: {exc}"
        _LOG.info("%s; retrying in %.1f s (try %d failed)", what, delay, state.attempt_number)

    return tenacity.Retrying(
        retry=should_retry,
        wait=wait,
        sleep=options.sleep,
        reraise=True,
        stop=tenacity.stop_never,
        before_sleep=before_sleep,
    )


_LOG = get_logger("cacheclient.transport")


def _gave_up(url: str, exc: _Transient, tries: int, started: float) -> DownloadError:
    """The one error a person reads when the retries are spent: what failed, how often, how
    long (``cannot connect to 127.0.0.1:9: connection refused (3 attempts in 10 s)``)."""
    seconds = time.monotonic() - started
    spent = f" ({tries} attempts in {seconds:.0f} s)" if tries > 1 else ""
    text = f"{exc}{spent}" if exc.standalone else f"{url}: {exc}{spent}"
    return DownloadError(text, url=url)


_requests_made: dict[str, int] = {}
_requests_lock = threading.Lock()


def _count_request(url: str) -> None:
    with _requests_lock:
        _requests_made[url] = _requests_made.get(url, 0) + 1


def requests_made(prefix: str = "") -> int:
    """How many requests (tries included) this process sent to URLs starting with *prefix*.

    Reports use it for per-mirror request counts (``cacheclient warm``).
    """
    with _requests_lock:
        return sum(n for url, n in _requests_made.items() if url.startswith(prefix))


def join_url(base: str, relative: str) -> str:
    """Join a path below a mirror URL or directory, keeping any path prefix of the base.

    >>> join_url("https://host/develop/", "/v3/layout.json")
    'https://host/develop/v3/layout.json'
    """
    if not relative:
        return base
    return base.rstrip("/") + "/" + relative.lstrip("/")


def _scheme_of(url: str) -> str:
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError as exc:  # e.g. a bad IPv6 literal
        raise UsageError(f"mirror {url!r}: not a usable URL ({exc})") from None
    return "file" if len(scheme) <= 1 else scheme  # "" or a Windows drive letter


# ---------------------------------------------------------------------------------------------
# The base class: resumable, hashing download on top of ``open_stream``.


class Transport:
    """Base class of every transport; subclasses implement :meth:`_get` and :meth:`_open`.

    Public methods raise :class:`DownloadError` for failures that survive the retries and return
    ``None`` when the resource does not exist (404 / ENOENT).
    """

    schemes: tuple[str, ...] = ()

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()

    # -- to implement -------------------------------------------------------------------------
    def _get(self, url: str, etag: str | None, last_modified: str | None) -> Fetched:
        """Read a whole (small) resource; raise ``_NotFound``/``_Transient``/``DownloadError``."""
        raise NotImplementedError

    def _open(self, url: str, offset: int, if_range: str | None) -> Stream:
        """Open the body at *offset* (the server may ignore it: check ``Stream.offset``)."""
        raise NotImplementedError

    def _get_bounded(
        self, url: str, etag: str | None, last_modified: str | None, limit: int
    ) -> Fetched:
        """:meth:`_get` refusing bodies over *limit* bytes; transports that can stop early
        (http) override it, the default checks after the fact."""
        fetched = self._get(url, etag, last_modified)
        if len(fetched.body) > limit:
            raise too_large(url, len(fetched.body), limit)
        return fetched

    def close(self) -> None:
        """Release connections (the default does nothing)."""

    # -- public API ---------------------------------------------------------------------------
    def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        retry_not_found: bool = False,
        limit: int = METADATA_LIMIT,
    ) -> Fetched | None:
        """GET *url* whole; with *etag*/*last_modified* a 304 comes back as ``status=304``.

        A body over *limit* bytes is refused (:class:`MetadataError`), as is one that takes
        longer than the options' ``deadline`` (:class:`DownloadError`).
        """
        return self._retried(
            url, retry_not_found, lambda: self._get_bounded(url, etag, last_modified, limit)
        )

    def read(
        self, url: str, *, retry_not_found: bool = False, limit: int = METADATA_LIMIT
    ) -> bytes | None:
        """The body of *url* (at most *limit* bytes), or ``None`` when it does not exist."""
        fetched = self.get(url, retry_not_found=retry_not_found, limit=limit)
        return None if fetched is None else fetched.body

    def download(
        self,
        url: str,
        partial: Path,
        *,
        expected_size: int | None = None,
        progress: ProgressCallback | None = None,
        retry_not_found: bool = True,
        limit: int | None = None,
    ) -> DownloadResult | None:
        """Stream *url* into *partial*, continuing an earlier partial download when possible.

        The sha256 covers the whole file; the bytes of an existing partial file are hashed once
        and never re-read. Returns ``None`` on 404. More bytes than *expected_size* raise
        :class:`VerificationError` and remove the partial file; a short body at the end raises
        :class:`VerificationError` too (the caller decides whether to try another mirror).
        Failures that survive the retries raise :class:`DownloadError` and keep the partial file
        for a later resume. *limit* bounds a resource of unknown size: one announced or found
        longer raises :class:`MetadataError` (:func:`too_large`) and removes the partial file.
        """
        return self._retried(
            url,
            retry_not_found,
            lambda: self._download_once(url, partial, expected_size, progress, limit),
        )

    def _retried(self, url: str, retry_not_found: bool, request: Callable[[], _R]) -> _R | None:
        """*request* with the options' retries (each try counted); ``None`` on 404, and a
        :class:`DownloadError` saying how many tries over how long when they all failed."""
        tries, started = 0, time.monotonic()
        try:
            for attempt in _retrying(self.options, retry_not_found=retry_not_found, url=url):
                with attempt:
                    tries += 1
                    _count_request(url)
                    return request()
        except _NotFound:
            return None
        except _Transient as exc:
            raise _gave_up(url, exc, tries, started) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _download_once(
        self,
        url: str,
        partial: Path,
        expected_size: int | None,
        progress: ProgressCallback | None,
        limit: int | None = None,
    ) -> DownloadResult:
        meta_path = partial.with_name(partial.name + ".meta")
        hasher = hashlib.sha256()
        have = 0
        validator: str | None = None
        if os.path.lexists(partial):
            meta = read_meta(meta_path)
            if meta.get("url") == url and isinstance(meta.get("validator"), str):
                validator = str(meta["validator"])
                have = hash_prefix(partial, hasher, expected_size)
        if have and expected_size is not None and have == expected_size:
            # Complete from an earlier run that died before the rename.
            if progress:
                progress(have, expected_size)
            return DownloadResult(sha256=hasher.hexdigest(), size=have, resumed_from=have)
        if not have:
            hasher = hashlib.sha256()
            validator = None
        stream = self._open(url, have, validator if have else None)
        try:
            if limit is not None and (stream.total or 0) > limit:
                partial.unlink(missing_ok=True)
                meta_path.unlink(missing_ok=True)
                raise too_large(url, stream.total or 0, limit)
            if stream.offset != have:  # server ignored the range or the validator changed
                hasher = hashlib.sha256()
                have = 0
            if stream.validator:
                write_meta(meta_path, {"url": url, "validator": stream.validator})
            else:
                meta_path.unlink(missing_ok=True)
            resumed_from = have
            total = expected_size if expected_size is not None else stream.total
            try:
                fd = open_partial(partial, resume=bool(have))
                out = open(fd, "ab" if have else "wb", buffering=0, closefd=True)  # noqa: SIM115
            except StoreError:
                raise
            except OSError as exc:
                raise StoreError(f"{partial}: cannot write: {exc.strerror or exc}") from None
            with out, _removing_on_mismatch(partial, meta_path):
                if have:
                    out.truncate(have)
                    out.seek(have)
                have = self._pump(
                    url,
                    stream,
                    out,
                    hasher=hasher,
                    have=have,
                    expected_size=expected_size,
                    total=total,
                    progress=progress,
                    limit=limit,
                )
        finally:
            stream.close()
        if expected_size is not None and have != expected_size:
            partial.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            raise VerificationError(
                f"{url}: size mismatch: expected {expected_size} bytes, got {have}",
                url=url,
                expected=str(expected_size),
                actual=str(have),
            )
        return DownloadResult(
            sha256=hasher.hexdigest(), size=have, resumed_from=resumed_from, etag=stream.etag
        )

    @staticmethod
    def _pump(
        url: str,
        stream: Stream,
        out: IO[bytes],
        *,
        hasher: Any,
        have: int,
        expected_size: int | None,
        total: int | None,
        progress: ProgressCallback | None,
        limit: int | None = None,
    ) -> int:
        big = total is None or total - have > PIPELINE_MIN
        sink = Sink(out, hasher, pipelined=big)
        too_long = False
        bound = expected_size if expected_size is not None else limit
        started = have
        try:
            while True:
                try:
                    chunk = stream.read(CHUNK_SIZE)
                except _Transient as exc:
                    exc.progressed = _advanced(started, have, total)
                    raise
                if not chunk:
                    break
                if bound is not None and have + len(chunk) > bound:
                    too_long = True
                    break
                sink.feed(chunk)
                have += len(chunk)
                if progress:
                    progress(have, total)
        finally:
            sink.close()
        if too_long:  # the caller removes the partial file (_removing_on_mismatch)
            if expected_size is None and limit is not None:
                raise too_large(url, f"more than {limit}", limit)
            raise VerificationError(
                f"{url}: size mismatch: more than the expected {expected_size} bytes",
                url=url,
                expected=str(expected_size),
                actual=f">{expected_size}",
            )
        if stream.total is not None and have < stream.total:
            # The server announced more than it sent: resume from here on the next try.
            ended = _Transient(f"body ended after {have} of {stream.total} bytes")
            ended.progressed = _advanced(started, have, total)
            raise ended
        if stream.total is None and expected_size is not None and have < expected_size:
            # No length announced and the connection closed early: resume, as above.
            raise _Transient(f"body ended after {have} of the expected {expected_size} bytes")
        return have


@contextlib.contextmanager
def _removing_on_mismatch(partial: Path, meta_path: Path) -> Iterator[None]:
    """A download that turned out longer than expected (or than its limit) leaves neither file
    behind."""
    try:
        yield
    except (VerificationError, MetadataError):
        partial.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise


def too_large(url: str, size: int | str, limit: int) -> MetadataError:
    """The error for a metadata answer over its size cap."""
    return MetadataError(
        url, "", f"answer of {size} bytes exceeds the {limit}-byte cap for this document"
    )
