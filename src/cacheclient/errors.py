"""The exception hierarchy: every user-facing failure is a :class:`CacheClientError`.

Each subclass carries an ``exit_code`` (what the CLI returns) and structured fields, and its
``str()`` is one line a person can act on: it names the file, URL or spec and what was wrong.
An exception escaping the library that is *not* a ``CacheClientError`` is a bug.

Exit codes (documented in README):

== ==============================================================
0  success
1  internal error (a bug: please report it)
2  usage error (bad command line, bad spec syntax, bad manifest)
3  nothing matched a request (resolution failed)
4  verification failed (signature, checksum, untrusted key)
5  network failure: no mirror could provide what was needed
6  unsafe or broken archive; installation refused
7  metadata error (malformed index, page, manifest or spec file)
8  local store or install root error (disk full, read-only, lock)
9  relocation impossible (new prefix longer than the old one)
== ==============================================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "CacheClientError",
    "ConfigError",
    "DownloadError",
    "InstallError",
    "MetadataError",
    "MissingBuildError",
    "NoMatchError",
    "RelocationError",
    "StoreError",
    "UnsafeArchiveError",
    "UsageError",
    "VerificationError",
    "printable",
    "printable_lines",
    "redact",
]


def __dir__() -> list[str]:
    return __all__


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), *range(0x7F, 0xA0)]}
_CONTROL_BUT_LINES = {c: shown for c, shown in _CONTROL.items() if c not in (9, 10)}


_USERINFO = re.compile(r"://[^/?#@\s]*@")
"""Starts with a literal, so a long document (a JSON closure of thousands of builds) is scanned
in a blink; whether a scheme precedes it is checked for each match."""
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")


def redact(text: str) -> str:
    """*text* with the ``user:password@`` part of every URL in it replaced by ``***@``:
    credentials are never printed or written to a file (give them in ``~/.netrc``).

    >>> redact("fetching https://me:secret@mirror.example/cache (as me@example)")
    'fetching https://***@mirror.example/cache (as me@example)'
    """

    def hide(match: re.Match[str]) -> str:
        start = match.start()
        return "://***@" if start and text[start - 1] in _SCHEME_CHARS else match.group()

    return _USERINFO.sub(hide, text)


def printable(text: str) -> str:
    """*text* with control characters (terminal escapes, newlines, NUL, C1 codes) shown as
    ``\\xNN``: text from servers, files and metadata goes through it before a terminal."""
    return text.translate(_CONTROL)


def printable_lines(text: str) -> str:
    """Like :func:`printable`, but tabs and newlines stay: a command's whole output, whose
    fields come from metadata (a package name carrying a terminal escape is shown, not run).

    >>> printable_lines("needs \\x1b[2Jdep@1\\n")
    'needs \\\\x1b[2Jdep@1\\n'
    """
    return text.translate(_CONTROL_BUT_LINES)


class CacheClientError(Exception):
    """Root of every error cacheclient raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(CacheClientError, ValueError):
    """The caller asked for something malformed (bad spec syntax, unknown option value)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or CI manifest is invalid; ``problems`` lists every problem."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = f"{source}: {self.problems[0]}"
        else:
            text = f"{source}: {len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(text)


class NoMatchError(CacheClientError, LookupError):
    """No build satisfied a request on the given host."""

    exit_code = 3


class VerificationError(CacheClientError):
    """A signature, key or checksum did not verify.

    ``expected``/``actual`` hold digests for checksum failures; ``url`` and ``mirror`` say
    where the bytes came from; ``key_id`` names a signing key that is not trusted.
    """

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        mirror: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
        key_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.mirror = mirror
        self.expected = expected
        self.actual = actual
        self.key_id = key_id
        """The signing key's ID when the signer is not trusted (the CLI prints the commands
        that fetch and trust it)."""


class DownloadError(CacheClientError, OSError):
    """A transfer failed and no other mirror could provide the artifact."""

    exit_code = 5

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class MissingBuildError(DownloadError):
    """No mirror holds the build (every mirror answered "not found"), or, offline, the store
    does not. Exit 5 when it ends a run; a resolver treats it as a hole in a closure."""


class UnsafeArchiveError(CacheClientError):
    """A tarball tried to escape its prefix or holds something we refuse to unpack."""

    exit_code = 6

    def __init__(self, message: str, *, archive: str | None = None, member: str | None = None):
        super().__init__(message)
        self.archive = archive
        self.member = member


class InstallError(CacheClientError):
    """Installing a build failed for a reason other than an unsafe archive."""

    exit_code = 6


class MetadataError(CacheClientError, ValueError):
    """Metadata (index, page, manifest, spec file) is malformed.

    ``source`` is the file or URL, ``path`` the key path inside it
    (e.g. ``spec_details[12].hash``).
    """

    exit_code = 7

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + problem)


class StoreError(CacheClientError, OSError):
    """The local store or install root cannot be used (read-only, full, locked)."""

    exit_code = 8


class RelocationError(CacheClientError):
    """A build cannot be relocated to the requested prefix."""

    exit_code = 9
