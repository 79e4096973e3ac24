"""Registry credentials and the token dance (Docker Registry API v2 authentication).

A registry answers an unauthenticated request with ``401`` and a ``WWW-Authenticate`` challenge:

* ``Basic realm="..."``: send ``Authorization: Basic`` with the configured user and password.
* ``Bearer realm="https://auth.example/token",service="registry.example",scope="repository:
  org/cache:pull"``: GET the realm with ``service`` and ``scope`` (and the Basic credentials,
  when there are some; anonymous otherwise), read ``token`` (or ``access_token``) from the JSON
  answer and retry with ``Authorization: Bearer <token>``. A token is reused for its
  ``expires_in`` seconds (60 when not given), per realm, service and scope.

Credentials, first match wins:

1. ``CACHECLIENT_OCI_USERNAME`` and ``CACHECLIENT_OCI_PASSWORD`` (for every registry);
2. the Docker client's ``config.json`` (``$DOCKER_CONFIG/config.json``, else
   ``~/.docker/config.json``): its ``auths`` entry for the registry host (``host``,
   ``host:port``, or the same as an ``https://`` URL), as a base64 ``auth`` of ``user:password``
   or as ``username``/``password``. Credential helpers (``credsStore``/``credHelpers``) are not
   run.

Credentials are never printed, logged, written anywhere or sent over plain HTTP to a host other
than the registry the user addressed with ``oci+http://``.

:class:`RegistrySession` sends requests to one registry and answers its challenges; what it
learns (tokens, whether Basic is wanted) is shared by every transport instance of the process.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from cacheclient.errors import DownloadError
from cacheclient.transport.base import TransportOptions, _parse_retry_after, _Transient

__all__ = [
    "ENV_PASSWORD",
    "ENV_USERNAME",
    "Challenge",
    "Credentials",
    "RegistrySession",
    "TokenCache",
    "TokenKey",
    "docker_config_path",
    "find_credentials",
    "parse_challenge",
    "short",
]


def __dir__() -> list[str]:
    return __all__


ENV_USERNAME = "CACHECLIENT_OCI_USERNAME"
ENV_PASSWORD = "CACHECLIENT_OCI_PASSWORD"  # noqa: S105 - the variable's name, not a password
DEFAULT_TOKEN_LIFETIME = 60.0
"""Seconds a token without ``expires_in`` is reused (the Docker token spec's default)."""
_EXPIRY_MARGIN = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Credentials:
    """A user name and password (or access token used as one). ``repr`` hides the secret."""

    username: str
    password: str = field(repr=False)
    source: str
    """Where they came from (an environment variable's or a file's name), for messages."""

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, kw_only=True, slots=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str
    """``bearer`` or ``basic`` (lower case)."""
    params: Mapping[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``WWW-Authenticate``; ``None`` when it is empty or not a scheme we know.

    >>> c = parse_challenge('Bearer realm="https://a/token",service="reg",scope="repository:x:pull"')
    >>> c.scheme, c.realm, c.params["scope"]
    ('bearer', 'https://a/token', 'repository:x:pull')
    """
    text = header.strip()
    if not text:
        return None
    scheme, _, rest = text.partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            break
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (bare or "")
        params[match.group(1).lower()] = value
        pos = match.end()
    return Challenge(scheme=scheme, params=params)


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    env = os.environ if environ is None else environ
    folder = env.get("DOCKER_CONFIG")
    if folder:
        return Path(folder).expanduser() / "config.json"
    home = env.get("HOME")
    base = Path(home) if home else Path.home()
    return base / ".docker" / "config.json"


def _host_keys(host: str) -> list[str]:
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v2/", f"https://{host}/"]
    if host in ("index.docker.io", "registry-1.docker.io", "docker.io"):
        keys.append("https://index.docker.io/v1/")
    return keys


def _from_docker_config(host: str, path: Path) -> Credentials | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    for key in _host_keys(host):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                decoded = base64.b64decode(auth, validate=False).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                continue
            user, sep, password = decoded.partition(":")
            if sep:
                return Credentials(username=user, password=password, source=str(path))
        name, secret = entry.get("username"), entry.get("password")
        if isinstance(name, str) and isinstance(secret, str) and name:
            return Credentials(username=name, password=secret, source=str(path))
    return None


def find_credentials(host: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials configured for registry *host* (``name[:port]``), or ``None``."""
    env = os.environ if environ is None else environ
    user, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
    if user and password is not None:
        return Credentials(username=user, password=password, source=f"{ENV_USERNAME}")
    return _from_docker_config(host, docker_config_path(env))


TokenKey = tuple[str, ...]
"""``(realm, service, scope, user)``: a token is only reused for the same identity."""


@dataclass
class TokenCache:
    """Bearer tokens by :data:`TokenKey`, each until its expiry (thread-safe)."""

    clock: Callable[[], float] = field(default=time.monotonic)
    _tokens: dict[TokenKey, tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _now(self) -> float:
        return self.clock()

    def get(self, key: TokenKey) -> str | None:
        with self._lock:
            hit = self._tokens.get(key)
            if hit is None:
                return None
            token, expires = hit
            if self._now() >= expires:
                del self._tokens[key]
                return None
            return token

    def put(self, key: TokenKey, token: str, lifetime: float) -> None:
        with self._lock:
            self._tokens[key] = (token, self._now() + max(0.0, lifetime - _EXPIRY_MARGIN))

    def drop(self, key: TokenKey) -> None:
        with self._lock:
            self._tokens.pop(key, None)


class _AuthState:
    """What a process learnt about one registry's authentication, shared by every transport
    instance (commands may use several, with different options): its tokens, the token key
    used per scope, and whether it wants Basic auth. Only in memory, never written."""

    def __init__(self) -> None:
        self.tokens = TokenCache()
        self.basic = False
        self.scopes: dict[str, TokenKey] = {}


_auth_states: dict[tuple[str, str], _AuthState] = {}
_auth_lock = threading.Lock()


def _auth_state(scheme: str, host: str) -> _AuthState:
    with _auth_lock:
        return _auth_states.setdefault((scheme, host), _AuthState())


class RegistrySession:
    """Requests to one ``scheme://host``, authenticated as its challenges ask."""

    def __init__(
        self, scheme: str, host: str, session: requests.Session, options: TransportOptions
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.session = session
        self.options = options
        self.auth = _auth_state(scheme, host)
        self.tokens = self.auth.tokens

    @property
    def credentials(self) -> Credentials | None:
        """Looked up afresh each time a challenge is answered (the environment may change
        between commands of one process); never stored beyond this object."""
        return find_credentials(self.host)

    def _auth_header(self, scope: str) -> str | None:
        key = self.auth.scopes.get(scope)
        if key is not None:
            token = self.tokens.get(key)
            if token is not None:
                return f"Bearer {token}"
        creds = self.credentials if self.auth.basic else None
        return creds.basic_header() if creds is not None else None

    def _timeout(self) -> tuple[float, float]:
        return (self.options.connect_timeout, self.options.read_timeout)

    def send(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request, answering an auth challenge once. Connection errors and 5xx/429
        raise ``_Transient``; every other status is returned for the caller to judge, except a
        final 401/403, which raises :class:`DownloadError` naming what to configure."""
        sent = dict(headers or {})
        auth = self._auth_header(scope)
        if auth:
            sent["Authorization"] = auth
        response = self._once(method, url, sent, data, stream)
        if response.status_code == 401:
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            response.close()
            if challenge is None:
                raise self._denied(url, 401, "no usable WWW-Authenticate challenge")
            stale = self.auth.scopes.get(scope)
            if auth and auth.startswith("Bearer ") and stale is not None:
                self.tokens.drop(stale)  # refused before its expiry (revoked, clock skew)
            sent["Authorization"] = self._answer(challenge, scope, url)
            if hasattr(data, "seek"):
                data.seek(0)
            response = self._once(method, url, sent, data, stream)
        if response.status_code in (401, 403):
            status = response.status_code
            response.close()
            raise self._denied(url, status, None)
        if response.status_code == 429 or response.status_code >= 500:
            reason = f"HTTP {response.status_code} {response.reason or ''}".strip()
            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            response.close()
            raise _Transient(reason, retry_after)
        return response

    def _once(
        self, method: str, url: str, headers: dict[str, str], data: Any, stream: bool
    ) -> requests.Response:
        try:
            return self.session.request(
                method,
                url,
                headers=headers,
                data=data,
                stream=stream,
                timeout=self._timeout(),
                allow_redirects=True,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(f"connection failed: {short(exc)}") from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise _Transient(f"transfer interrupted: {short(exc)}") from None
        except requests.RequestException as exc:
            raise DownloadError(f"{url}: {short(exc)}", url=url) from None

    def _answer(self, challenge: Challenge, scope: str, url: str) -> str:
        creds = self.credentials
        if challenge.scheme == "basic":
            if creds is None:
                raise self._denied(url, 401, None)
            self.auth.basic = True
            return creds.basic_header()
        realm = challenge.realm
        if not realm:
            raise self._denied(url, 401, "the Bearer challenge names no realm")
        service = challenge.params.get("service", "")
        wanted = challenge.params.get("scope") or scope
        key = (realm, service, wanted, creds.username if creds is not None else "")
        token = self.tokens.get(key)
        if token is None:
            token, lifetime = self._fetch_token(realm, service, wanted, creds, url)
            self.tokens.put(key, token, lifetime)
        self.auth.scopes[scope] = key
        return f"Bearer {token}"

    def _fetch_token(
        self, realm: str, service: str, scope: str, creds: Credentials | None, url: str
    ) -> tuple[str, float]:
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise self._denied(url, 401, f"the token realm {realm!r} is not an http(s) URL")
        params: list[tuple[str, str]] = [("client_id", "cacheclient")]
        if service:
            params.append(("service", service))
        params += [("scope", s) for s in scope.split(" ") if s]
        headers: dict[str, str] = {}
        # Credentials travel to a token realm only over HTTPS, or over plain HTTP when the user
        # addressed this very registry with oci+http:// (a test or lab registry).
        plain_ok = parts.scheme == "http" and self.scheme == "http"
        if creds is not None and (parts.scheme == "https" or plain_ok):
            headers["Authorization"] = creds.basic_header()
        try:
            response = self.session.get(
                realm, params=params, headers=headers, timeout=self._timeout()
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(f"token service {parts.netloc}: {short(exc)}") from None
        except requests.RequestException as exc:
            raise DownloadError(f"token service {parts.netloc}: {short(exc)}") from None
        with response:
            if response.status_code in (401, 403):
                raise self._denied(url, response.status_code, "the token service refused")
            if response.status_code == 429 or response.status_code >= 500:
                raise _Transient(f"token service {parts.netloc}: HTTP {response.status_code}")
            if response.status_code != 200:
                raise DownloadError(
                    f"token service {parts.netloc}: HTTP {response.status_code}", url=realm
                )
            try:
                answer = response.json()
            except ValueError:
                answer = None
        token = None
        lifetime = 60.0
        if isinstance(answer, dict):
            token = answer.get("token") or answer.get("access_token")
            expires = answer.get("expires_in")
            if isinstance(expires, (int, float)) and not isinstance(expires, bool) and expires > 0:
                lifetime = float(expires)
        if not isinstance(token, str) or not token:
            raise DownloadError(
                f"token service {parts.netloc}: the answer holds no token", url=realm
            )
        return token, lifetime

    def _denied(self, url: str, status: int, detail: str | None) -> DownloadError:
        creds = self.credentials
        registry = f"{'oci' if self.scheme == 'https' else 'oci+http'}://{self.host}"
        what = "authentication required" if status == 401 else "access denied"
        if creds is None:
            hint = (
                f"configure credentials for {self.host}: set {ENV_USERNAME} and {ENV_PASSWORD}, "
                f"or log in with `docker login {self.host}` (~/.docker/config.json)"
            )
        else:
            hint = (
                f"the credentials from {creds.source} were not accepted "
                "(check the user, the token's scopes and the repository name)"
            )
        extra = f" ({detail})" if detail else ""
        return DownloadError(f"registry {registry}: {what} (HTTP {status}){extra}: {hint}", url=url)


def short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:197] + "..."
