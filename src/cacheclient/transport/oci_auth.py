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
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ENV_PASSWORD",
    "ENV_USERNAME",
    "Challenge",
    "Credentials",
    "TokenCache",
    "docker_config_path",
    "find_credentials",
    "parse_challenge",
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


@dataclass
class TokenCache:
    """Bearer tokens by ``(realm, service, scope)``, each until its expiry (thread-safe)."""

    clock: object = field(default=time.monotonic)
    _tokens: dict[tuple[str, str, str], tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _now(self) -> float:
        clock = self.clock
        return float(clock()) if callable(clock) else time.monotonic()

    def get(self, key: tuple[str, str, str]) -> str | None:
        with self._lock:
            hit = self._tokens.get(key)
            if hit is None:
                return None
            token, expires = hit
            if self._now() >= expires:
                del self._tokens[key]
                return None
            return token

    def put(self, key: tuple[str, str, str], token: str, lifetime: float) -> None:
        with self._lock:
            self._tokens[key] = (token, self._now() + max(0.0, lifetime - _EXPIRY_MARGIN))

    def drop(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._tokens.pop(key, None)
