"""OCI registries (Docker Registry HTTP API v2): ``oci://HOST[:PORT]/REPO`` and ``oci+http://``.

``oci://`` talks HTTPS, ``oci+http://`` plain HTTP (as in Spack). A mirror URL names one
repository; below it, the transport understands three kinds of paths, the same ones the registry
serves under ``/v2/<repo>/``:

* ``<mirror>/manifests/<tag or digest>``: an image manifest, asked for with an ``Accept`` header
  that lists the OCI and Docker manifest media types (docker-registry 2.8 answers
  ``404 MANIFEST_UNKNOWN`` for an OCI manifest otherwise). The body is checked against the
  ``Docker-Content-Digest`` header, and against the digest when one was asked for.
* ``<mirror>/blobs/sha256:<hex>``: a blob, streamed with ``Range`` resume like any other download
  (:meth:`Transport.download`); its sha256 is the digest, which the caller checks.
* ``<mirror>/tags/list``: the tag listing (see :meth:`OciTransport.list_tags`, which follows
  ``Link: <...>; rel="next"`` pages).

Authentication (anonymous or credentialed Bearer tokens, Basic) is :mod:`oci_auth`'s. The
transport is registered for the ``oci`` and ``oci+http`` schemes through the
``cacheclient.transports`` entry point, like the built-in ones.

Pushing (blob upload with HEAD and cross-repository mount, manifest PUT) is here too, for
``cacheclient push``.
"""

from __future__ import annotations

import hashlib
import re
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import requests.adapters

from cacheclient.errors import DownloadError, MetadataError, UsageError, VerificationError
from cacheclient.metadata.oci_image import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    is_oci_url,
)
from cacheclient.transport.base import (
    Fetched,
    Stream,
    Transport,
    TransportOptions,
    _count_request,
    _NotFound,
    _retrying,
    _Transient,
)
from cacheclient.transport.http import _HttpStream, pooled_session
from cacheclient.transport.oci_auth import ENV_PASSWORD, ENV_USERNAME, RegistrySession, short

__all__ = [
    "DOCKER_MANIFEST",
    "MANIFEST_ACCEPT",
    "MAX_MANIFEST_BYTES",
    "OCI_MANIFEST",
    "OciRef",
    "OciTransport",
    "PushedBlob",
    "check_reference",
    "is_oci_url",
    "parse_oci_url",
]


def __dir__() -> list[str]:
    return __all__


MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST))
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""A manifest larger than this is refused (registries cap them at 4 MiB too)."""

_SCHEMES = {"oci": "https", "oci+http": "http", "oci+https": "https"}
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DOCKER_HUB = "index.docker.io"


@dataclass(frozen=True, kw_only=True, slots=True)
class OciRef:
    """One repository of one registry."""

    scheme: str
    """``https`` or ``http``."""
    host: str
    """``name[:port]`` as the user wrote it (lower case)."""
    repository: str

    @property
    def url(self) -> str:
        """The mirror URL: ``oci://host/repo`` or ``oci+http://host/repo``."""
        prefix = "oci" if self.scheme == "https" else "oci+http"
        return f"{prefix}://{self.host}/{self.repository}"

    @property
    def api_host(self) -> str:
        """Where the API is: Docker Hub's API lives on ``registry-1.docker.io``."""
        return "registry-1.docker.io" if self.host == _DOCKER_HUB else self.host

    def api(self, path: str) -> str:
        """The API URL of *path* below the repository (``manifests/x``, ``blobs/d``...)."""
        return f"{self.scheme}://{self.api_host}/v2/{self.repository}/{path}"


def parse_oci_url(url: str) -> OciRef:
    """Split ``oci://HOST[:PORT]/REPO`` (or ``oci+http://``) the way Docker reads references.

    A first component without ``.`` or ``:`` that is not ``localhost`` is a Docker Hub
    namespace; a one-component Docker Hub name gets ``library/``. Names are lower-cased.

    >>> parse_oci_url("oci+http://127.0.0.1:5000/demo/BuildCache").api("tags/list")
    'http://127.0.0.1:5000/v2/demo/buildcache/tags/list'
    >>> parse_oci_url("oci://ghcr.io/spack/bootstrap-buildcache-v2.2").host
    'ghcr.io'
    """
    scheme_part, sep, rest = url.partition("://")
    scheme = _SCHEMES.get(scheme_part.lower()) if sep else None
    if scheme is None:
        raise UsageError(f"{url}: not an OCI registry URL (expected oci://HOST/REPO)")
    rest = rest.strip("/")
    if "@" in rest.split("/", 1)[0]:
        raise UsageError(
            f"{url}: credentials do not belong in the URL; set {ENV_USERNAME}/{ENV_PASSWORD} "
            "or use `docker login`"
        )
    first, slash, remainder = rest.partition("/")
    if not slash or not ("." in first or ":" in first or first.lower() == "localhost"):
        host, path = _DOCKER_HUB, rest
        if "/" not in path:
            path = f"library/{path}"
    else:
        host, path = first.lower(), remainder
    path = path.lower()
    if ":" in path.rsplit("/", 1)[-1] or "@" in path:
        raise UsageError(f"{url}: name a repository, not a tag or digest")
    if not path or not _REPO.match(path):
        raise UsageError(f"{url}: {path!r} is not a valid repository name")
    return OciRef(scheme=scheme, host=host, repository=path)


def _split(url: str) -> tuple[OciRef, str, str]:
    """``(repository, kind, reference)`` of a transport URL (kind: manifests, blobs, tags)."""
    for kind in ("/manifests/", "/blobs/", "/tags/"):
        head, sep, tail = url.rpartition(kind)
        if sep and tail and "/" not in tail.strip("/"):
            return parse_oci_url(head), kind.strip("/"), tail
    # Anything else (a v3 key manifest, a v2 index...) does not exist in a registry.
    raise _NotFound(url)


def check_reference(reference: str) -> str:
    """A tag or ``sha256:`` digest, validated (so it cannot change the URL path)."""
    if _DIGEST.match(reference) or _TAG.match(reference):
        return reference
    raise UsageError(f"{reference!r} is neither a valid tag nor a sha256 digest")


# ---------------------------------------------------------------------------------------------
# The transport: reads (manifests, blobs, tags) and the writes ``cacheclient push`` needs.


class _RegistryStream(_HttpStream):
    """A blob response: as over plain HTTP, but only a strong ETag is a resume validator (a
    registry's blob is named by its digest; Last-Modified says nothing more)."""

    def __init__(self, response: requests.Response, offset: int) -> None:
        super().__init__(response.url, response, offset)
        self.validator = self.etag


@dataclass(frozen=True, kw_only=True, slots=True)
class PushedBlob:
    """What :meth:`OciTransport.push_blob` did for one blob."""

    digest: str
    size: int
    uploaded: bool
    mounted: bool = False


class OciTransport(Transport):
    """``oci://`` (HTTPS) and ``oci+http://`` registries; one session per process."""

    schemes = ("oci", "oci+http")

    def __init__(
        self, options: TransportOptions | None = None, session: requests.Session | None = None
    ) -> None:
        super().__init__(options)
        self.session = session if session is not None else pooled_session(self.options)
        self.session.headers["User-Agent"] = self.options.user_agent
        self._registries: dict[tuple[str, str], RegistrySession] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def registry(self, ref: OciRef) -> RegistrySession:
        key = (ref.scheme, ref.api_host)
        with self._lock:
            found = self._registries.get(key)
            if found is None:
                found = RegistrySession(ref.scheme, ref.api_host, self.session, self.options)
                self._registries[key] = found
            return found

    @staticmethod
    def pull_scope(ref: OciRef) -> str:
        return f"repository:{ref.repository}:pull"

    @staticmethod
    def push_scope(ref: OciRef) -> str:
        return f"repository:{ref.repository}:pull,push"

    # -- Transport ------------------------------------------------------------------------------
    def _get(self, url: str, etag: str | None, last_modified: str | None) -> Fetched:
        ref, kind, reference = _split(url)
        if kind != "tags":
            check_reference(reference)
        headers: dict[str, str] = {}
        if kind == "manifests":
            headers["Accept"] = MANIFEST_ACCEPT
            if etag:
                headers["If-None-Match"] = etag
        response = self.registry(ref).send(
            "GET", ref.api(f"{kind}/{reference}"), scope=self.pull_scope(ref), headers=headers
        )
        with response:
            status = response.status_code
            if status == 404:
                raise _NotFound(url)
            if status == 304 and kind == "manifests" and etag:
                return Fetched(status=304, body=b"", etag=response.headers.get("ETag") or etag)
            if status != 200:
                raise DownloadError(
                    f"{url}: HTTP {status} {response.reason or ''}".strip(), url=url
                )
            try:
                body = self._read_body(response, url, kind)
            except (requests.RequestException, OSError) as exc:
                raise _Transient(f"transfer interrupted: {short(exc)}") from None
            etag_out = response.headers.get("ETag")
            header_digest = response.headers.get("Docker-Content-Digest")
        if kind in ("manifests", "blobs"):
            _check_digest(url, body, reference, header_digest if kind == "manifests" else None)
        return Fetched(status=200, body=body, etag=etag_out)

    @staticmethod
    def _read_body(response: requests.Response, url: str, kind: str) -> bytes:
        if kind != "manifests":
            return response.content
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
            raise MetadataError(url, "", f"manifest of {length} bytes is too large")
        body = response.content
        if len(body) > MAX_MANIFEST_BYTES:
            raise MetadataError(url, "", f"manifest of {len(body)} bytes is too large")
        return body

    def _open(self, url: str, offset: int, if_range: str | None) -> Stream:
        ref, kind, reference = _split(url)
        if kind != "blobs":
            raise DownloadError(f"{url}: only blobs are downloaded to files", url=url)
        check_reference(reference)
        headers = {"Accept-Encoding": "identity"}
        if offset and if_range:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = if_range
        response = self.registry(ref).send(
            "GET",
            ref.api(f"blobs/{reference}"),
            scope=self.pull_scope(ref),
            headers=headers,
            stream=True,
        )
        status = response.status_code
        if status == 404:
            response.close()
            raise _NotFound(url)
        if status == 416:
            response.close()
            return self._open(url, 0, None)
        if status not in (200, 206):
            response.close()
            raise DownloadError(f"{url}: HTTP {status} {response.reason or ''}".strip(), url=url)
        start = 0
        if status == 206:
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
                return self._open(url, 0, None)
        return _RegistryStream(response, start)

    # -- registry operations beyond GET ---------------------------------------------------------
    def _call(self, url: str, work: Any) -> Any:
        """Run *work()* with the transport's retry policy, counting each try against *url*."""
        try:
            for attempt in _retrying(self.options, retry_not_found=False):
                with attempt:
                    _count_request(url)
                    return work()
        except _NotFound:
            return None
        except _Transient as exc:
            raise DownloadError(f"{url}: {exc}", url=url) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def manifest(self, ref: OciRef, reference: str) -> tuple[bytes, str] | None:
        """``(bytes, digest)`` of a manifest by tag or digest, checked; ``None`` if absent."""
        url = f"{ref.url}/manifests/{check_reference(reference)}"
        fetched = self.get(url)
        if fetched is None:
            return None
        return fetched.body, "sha256:" + hashlib.sha256(fetched.body).hexdigest()

    def list_tags(self, ref: OciRef, *, page_size: int = 1000) -> list[str]:
        """Every tag of the repository, following ``Link: <...>; rel="next"`` pages."""
        tags: list[str] = []
        url: str | None = ref.api(f"tags/list?n={page_size}")
        seen: set[str] = set()
        registry = self.registry(ref)
        while url is not None and url not in seen:
            seen.add(url)
            target = url

            def work(target: str = target) -> tuple[list[str], str | None]:
                response = registry.send("GET", target, scope=self.pull_scope(ref))
                with response:
                    if response.status_code == 404:
                        raise _NotFound(target)
                    if response.status_code != 200:
                        raise DownloadError(f"{target}: HTTP {response.status_code}", url=target)
                    try:
                        data = response.json()
                    except ValueError:
                        raise MetadataError(target, "", "tag list is not JSON") from None
                    link = response.headers.get("Link")
                names = data.get("tags") if isinstance(data, dict) else None
                if names is None:
                    names = []
                if not isinstance(names, list) or not all(isinstance(t, str) for t in names):
                    raise MetadataError(target, "tags", "expected a list of strings")
                return names, _next_link(target, link)

            result = self._call(f"{ref.url}/tags/list", work)
            if result is None:
                return tags
            page, url = result
            tags.extend(page)
        return tags

    def blob_size(self, ref: OciRef, digest: str) -> int | None:
        """HEAD a blob: its size when the repository has it, else ``None``."""
        check_reference(digest)
        registry = self.registry(ref)

        def work() -> int | None:
            response = registry.send("HEAD", ref.api(f"blobs/{digest}"), scope=self.pull_scope(ref))
            with response:
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    raise DownloadError(
                        f"{ref.url}/blobs/{digest}: HTTP {response.status_code}", url=ref.url
                    )
                length = response.headers.get("Content-Length", "")
                return int(length) if length.isdigit() else 0

        result: int | None = self._call(f"{ref.url}/blobs/{digest}", work)
        return result

    def push_blob(
        self,
        ref: OciRef,
        digest: str,
        size: int,
        source: Path | bytes,
        *,
        mount_from: str | None = None,
    ) -> PushedBlob:
        """Make *digest* exist in the repository: skip it when present (HEAD), else mount it
        from *mount_from* (another repository of the registry) when the registry allows, else
        upload it (POST, then one PUT with the whole body)."""
        check_reference(digest)
        if self.blob_size(ref, digest) is not None:
            return PushedBlob(digest=digest, size=size, uploaded=False)
        registry = self.registry(ref)
        scope = self.push_scope(ref)
        uploads = ref.api("blobs/uploads/")

        def start() -> tuple[str | None, bool]:
            params = ""
            if mount_from and mount_from != ref.repository:
                params = "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
            response = registry.send("POST", uploads + params, scope=scope, data=b"")
            with response:
                location = response.headers.get("Location")
                if response.status_code == 201 and params:
                    return None, True
                if response.status_code != 202 or not location:
                    raise DownloadError(
                        f"{ref.url}: starting an upload answered HTTP {response.status_code}",
                        url=ref.url,
                    )
                return urllib.parse.urljoin(uploads, location), False

        def finish(location: str) -> None:
            sep = "&" if "?" in location else "?"
            target = f"{location}{sep}{urllib.parse.urlencode({'digest': digest})}"
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            if isinstance(source, bytes):
                response = registry.send("PUT", target, scope=scope, headers=headers, data=source)
            else:
                with open(source, "rb") as handle:
                    response = registry.send(
                        "PUT", target, scope=scope, headers=headers, data=handle
                    )
            with response:
                if response.status_code not in (201, 204):
                    raise DownloadError(
                        f"{ref.url}: uploading {digest} answered HTTP {response.status_code}",
                        url=ref.url,
                    )

        def upload() -> bool:
            # POST and PUT are retried together: an upload session a failed PUT broke is not
            # reused.
            location, mounted = start()
            if not mounted and location is not None:
                finish(location)
            return mounted

        mounted: bool = self._call(f"{ref.url}/blobs/{digest}", upload)
        if mounted:
            return PushedBlob(digest=digest, size=size, uploaded=False, mounted=True)
        return PushedBlob(digest=digest, size=size, uploaded=True)

    def put_manifest(self, ref: OciRef, tag: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under *tag*; returns its digest (checked against the registry's)."""
        check_reference(tag)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        registry = self.registry(ref)

        def work() -> None:
            response = registry.send(
                "PUT",
                ref.api(f"manifests/{tag}"),
                scope=self.push_scope(ref),
                headers={"Content-Type": media_type},
                data=body,
            )
            with response:
                if response.status_code not in (200, 201, 202):
                    detail = response.text[:200].strip()
                    raise DownloadError(
                        f"{ref.url}: tagging {tag} answered HTTP {response.status_code}"
                        + (f": {detail}" if detail else ""),
                        url=ref.url,
                    )
                answered = response.headers.get("Docker-Content-Digest")
            if answered and answered != digest:
                raise VerificationError(
                    f"{ref.url}/manifests/{tag}: the registry stored {answered}, "
                    f"not the {digest} that was sent",
                    url=ref.url,
                    expected=digest,
                    actual=answered,
                )

        self._call(f"{ref.url}/manifests/{tag}", work)
        return digest


def _check_digest(url: str, body: bytes, reference: str, header: str | None) -> None:
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    for expected, what in ((reference, "requested digest"), (header, "Docker-Content-Digest")):
        if expected is None or not expected.startswith("sha256:"):
            continue
        if expected != actual:
            raise VerificationError(
                f"{url}: content is {actual}, but the {what} is {expected}",
                url=url,
                expected=expected,
                actual=actual,
            )


_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?', re.IGNORECASE)


def _next_link(current: str, header: str | None) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header, on the same host only."""
    if not header:
        return None
    match = _LINK.search(header)
    if match is None:
        return None
    target = urllib.parse.urljoin(current, str(match.group(1)))
    if urllib.parse.urlsplit(target).netloc != urllib.parse.urlsplit(current).netloc:
        return None
    return target
