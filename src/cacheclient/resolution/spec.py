"""The request syntax: the part of Spack's spec language that selects binaries.

Supported: ``name``, ``@versions`` (see :mod:`cacheclient.resolution.versions`), ``+v ~v -v``
(boolean variants), ``k=v`` and ``k=a,b`` (single and multi-valued variants),
``%compiler[@versions]``, ``platform= os= target=`` and ``arch=platform-os-target``, and
``/hashprefix`` (at least 7 characters). A new package name starts a new request, so
``"zlib@1.3 demo-tool+docs"`` is two.

Variants use Spack's *satisfies* semantics: a build satisfies ``k=a,b`` when ``a`` and ``b`` are
among its values for ``k`` (it may have more).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cacheclient.errors import UsageError
from cacheclient.model import VariantValue
from cacheclient.resolution.versions import VersionConstraint, parse_constraint

__all__ = [
    "MIN_HASH_PREFIX",
    "Request",
    "VariantRequest",
    "parse_request",
    "parse_requests",
]


def __dir__() -> list[str]:
    return __all__


MIN_HASH_PREFIX = 7
"""The shortest ``/hash`` prefix accepted (Spack's ``{hash:7}``)."""

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*?"
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<kv>(?P<key>[A-Za-z0-9_][A-Za-z0-9_.-]*)==?(?P<value>[^\s=@%/^~+]*))
  | (?P<version>@(?P<vtext>[A-Za-z0-9_.:,=-]*))
  | (?P<compiler>%\s*(?P<cname>[A-Za-z0-9_][A-Za-z0-9_.-]*)(?:@(?P<cver>[A-Za-z0-9_.:,=-]*))?)
  | (?P<bool>(?P<sign>\+\+?|~~?|(?<![^\s])-)(?P<vname>[A-Za-z0-9_][A-Za-z0-9_.-]*))
  | (?P<hash>/(?P<htext>[A-Za-z0-9]*))
  | (?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*)
    """,
    re.VERBOSE,
)
del _NAME

_ARCH_KEYS = frozenset({"platform", "os", "target", "arch", "architecture"})


@dataclass(frozen=True, kw_only=True, slots=True)
class VariantRequest:
    """One requested variant: a boolean, or a set of values that must all be present."""

    name: str
    value: bool | tuple[str, ...]

    def describe(self) -> str:
        if self.value is True:
            return f"+{self.name}"
        if self.value is False:
            return f"~{self.name}"
        return f"{self.name}={','.join(self.value)}"

    def satisfied_by(self, actual: VariantValue | None) -> bool:
        """Whether a build whose variant has value *actual* (None: absent) satisfies this."""
        if actual is None:
            return False
        if isinstance(self.value, bool):
            if isinstance(actual, bool):
                return actual is self.value
            return isinstance(actual, str) and actual.lower() == str(self.value).lower()
        if isinstance(actual, bool):
            return self.value == (str(actual).lower(),)
        have = {actual} if isinstance(actual, str) else set(actual)
        return set(self.value) <= have


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """A parsed request. ``text`` is what the user wrote (for messages)."""

    text: str
    name: str | None = None
    versions: VersionConstraint | None = None
    variants: tuple[VariantRequest, ...] = ()
    compiler: str | None = None
    compiler_versions: VersionConstraint | None = None
    platform: str | None = None
    os: str | None = None
    target: str | None = None
    hash_prefix: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class _Builder:
    start: int
    name: str | None = None
    versions: VersionConstraint | None = None
    variants: dict[str, VariantRequest] = field(default_factory=dict)
    compiler: str | None = None
    compiler_versions: VersionConstraint | None = None
    arch: dict[str, str] = field(default_factory=dict)
    hash_prefix: str | None = None

    def build(self, text: str) -> Request:
        return Request(
            text=text,
            name=self.name,
            versions=self.versions,
            variants=tuple(self.variants[k] for k in sorted(self.variants)),
            compiler=self.compiler,
            compiler_versions=self.compiler_versions,
            platform=self.arch.get("platform"),
            os=self.arch.get("os"),
            target=self.arch.get("target"),
            hash_prefix=self.hash_prefix,
        )

    def empty(self) -> bool:
        return (
            self.name is None
            and self.versions is None
            and not self.variants
            and self.compiler is None
            and not self.arch
            and self.hash_prefix is None
        )


class _Parser:
    def __init__(self, text: str, *, anonymous: bool = False) -> None:
        self.text = text
        self.anonymous = anonymous
        self.requests: list[Request] = []
        self.current = _Builder(start=0)

    def fail(self, pos: int, problem: str) -> UsageError:
        return UsageError(f"invalid spec {self.text!r}: at position {pos + 1}: {problem}")

    def finish(self, end: int) -> None:
        if self.current.empty():
            return
        chunk = self.text[self.current.start : end].strip()
        self.requests.append(self.current.build(chunk))

    def parse(self) -> list[Request]:
        pos = 0
        text = self.text
        if "^" in text:
            raise self.fail(text.index("^"), "dependency constraints ('^') are not supported")
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise self.fail(pos, f"unexpected {text[pos]!r}")
            kind = m.lastgroup
            self.token(m, pos, kind)
            pos = m.end()
        self.finish(len(text))
        if not self.requests:
            raise UsageError(f"invalid spec {text!r}: empty")
        for req in self.requests:
            if req.name is None and req.hash_prefix is None and not self.anonymous:
                raise UsageError(
                    f"invalid spec {text!r}: {req.text!r} names no package "
                    "(a spec starts with a name or a /hash)"
                )
        return self.requests

    def token(self, m: re.Match[str], pos: int, kind: str | None) -> None:
        cur = self.current
        if m.group("ws"):
            return
        if m.group("kv"):
            self.key_value(m, pos)
        elif m.group("version"):
            if cur.versions is not None:
                raise self.fail(pos, "a second version constraint")
            if not m.group("vtext"):
                raise self.fail(pos, "'@' must be followed by a version")
            try:
                cur.versions = parse_constraint(m.group("vtext"))
            except ValueError as exc:
                raise self.fail(pos, str(exc)) from None
        elif m.group("compiler"):
            if cur.compiler is not None:
                raise self.fail(pos, "a second compiler")
            cur.compiler = m.group("cname")
            cver = m.group("cver")
            if cver is not None:
                try:
                    cur.compiler_versions = parse_constraint(cver)
                except ValueError as exc:
                    raise self.fail(pos, str(exc)) from None
        elif m.group("bool"):
            name = m.group("vname")
            self.add_variant(pos, VariantRequest(name=name, value=m.group("sign")[0] == "+"))
        elif m.group("hash"):
            prefix = m.group("htext").lower()
            if len(prefix) < MIN_HASH_PREFIX:
                raise self.fail(
                    pos, f"hash prefix '/{prefix}' is shorter than {MIN_HASH_PREFIX} characters"
                )
            if cur.hash_prefix is not None:
                # ``/h1 /h2``: a spec has one hash, so a second one starts the next spec.
                self.finish(pos)
                self.current = _Builder(start=pos)
            self.current.hash_prefix = prefix
        else:
            name = m.group("name")
            if not cur.empty():
                self.finish(pos)
                self.current = _Builder(start=pos)
            self.current.name = name
            del kind

    def add_variant(self, pos: int, variant: VariantRequest) -> None:
        if variant.name in self.current.variants:
            raise self.fail(pos, f"variant {variant.name!r} given twice")
        self.current.variants[variant.name] = variant

    def key_value(self, m: re.Match[str], pos: int) -> None:
        key, value = m.group("key"), m.group("value")
        if not value:
            raise self.fail(pos, f"no value after '{key}='")
        if key in _ARCH_KEYS:
            if key in ("arch", "architecture"):
                parts = value.split("-")
                if len(parts) != 3 or not all(parts):
                    raise self.fail(pos, f"arch={value} is not platform-os-target")
                pairs = dict(zip(("platform", "os", "target"), parts, strict=False))
            else:
                pairs = {key: value}
            for k, v in pairs.items():
                if k in self.current.arch and self.current.arch[k] != v:
                    raise self.fail(pos, f"conflicting {k}= values")
                self.current.arch[k] = v
            return
        values = tuple(sorted(v for v in value.split(",")))
        if any(not v for v in values):
            raise self.fail(pos, f"empty value in '{key}={value}'")
        self.add_variant(pos, VariantRequest(name=key, value=values))


def parse_request(text: str, *, anonymous: bool = False) -> Request:
    """Parse exactly one request; :class:`UsageError` if *text* holds none or several.

    *anonymous*: accept a request that names no package (``target=x86_64_v3``), as a query
    over installed builds does."""
    found = _Parser(text, anonymous=anonymous).parse()
    if len(found) != 1:
        raise UsageError(f"invalid spec {text!r}: expected one spec, found {len(found)}")
    return found[0]


def parse_requests(args: Sequence[str], *, anonymous: bool = False) -> list[Request]:
    """Parse command-line words into requests (*anonymous*: as for :func:`parse_request`).

    Each word is parsed on its own; a word that does not start with a name (``+docs``,
    ``@1.2``, ``target=zen4``) adds to the request before it, as in Spack's command line.

    >>> [r.name for r in parse_requests(["zlib@1.3", "+shared", "demo-tool"])]
    ['zlib', 'demo-tool']
    """
    joined = " ".join(a.strip() for a in args)
    if not joined.strip():
        raise UsageError("no spec given")
    return _Parser(joined, anonymous=anonymous).parse()
