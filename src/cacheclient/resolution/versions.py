"""Spack's version ordering and version constraints (``@1.2``, ``@=1.2``, ``@1:2``, ``@:2,3:``).

The order follows Spack's documented rules (not PEP 440):

1. A version string is split into components at the delimiters ``.``, ``-``, ``_`` and at every
   boundary between letters and digits (``1.2.0-rc1`` → ``1 2 0 rc 1``).
2. Component lists are compared lexicographically; a list that is a prefix of another is smaller
   (``1.2 < 1.2.0 < 1.2.0-rc1``).
3. Components compare as: the develop-like strings are largest, ordered
   ``develop > main > master > head > trunk > nightly > stable``; then numbers, compared as
   numbers; then every other string, compared alphabetically (``1.2a < 1.2.1``).

A constraint is a comma-separated list of alternatives; each one is ``=V`` (exactly ``V``),
``V`` (``V`` and every version that has ``V`` as a component prefix: ``1.2`` matches ``1.2.5``),
``lo:hi`` (inclusive, with ``hi`` matched as a prefix: ``:1.2`` matches ``1.2.9``), ``lo:``
or ``:hi``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

__all__ = [
    "INFINITY_VERSIONS",
    "Version",
    "VersionConstraint",
    "VersionRange",
    "parse_constraint",
    "parse_version",
]


def __dir__() -> list[str]:
    return __all__


INFINITY_VERSIONS: tuple[str, ...] = (
    "stable",
    "nightly",
    "trunk",
    "head",
    "master",
    "main",
    "develop",
)
"""Develop-like components, smallest first; all of them sort above every number."""

_VALID = re.compile(r"^[A-Za-z0-9_.-]+$")
_COMPONENT = re.compile(r"[0-9]+|[A-Za-z]+")

# A component becomes a sort key whose first item is its class:
# 0 = ordinary string, 1 = number, 2 = develop-like string.
_Key = tuple[int, int, str]


def _component_key(text: str) -> _Key:
    if text.isdigit():
        return (1, int(text), "")
    lowered = text.lower()
    if lowered in INFINITY_VERSIONS:
        return (2, INFINITY_VERSIONS.index(lowered), "")
    return (0, 0, text)


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class Version:
    """A concrete version; ordered as Spack orders versions.

    >>> Version.parse("1.10") > Version.parse("1.9a") > Version.parse("1.9")
    True
    >>> Version.parse("develop") > Version.parse("99.0")
    True
    """

    string: str
    key: tuple[_Key, ...] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse *text*; ``ValueError`` if it is empty or holds other characters."""
        text = text.strip()
        if not text or not _VALID.match(text) or not _COMPONENT.search(text):
            raise ValueError(f"invalid version {text!r}")
        return cls(text, tuple(_component_key(c) for c in _COMPONENT.findall(text)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __str__(self) -> str:
        return self.string

    def has_prefix(self, prefix: Version) -> bool:
        """Whether *prefix*'s components start this version's (``1.2`` is a prefix of ``1.2.5``)."""
        return self.key[: len(prefix.key)] == prefix.key


def parse_version(text: str) -> Version:
    """Shorthand for :meth:`Version.parse`."""
    return Version.parse(text)


@dataclass(frozen=True, slots=True)
class VersionRange:
    """One alternative of a constraint: ``lo:hi`` (either end optional), ``V`` or ``=V``."""

    lo: Version | None
    hi: Version | None
    exact: bool = False

    def contains(self, version: Version) -> bool:
        """Whether *version* satisfies this alternative."""
        if self.exact:
            return self.lo is not None and version.key == self.lo.key
        if self.lo is not None and version < self.lo:
            return False
        return not (self.hi is not None and version > self.hi and not version.has_prefix(self.hi))

    @property
    def pins(self) -> bool:
        """Whether this alternative names one version (``=V`` or a bare ``V``)."""
        return self.exact or (self.lo is not None and self.lo == self.hi)

    def __str__(self) -> str:
        if self.exact:
            return f"={self.lo}"
        if self.lo is not None and self.lo == self.hi:
            return str(self.lo)
        return f"{self.lo or ''}:{self.hi or ''}"


@dataclass(frozen=True, slots=True)
class VersionConstraint:
    """A comma-separated list of :class:`VersionRange`; satisfied if any alternative is."""

    ranges: tuple[VersionRange, ...]

    def contains(self, version: Version | str) -> bool:
        """Whether *version* satisfies the constraint (an unparsable version never does)."""
        if isinstance(version, str):
            try:
                version = Version.parse(version)
            except ValueError:
                return False
        return any(r.contains(version) for r in self.ranges)

    @property
    def pins(self) -> bool:
        """Whether every alternative names a single version (the user pinned it)."""
        return all(r.pins for r in self.ranges)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


def _parse_alternative(text: str) -> VersionRange:
    if text.startswith("="):
        v = Version.parse(text[1:])
        return VersionRange(v, v, exact=True)
    if ":" in text:
        lo_text, sep, hi_text = text.partition(":")
        if ":" in hi_text:
            raise ValueError(f"invalid version range {text!r}: more than one ':'")
        lo = Version.parse(lo_text) if lo_text else None
        hi = Version.parse(hi_text) if hi_text else None
        if lo is not None and hi is not None and lo > hi and not lo.has_prefix(hi):
            raise ValueError(f"empty version range {text!r}: {lo} is above {hi}")
        del sep
        return VersionRange(lo, hi)
    v = Version.parse(text)
    return VersionRange(v, v)


def parse_constraint(text: str) -> VersionConstraint:
    """Parse the text after ``@``; ``ValueError`` naming the bad part.

    >>> parse_constraint("1.2").contains("1.2.5"), parse_constraint("=1.2").contains("1.2.5")
    (True, False)
    """
    parts = text.split(",")
    if not text or any(not p.strip() for p in parts):
        raise ValueError(f"empty version in {text!r}")
    return VersionConstraint(tuple(_parse_alternative(p.strip()) for p in parts))
