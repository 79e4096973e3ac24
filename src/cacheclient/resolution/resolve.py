"""Pick the best build for each request on a host, and say why every other build lost.

The steps (README, "Selection"):

1. **Filter.** Platform equal; target is the host's or one of its archspec ancestors; OS per
   policy (``exact``: same name; ``libc``: the build's libc is the host's and not newer, an
   unknown OS is rejected); then the request's own constraints (version, variants, compiler,
   ``platform= os= target=``, ``/hash``). Dependency-only records (no binary) are never
   candidates.
2. **Rank** the survivors: highest version first (unless the request pins one with ``@=``), exact
   OS before libc-compatible OS, target closest to the host, the caller's preferred stacks, more
   stacks, then hash, so the answer never depends on input order.
3. **Explain**: every candidate gets a rank or reasons ``(axis, sentence)``.
4. **Closure**: the chosen build's link/run dependencies, transitively, post-order (dependencies
   first, root last), as :class:`~cacheclient.model.ClosureNode` summaries (a catalog on a
   parsed index gives them without decoding full records); externals are reported, not
   fetched. A candidate whose closure cannot be provided (a dependency-only or missing node) is
   rejected on the ``closure`` axis and the next one is tried. Where the source lists builds
   without their edges (a cache.spack.io page), the caller passes a *closure* function that
   reads the signed spec (:mod:`cacheclient.pipeline`).

Everything here is pure: the catalog, the host and the closure function are arguments.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from cacheclient.errors import MetadataError, NoMatchError, UsageError
from cacheclient.model import BuildRecord, ClosureNode, format_variant
from cacheclient.resolution.compat import (
    compatible_targets,
    libc_for_os,
    libc_version_ok,
    target_ranks,
    why_not_target,
)
from cacheclient.resolution.host import HostProfile, format_libc
from cacheclient.resolution.spec import Request, parse_requests
from cacheclient.resolution.versions import Version, VersionConstraint

__all__ = [
    "AXES",
    "Candidate",
    "CatalogLike",
    "ClosureFunction",
    "ClosureHole",
    "Reason",
    "Resolution",
    "catalog_closure",
    "closest_candidates",
    "matches",
    "no_match_message",
    "resolve",
    "resolve_or_raise",
    "runtime_closure",
]


def __dir__() -> list[str]:
    return __all__


AXES = ("platform", "os", "libc", "target", "version", "variant", "compiler", "hash", "closure")
OsCompat = Literal["exact", "libc"]


class CatalogLike(Protocol):
    """What the resolver needs from :class:`cacheclient.metadata.catalog.Catalog`."""

    source: str

    def names(self) -> list[str]: ...
    def by_name(self, name: str) -> list[BuildRecord]: ...
    def get(self, dag_hash: str) -> BuildRecord | None: ...
    def get_many(self, hashes: Iterable[str]) -> Mapping[str, BuildRecord]: ...
    def walk_many(self, hashes: Iterable[str]) -> Mapping[str, ClosureNode]: ...
    def find_prefix(self, prefix: str) -> list[BuildRecord]: ...


class ClosureHole(Exception):
    """A build's runtime closure cannot be provided: *message* names the node and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


ClosureFunction = Callable[[BuildRecord], "tuple[list[ClosureNode], list[BuildRecord]]"]
"""``(closure, externals)`` of a build, dependencies first and the build last; raises
:class:`ClosureHole` when a node cannot be provided."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Reason:
    """Why a candidate was rejected: an axis from :data:`AXES` and a sentence."""

    axis: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"axis": self.axis, "message": self.message}


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    """One build considered for a request: accepted with a rank (1 is best), or reasons."""

    record: BuildRecord
    rank: int | None = None
    reasons: tuple[Reason, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "hash": r.hash,
            "name": r.name,
            "version": r.version,
            "os": r.os,
            "target": r.target,
            "accepted": self.accepted,
            "rank": self.rank,
            "reasons": [x.to_dict() for x in self.reasons],
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Resolution:
    """The answer for one request."""

    request: str
    selected: BuildRecord | None
    closure: list[ClosureNode] = field(default_factory=list)
    externals: list[BuildRecord] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    host: HostProfile | None = None
    os_compat: str = "exact"
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        sel = self.selected
        return {
            "request": self.request,
            "selected": None
            if sel is None
            else {
                "hash": sel.hash,
                "name": sel.name,
                "version": sel.version,
                "platform": sel.platform,
                "os": sel.os,
                "target": sel.target,
                "compiler": sel.compiler,
                "variants": sel.variant_strings(),
                "stacks": list(sel.stacks),
            },
            "closure": [
                {"hash": r.hash, "name": r.name, "version": r.version} for r in self.closure
            ],
            "externals": [
                {"hash": r.hash, "name": r.name, "version": r.version, "path": r.external_path}
                for r in self.externals
            ],
            "candidates": [c.to_dict() for c in self.candidates],
            "message": None if sel is not None else no_match_message(self),
        }


# --------------------------------------------------------------------------- filtering


def _compiler_parts(compiler: str | None) -> tuple[str | None, str | None]:
    if not compiler or compiler in ("none", "none-none"):
        return None, None
    name, _, version = compiler.partition("@")
    return name, version.lstrip("=") or None


def _host_reasons(rec: BuildRecord, host: HostProfile, os_compat: str) -> list[Reason]:
    reasons: list[Reason] = []
    if rec.platform != host.platform:
        reasons.append(
            Reason(
                axis="platform",
                message=f"built for platform {rec.platform}; host is {host.platform}",
            )
        )
    if rec.os != host.os:
        if os_compat == "exact":
            reasons.append(
                Reason(
                    axis="os",
                    message=f"built for {rec.os}; host is {host.os} "
                    "(--os-compat exact; try --os-compat libc)",
                )
            )
        else:
            build_libc = rec.libc or libc_for_os(rec.os)
            host_libc = host.libc or libc_for_os(host.os)
            if build_libc is None:
                reasons.append(
                    Reason(
                        axis="os",
                        message=f"built for {rec.os}, an OS whose libc is unknown (no libc node, "
                        "not in the libc table); --os-compat libc never assumes it compatible",
                    )
                )
            elif host_libc is None:
                reasons.append(
                    Reason(
                        axis="libc",
                        message=f"built for {rec.os} with {format_libc(build_libc)}; host "
                        f"{host.os} has an unknown libc (pass --libc)",
                    )
                )
            elif not libc_version_ok(build_libc, host_libc):
                reasons.append(
                    Reason(
                        axis="libc",
                        message=f"built for {rec.os} with {format_libc(build_libc)}; host "
                        f"{host.os} has {format_libc(host_libc)}",
                    )
                )
    why = why_not_target(rec.target, host.target)
    if why is not None:
        reasons.append(Reason(axis="target", message=why))
    return reasons


def _request_reasons(rec: BuildRecord, req: Request) -> list[Reason]:
    reasons: list[Reason] = []
    if req.hash_prefix is not None and not rec.hash.startswith(req.hash_prefix):
        reasons.append(Reason(axis="hash", message=f"hash does not start with {req.hash_prefix}"))
    if req.name is not None and rec.name != req.name:
        reasons.append(
            Reason(axis="hash", message=f"/{rec.short_hash} is {rec.name}, not {req.name}")
        )
    for key, wanted in (("platform", req.platform), ("os", req.os), ("target", req.target)):
        have = getattr(rec, key)
        if wanted is not None and have != wanted:
            reasons.append(
                Reason(axis=key, message=f"{key} is {have}; the request asks for {key}={wanted}")
            )
    if req.versions is not None and not req.versions.contains(rec.version):
        reasons.append(
            Reason(
                axis="version",
                message=f"version {rec.version} does not satisfy @{req.versions}",
            )
        )
    for variant in req.variants:
        actual = rec.variants.get(variant.name)
        if not variant.satisfied_by(actual):
            if actual is None:
                msg = f"the build has no variant {variant.name}; the request asks for "
            else:
                msg = f"the build has {format_variant(variant.name, actual)}; the request asks for "
            reasons.append(Reason(axis="variant", message=msg + variant.describe()))
    if req.compiler is not None:
        cname, cver = _compiler_parts(rec.compiler)
        if cname != req.compiler:
            reasons.append(
                Reason(
                    axis="compiler",
                    message=f"built with {rec.compiler or 'no recorded compiler'}; "
                    f"the request asks for %{req.compiler}",
                )
            )
        elif req.compiler_versions is not None and (
            cver is None or not req.compiler_versions.contains(cver)
        ):
            reasons.append(
                Reason(
                    axis="compiler",
                    message=f"built with {rec.compiler}; the request asks for "
                    f"%{req.compiler}@{req.compiler_versions}",
                )
            )
    return reasons


def matches(record: BuildRecord, request: Request) -> bool:
    """Whether *record* satisfies *request* (name, versions, variants, compiler, arch, hash),
    whatever the host."""
    return not _request_reasons(record, request)


# --------------------------------------------------------------------------- ranking


def _version_or_none(text: str) -> Version | None:
    try:
        return Version.parse(text)
    except ValueError:
        return None


def _pins(constraint: VersionConstraint | None) -> bool:
    return constraint is not None and all(r.exact for r in constraint.ranges)


def _rank(
    accepted: Sequence[BuildRecord],
    req: Request,
    host: HostProfile,
    preferred_stacks: Sequence[str],
) -> list[BuildRecord]:
    """Sort accepted builds best first; a total order (the hash breaks every tie)."""
    versions = sorted(
        {v for v in (_version_or_none(r.version) for r in accepted) if v is not None},
        reverse=True,
    )
    version_pos = {v: i for i, v in enumerate(versions)}
    pinned = _pins(req.versions)
    t_rank = target_ranks(compatible_targets(host.target))
    s_rank = {s: i for i, s in reversed(list(enumerate(preferred_stacks)))}

    def key(r: BuildRecord) -> tuple[int, int, int, int, int, str]:
        v = _version_or_none(r.version)
        vpos = 0 if pinned else (version_pos[v] if v is not None else len(version_pos))
        stack_pos = min((s_rank[s] for s in r.stacks if s in s_rank), default=len(s_rank))
        return (
            vpos,
            0 if r.os == host.os else 1,
            t_rank.get(r.target, len(t_rank)),
            stack_pos,
            -len(r.stacks),
            r.hash,
        )

    return sorted(accepted, key=key)


# --------------------------------------------------------------------------- closure


def runtime_closure(
    root: BuildRecord, catalog: CatalogLike
) -> tuple[list[ClosureNode], list[BuildRecord]]:
    """``(closure, externals)`` of *root*: link/run edges, post-order, root last.

    Externals are not descended into and not part of the closure. A dependency the catalog
    does not hold, or holds without a binary, is a :class:`ClosureHole` naming it. The walk is
    iterative, so a chain thousands of builds deep needs no deep Python stack.
    """
    top = ClosureNode.of(root)
    nodes = _read_ahead(top, catalog)
    order: list[ClosureNode] = []
    externals: dict[str, BuildRecord] = {}
    entered: set[str] = {root.hash}
    # (node, its children not visited yet)
    stack: list[tuple[ClosureNode, Iterator[str]]] = [(top, iter(top.children))]
    while stack:
        node, todo = stack[-1]
        for dep_hash in todo:  # resumes where the node's last visit stopped
            if dep_hash in entered or dep_hash in externals:
                continue
            child = nodes.get(dep_hash) or _node(catalog, dep_hash)
            if child is None:
                parent = root if node.hash == root.hash else catalog.get(node.hash)
                raise ClosureHole(
                    f"{_edge_name(parent, dep_hash)}/{dep_hash[:7]} (a dependency of "
                    f"{node.name}/{node.short_hash}) is missing from the metadata"
                )
            if child.external:
                external = catalog.get(dep_hash)
                if external is not None:
                    externals[dep_hash] = external
                    continue
            if not child.installable:
                raise ClosureHole(
                    f"{child.name}/{child.short_hash} has no binary (a dependency-only record; "
                    f"needed by {node.name}/{node.short_hash})"
                )
            entered.add(dep_hash)
            stack.append((child, iter(child.children)))
            break
        else:
            stack.pop()
            order.append(node)
    return order, sorted(externals.values(), key=lambda r: (r.name, r.hash))


def _edge_name(parent: BuildRecord | None, dep_hash: str) -> str:
    """The name *parent*'s edge gives the dependency *dep_hash* (which the catalog lacks)."""
    edges = parent.dependencies if parent is not None else ()
    return next((d.name for d in edges if d.hash == dep_hash), "?")


def _node(catalog: CatalogLike, dag_hash: str) -> ClosureNode | None:
    """The summary of a build the catalog could not summarise by itself: from its full record
    (``None``: not held; :class:`MetadataError`: malformed)."""
    record = catalog.get(dag_hash)
    return None if record is None else ClosureNode.of(record)


def _read_ahead(root: ClosureNode, catalog: CatalogLike) -> dict[str, ClosureNode]:
    """The closure's summaries, asked for level by level, each level at once (a catalog on a
    parsed index then reads a closure of thousands of builds in a few dozen queries, without
    decoding a full record). Builds it cannot summarise are read in full, ahead as well."""
    # Reading ahead only gathers: what the walk reports (holes, malformed records) and in
    # which order is decided by the walk alone.
    found: dict[str, ClosureNode] = {}
    seen = {root.hash}
    level = [root]
    while level:
        wanted = [h for node in level for h in node.children if h not in seen]
        if not wanted:
            break
        seen.update(wanted)
        try:
            nodes = dict(catalog.walk_many(wanted))
        except MetadataError:
            return found  # the walk meets it in its own order (a hole on the way may come first)
        rest = [h for h in wanted if h not in nodes]
        if rest:
            with contextlib.suppress(MetadataError):  # the same: the walk decides
                nodes.update((h, ClosureNode.of(r)) for h, r in catalog.get_many(rest).items())
        found.update(nodes)
        level = [n for n in nodes.values() if n.installable and not n.external]
    return found


# --------------------------------------------------------------------------- entry points


def _dedupe(records: Iterable[BuildRecord]) -> list[BuildRecord]:
    by_hash: dict[str, BuildRecord] = {}
    for r in records:
        prev = by_hash.get(r.hash)
        if prev is None:
            by_hash[r.hash] = r
        else:
            stacks = tuple(sorted(set(prev.stacks) | set(r.stacks)))
            keep = min(prev, r, key=lambda x: (not x.installable, x.source or ""))
            by_hash[r.hash] = replace(keep, stacks=stacks)
    return [by_hash[h] for h in sorted(by_hash)]


def _records_for(req: Request, catalog: CatalogLike) -> list[BuildRecord]:
    if req.hash_prefix is not None:
        found = _dedupe(catalog.find_prefix(req.hash_prefix))
        if req.name is not None:
            named = [r for r in found if r.name == req.name]
            found = named or found
        if len({r.hash for r in found}) > 1:
            listing = ", ".join(f"{r.name}@{r.version}/{r.hash}" for r in found[:10])
            raise UsageError(
                f"spec {req.text!r}: hash prefix /{req.hash_prefix} is ambiguous: "
                f"{len(found)} builds match ({listing})"
            )
        return found
    if req.name is None:
        raise UsageError(f"spec {req.text!r} names no package (give a name or a /hash)")
    return _dedupe(catalog.by_name(req.name))


_LISTED_PREFIXES = 8


def _no_prefix_note(req: Request, catalog: CatalogLike) -> str:
    """``no build of demo-tool has hash prefix zzzzzzz (builds: k6pbkms, vwaicym)``."""
    prefix = req.hash_prefix or ""
    if req.name is None:
        return f"no build has hash prefix {prefix} in {catalog.source}"
    builds = [r for r in _dedupe(catalog.by_name(req.name)) if r.installable]
    if not builds:
        return f"no build named {req.name} in {catalog.source}"
    shown = [f"{r.short_hash} ({r.version}, {r.target})" for r in builds[:_LISTED_PREFIXES]]
    more = f", and {len(builds) - _LISTED_PREFIXES} more" if len(builds) > _LISTED_PREFIXES else ""
    return f"no build of {req.name} has hash prefix {prefix} (builds: {', '.join(shown)}{more})"


def _resolve_one(
    req: Request,
    catalog: CatalogLike,
    host: HostProfile,
    os_compat: str,
    preferred_stacks: Sequence[str],
    *,
    closure_of: ClosureFunction,
) -> Resolution:
    records = _records_for(req, catalog)
    binaries = [r for r in records if r.installable and not r.is_external]
    evaluated = [
        (r, _host_reasons(r, host, os_compat) + _request_reasons(r, req)) for r in binaries
    ]
    ranked = _rank([r for r, why in evaluated if not why], req, host, preferred_stacks)
    rejected = [Candidate(record=r, reasons=tuple(why)) for r, why in evaluated if why]
    # The best candidate whose runtime closure can be provided; those before it are rejected.
    found: tuple[list[ClosureNode], list[BuildRecord]] | None = None
    while ranked and found is None:
        try:
            found = closure_of(ranked[0])
        except ClosureHole as hole:
            rejected.append(
                Candidate(
                    record=ranked.pop(0), reasons=(Reason(axis="closure", message=hole.message),)
                )
            )
    candidates = [Candidate(record=r, rank=i + 1) for i, r in enumerate(ranked)]
    candidates.extend(sorted(rejected, key=lambda c: (c.record.name, c.record.hash)))
    note = None
    if not binaries:
        if records:
            note = (
                f"{len(records)} record(s) match but all are dependency-only or external "
                "(no binary in the cache)"
            )
        elif req.hash_prefix is not None:
            note = _no_prefix_note(req, catalog)
        else:
            import difflib  # noqa: PLC0415 - only when no build has that name

            near = difflib.get_close_matches(req.name or "", catalog.names(), n=3)
            note = f"no build named {req.name} in {catalog.source}"
            if near:
                note += f"; did you mean {', '.join(near)}?"
    if found is None:
        return Resolution(
            request=req.text,
            selected=None,
            candidates=candidates,
            host=host,
            os_compat=os_compat,
            note=note,
        )
    selected = ranked[0]
    closure, externals = found
    return Resolution(
        request=req.text,
        selected=selected,
        closure=closure,
        externals=externals,
        candidates=candidates,
        host=host,
        os_compat=os_compat,
    )


def _as_requests(requests: Sequence[str | Request]) -> list[Request]:
    """Parse strings as command-line words: ``["zlib", "+shared"]`` is one request."""
    out: list[Request] = []
    words: list[str] = []
    for item in [*requests, None]:
        if isinstance(item, str):
            words.append(item)
            continue
        if words:
            out.extend(parse_requests(words))
            words = []
        if item is not None:
            out.append(item)
    return out


def resolve(
    requests: Sequence[str | Request],
    catalog: CatalogLike,
    host: HostProfile,
    *,
    os_compat: str = "exact",
    preferred_stacks: Sequence[str] = (),
    closure: ClosureFunction | None = None,
) -> list[Resolution]:
    """One :class:`Resolution` per request (``selected`` is None when nothing matched).

    *closure* computes a candidate's runtime closure (default: from the catalog's edges, and
    the build alone where the catalog does not know them); a :class:`ClosureHole` rejects the
    candidate on the ``closure`` axis and the next one is tried.

    :raises UsageError: bad spec syntax, an ambiguous hash prefix, an unknown *os_compat*.
    """
    if os_compat not in ("exact", "libc"):
        raise UsageError(f"--os-compat must be 'exact' or 'libc', not {os_compat!r}")
    closure_of = closure or catalog_closure(catalog)
    return [
        _resolve_one(req, catalog, host, os_compat, preferred_stacks, closure_of=closure_of)
        for req in _as_requests(requests)
    ]


def catalog_closure(catalog: CatalogLike) -> ClosureFunction:
    """The closure function over *catalog*'s edges (a build whose edges the catalog does not
    know stands alone: its signed spec must supply them)."""

    def closure_of(record: BuildRecord) -> tuple[list[ClosureNode], list[BuildRecord]]:
        if not record.dependencies_known:
            return [ClosureNode.of(record)], []
        return runtime_closure(record, catalog)

    return closure_of


def no_match_message(res: Resolution) -> str:
    """One line: which axis eliminated most candidates, and the closest candidate."""
    host = f" on {res.host}" if res.host is not None else ""
    head = f"nothing matches {res.request!r}{host}"
    if res.note is not None and not res.candidates:
        return f"{head}: {res.note}"
    counts: Counter[str] = Counter()
    for c in res.candidates:
        for axis in {r.axis for r in c.reasons}:
            counts[axis] += 1
    parts = [f"{n} of {len(res.candidates)} rejected by {axis}" for axis, n in counts.most_common()]
    msg = f"{head}: " + ", ".join(parts)

    if res.candidates:
        best = closest_candidates(res, 1)[0]
        msg += f"; closest: {best.record.format()} ({'; '.join(r.message for r in best.reasons)})"
    return msg


def closest_candidates(res: Resolution, limit: int) -> list[Candidate]:
    """The *limit* rejected candidates nearest to acceptance: fewest reasons, newest version."""
    rejected = [c for c in res.candidates if not c.accepted]
    versions = sorted(
        {v for v in (_version_or_none(c.record.version) for c in rejected) if v is not None},
        reverse=True,
    )
    vpos = {v: i for i, v in enumerate(versions)}

    def closeness(c: Candidate) -> tuple[int, int, str]:
        v = _version_or_none(c.record.version)
        return (len(c.reasons), vpos[v] if v is not None else len(vpos), c.record.hash)

    return sorted(rejected, key=closeness)[:limit]


def resolve_or_raise(
    requests: Sequence[str | Request],
    catalog: CatalogLike,
    host: HostProfile,
    *,
    os_compat: str = "exact",
    preferred_stacks: Sequence[str] = (),
    closure: ClosureFunction | None = None,
) -> list[Resolution]:
    """Like :func:`resolve`, but :class:`NoMatchError` (exit 3) if a request has no selection."""
    results = resolve(
        requests,
        catalog,
        host,
        os_compat=os_compat,
        preferred_stacks=preferred_stacks,
        closure=closure,
    )
    for res in results:
        if res.selected is None:
            raise NoMatchError(no_match_message(res))
    return results
