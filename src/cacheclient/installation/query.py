"""Questions about what a root holds: which builds match a spec, what depends on what.

Pure functions over the install database's records (:mod:`.installdb`), in the spirit of
``spack find``: a request (:mod:`cacheclient.spec`) matches an installed build on its name,
version range, ``/hash`` prefix, variants, compiler and ``platform/os/target``. The variants,
compiler and architecture of an installed build come from the Spack-like spec line the
installer recorded (``name@version +v k=v %c arch=p-o-t /hash7``); a line that cannot be
parsed (the database is read back from disk: untrusted) only loses those details, and such a
build still matches on name, version and hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cacheclient.errors import NoMatchError, UsageError
from cacheclient.installation.installdb import InstallRecord
from cacheclient.resolution.spec import Request, parse_request, parse_requests

__all__ = [
    "InstalledSpec",
    "closure",
    "dependents",
    "describe",
    "match",
    "match_one",
    "parse_installed",
    "prefix_problem",
]


def __dir__() -> list[str]:
    return __all__


@dataclass(frozen=True, kw_only=True, slots=True)
class InstalledSpec:
    """What the recorded spec line of an installed build says beyond name and version."""

    variants: Mapping[str, bool | tuple[str, ...]] = field(default_factory=dict)
    compiler: str | None = None
    platform: str | None = None
    os: str | None = None
    target: str | None = None

    @property
    def arch(self) -> str | None:
        if self.platform and self.os and self.target:
            return f"{self.platform}-{self.os}-{self.target}"
        return None


def parse_installed(record: InstallRecord) -> InstalledSpec:
    """The variants, compiler and architecture in *record*'s spec line (empty if unreadable)."""
    try:
        parsed = parse_request(record.spec)
    except UsageError:
        return InstalledSpec()
    compiler = parsed.compiler
    if compiler is not None and parsed.compiler_versions is not None:
        compiler = f"{compiler}@{parsed.compiler_versions}"
    return InstalledSpec(
        variants={v.name: v.value for v in parsed.variants},
        compiler=compiler,
        platform=parsed.platform,
        os=parsed.os,
        target=parsed.target,
    )


def _compiler_matches(have: str | None, req: Request) -> bool:
    if req.compiler is None:
        return True
    if have is None:
        return False
    name, _, version = have.partition("@")
    if name != req.compiler:
        return False
    if req.compiler_versions is None:
        return True
    return bool(version) and req.compiler_versions.contains(version)


def _matches(record: InstallRecord, req: Request) -> bool:
    if req.name is not None and record.name != req.name:
        return False
    if req.hash_prefix is not None and not record.hash.startswith(req.hash_prefix):
        return False
    if req.versions is not None and not req.versions.contains(record.version):
        return False
    if not (req.variants or req.compiler or req.platform or req.os or req.target):
        return True
    spec = parse_installed(record)
    for key in ("platform", "os", "target"):
        wanted = getattr(req, key)
        if wanted is not None and getattr(spec, key) != wanted:
            return False
    for variant in req.variants:
        if not variant.satisfied_by(spec.variants.get(variant.name)):
            return False
    return _compiler_matches(spec.compiler, req)


def _order(record: InstallRecord) -> tuple[str, str, str]:
    return (record.name, record.version, record.hash)


def match(
    records: Mapping[str, InstallRecord], requests: Sequence[str | Request] = ()
) -> list[InstallRecord]:
    """The installed builds matching any of *requests* (all of them when none is given),
    sorted by name, version and hash. Text requests may name no package (``target=...``)."""
    if not requests:
        return sorted(records.values(), key=_order)
    texts = [r for r in requests if isinstance(r, str)]
    parsed = [r for r in requests if isinstance(r, Request)]
    if texts:
        parsed += parse_requests(texts, anonymous=True)
    return sorted(
        (rec for rec in records.values() if any(_matches(rec, req) for req in parsed)),
        key=_order,
    )


def describe(record: InstallRecord) -> str:
    """``name@version /hash7`` for messages."""
    return f"{record.name}@{record.version} /{record.hash[:7]}"


def match_one(records: Mapping[str, InstallRecord], request: Request, where: str) -> InstallRecord:
    """The one installed build matching *request*.

    :raises NoMatchError: none matches, or several do (the message lists them).
    """
    found = [rec for rec in sorted(records.values(), key=_order) if _matches(rec, request)]
    if not found:
        same_name = [rec for rec in records.values() if rec.name == request.name]
        hint = ""
        if same_name:
            hint = " (installed: " + ", ".join(describe(r) for r in sorted(same_name, key=_order))
            hint += ")"
        raise NoMatchError(f"no installed build matches {request.text!r} in {where}{hint}")
    if len(found) > 1:
        listed = ", ".join(describe(r) for r in found)
        raise NoMatchError(
            f"{request.text!r} matches {len(found)} installed builds in {where}: {listed}; "
            "add a version, variants or /HASH to choose one"
        )
    return found[0]


def prefix_problem(prefix: str) -> str | None:
    """Why a recorded prefix cannot be handed to a shell or a search path (None: it can).

    The database is read back from disk: a prefix that is relative, holds a control character
    (a newline would split ``$(cacheclient location ...)``) or a ``:`` (it would add entries to
    ``PATH``) is refused rather than printed."""
    if not prefix.startswith("/"):
        return "is not an absolute path"
    if not prefix.isprintable():
        return "holds a control character"
    if ":" in prefix:
        return "holds ':', which a search path cannot express"
    return None


def dependents(records: Mapping[str, InstallRecord], dag_hash: str) -> list[InstallRecord]:
    """The installed builds that record *dag_hash* as a runtime dependency."""
    return sorted(
        (r for r in records.values() if dag_hash in r.dependencies and r.hash != dag_hash),
        key=_order,
    )


def closure(
    records: Mapping[str, InstallRecord], roots: Iterable[str]
) -> tuple[list[InstallRecord], list[str]]:
    """The runtime closure of *roots*: ``(records, missing hashes)``.

    Records come dependencies first (post-order, each once); a dependency the database does
    not hold (an external, or one removed with ``uninstall --force``) is listed in *missing*.
    The walk is iterative and tolerates cycles (the database is untrusted).
    """
    out: list[InstallRecord] = []
    missing: list[str] = []
    done: set[str] = set()
    for root in roots:
        stack: list[tuple[str, bool]] = [(root, False)]
        on_path: set[str] = set()
        while stack:
            dag_hash, expanded = stack.pop()
            if expanded:
                on_path.discard(dag_hash)
                rec = records.get(dag_hash)
                if rec is not None and dag_hash not in done:
                    done.add(dag_hash)
                    out.append(rec)
                continue
            if dag_hash in done or dag_hash in on_path:
                continue
            rec = records.get(dag_hash)
            if rec is None:
                if dag_hash not in missing:
                    missing.append(dag_hash)
                done.add(dag_hash)
                continue
            on_path.add(dag_hash)
            stack.append((dag_hash, True))
            for dep in reversed(rec.dependencies):
                if dep not in done and dep not in on_path:
                    stack.append((dep, False))
    return out, missing
