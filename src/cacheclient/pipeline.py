"""The one resolve -> plan -> fetch -> install path that the library and every command use.

A build tool drives it step by step, typed end to end::

    from cacheclient.pipeline import Client, Settings

    with Client(Settings(mirrors=("https://mirror.example/cache",))) as client:
        plan = client.plan(["demo-tool@1.0.0"], host=host)  # resolution, closure, what is missing
        client.fetch(plan)                                  # into the store, verified
        result = client.install(plan, root=Path("/opt/sw")) # result.requests: request -> prefix

:meth:`Client.plan` reads the sources (pages and mirror indexes) and resolves each request. The
closure of a build whose source lists no edges (a cache.spack.io page) comes from its **signed
spec**, fetched from the mirrors the page names; every node's signed metadata is verified and
must agree with the record that selected it, so the plan never promises something the signatures
do not back. A candidate whose closure has a hole (a dependency no mirror holds) is rejected on
the ``closure`` axis and the next-best one is tried. Planning downloads only metadata (spec
manifests, spec files and spec blobs, each verified), never tarballs, and never an index that a
page did not ask for.

:meth:`Client.fetch` downloads the tarballs the plan still misses; :meth:`Client.install` installs
the closures (dependencies first) and checks the externals the signed specs name. Everything the
client opens is closed by :meth:`Client.close` (or the ``with`` block).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from cacheclient.errors import MissingBuildError, NoMatchError
from cacheclient.events import Reporter
from cacheclient.fetch import DEFAULT_MIRROR_BASE
from cacheclient.installation import DEFAULT_PROJECTION
from cacheclient.metadata.catalog import Catalog
from cacheclient.mirrors.catalogs import load_catalog
from cacheclient.model import BuildRecord, ClosureNode
from cacheclient.resolution.host import HostProfile, detect_host
from cacheclient.resolution.resolve import (
    ClosureHole,
    Resolution,
    no_match_message,
    resolve,
    runtime_closure,
)
from cacheclient.store import Store

if TYPE_CHECKING:
    # Fetching, installing and locks are imported where they are used: a run that only
    # resolves (``cacheclient resolve``) does not load them.
    from cacheclient.ci.lock import Lock, LockedProfile
    from cacheclient.fetch import FetchedBuild, FetchResult
    from cacheclient.fetch.fetcher import Fetcher, PendingBuild
    from cacheclient.installation import InstallResult
    from cacheclient.trust import TrustStore

__all__ = ["Client", "Plan", "Settings"]


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    Verified = FetchedBuild | PendingBuild
    """A build whose signed metadata verified: complete in the store, or with its tarball to
    come."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Everything a run needs besides the requests and the host, resolved once.

    :mod:`cacheclient.settings` builds one from flags, environment and the config file; a
    library may build one directly (every field has a default).
    """

    mirrors: tuple[str, ...] = ()
    """Mirror URLs or paths, tried after those a record's stacks name."""
    metadata: tuple[str, ...] = ()
    """cache.spack.io pages (paths or URLs)."""
    store: Path | None = None
    """The store directory (``None``: the user cache directory)."""
    root: Path | None = None
    """The install root (``None``: ``CACHECLIENT_ROOT`` or the user data directory)."""
    mirror_base: str = DEFAULT_MIRROR_BASE
    """Where cache.spack.io stacks live: ``root`` is this URL, ``<stack>`` is ``<base>/<stack>``."""
    jobs: int = 8
    os_compat: str = "exact"
    allow_unsigned: bool = False
    unsigned_mirrors: tuple[str, ...] = ()
    """Mirrors configured ``signed: false``."""
    offline: bool = False
    projection: str = DEFAULT_PROJECTION


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """What a run would do: one resolution per request, the union of their closures (signed
    records, dependencies first), the externals they expect on the host, and what is missing."""

    host: HostProfile | None
    resolutions: tuple[Resolution, ...]
    builds: tuple[BuildRecord, ...]
    externals: tuple[BuildRecord, ...]
    verified: Mapping[str, Verified] = field(default_factory=dict, repr=False)
    profile: str | None = None
    """For a plan read from a lock: the lock profile it uses."""

    def to_fetch(self) -> list[BuildRecord]:
        """Builds whose tarball is not verified in the store yet."""
        from cacheclient.fetch.fetcher import PendingBuild  # noqa: PLC0415 - see the imports

        return [b for b in self.builds if isinstance(self.verified.get(b.hash), PendingBuild)]

    def tarball_size(self, dag_hash: str) -> int | None:
        item = self.verified.get(dag_hash)
        if item is None or item.tarball.size < 0:
            return None
        return item.tarball.size

    def signed(self, dag_hash: str) -> bool | None:
        """Whether the build's metadata signature was checked (None: not verified yet)."""
        item = self.verified.get(dag_hash)
        return None if item is None else item.signer is not None


class Client:
    """Sources, store, trust and mirror health for a series of plans, fetches and installs."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        trust: TrustStore | None = None,
        reporter: Reporter | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.warn = warn
        self._own_store = store is None
        self.store = store if store is not None else Store(self.settings.store)
        self.trust = trust
        self.reporter = reporter or Reporter()
        self._catalog: Catalog | None = None
        self._fetcher: Fetcher | None = None
        self._verified: dict[str, Verified] = {}

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the store if this client opened it (its descriptors and locks)."""
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the pieces ----------------------------------------------------------------------------
    @property
    def fetcher(self) -> Fetcher:
        if self._fetcher is None:
            from cacheclient.fetch.fetcher import Fetcher  # noqa: PLC0415 - see the imports

            s = self.settings
            self._fetcher = Fetcher(
                mirrors=list(s.mirrors),
                store=self.store,
                trust=self.trust,
                allow_unsigned=s.allow_unsigned,
                unsigned_mirrors=s.unsigned_mirrors,
                offline=s.offline,
                reporter=self.reporter,
                mirror_base=s.mirror_base,
                jobs=s.jobs,
            )
        return self._fetcher

    def catalog(self) -> Catalog:
        """Every page and mirror index the settings name, merged (read once per client)."""
        if self._catalog is None:
            s = self.settings
            self._catalog = load_catalog(
                s.metadata, s.mirrors, store=self.store, offline=s.offline, warn=self._warn
            )
        return self._catalog

    def _warn(self, message: str) -> None:
        if self.warn is not None:
            self.warn(message)
        else:
            self.reporter.warning(message)

    # -- plan ----------------------------------------------------------------------------------
    def plan(
        self,
        specs: Sequence[str],
        host: HostProfile | None = None,
        *,
        preferred_stacks: Sequence[str] = (),
        allow_missing: bool = False,
        os_compat: str | None = None,
    ) -> Plan:
        """Resolve *specs* for *host* (default: this machine) with closures from signed metadata.

        :raises NoMatchError: a request has no build whose closure can be provided (unless
            *allow_missing*: its resolution then has ``selected`` None).
        :raises VerificationError: a signature or checksum failed, or a signed spec disagrees
            with the record that selected it.
        """
        the_host = host if host is not None else detect_host()
        catalog = self.catalog()
        verified = self._verified  # shared by this client's plans: each build verified once
        resolutions = resolve(
            list(specs),
            catalog,
            the_host,
            os_compat=os_compat or self.settings.os_compat,
            preferred_stacks=preferred_stacks,
            closure=lambda record: self._signed_closure(record, catalog, verified),
        )
        if not allow_missing:
            for res in resolutions:
                if res.selected is None:
                    raise NoMatchError(no_match_message(res))
        return _plan_of(the_host, resolutions, verified)

    def plan_lock(self, lock: Lock, locked: LockedProfile, source: str) -> Plan:
        """The plan a lock names for one of its profiles: no index, no resolution. Each build's
        signed metadata is verified when it is fetched (:meth:`fetch`), and the caller checks
        that its blobs are the ones the lock pins (``ci.warm.check_against_lock``)."""
        order: dict[str, None] = {}
        for spec in locked.specs:
            if spec.root is None:
                raise NoMatchError(
                    f"{source}: {spec.request!r} has no build for {locked.profile.label()}"
                )
            order.update(dict.fromkeys(spec.closure))
        records = [lock.builds[h].to_record() for h in order]
        return Plan(
            host=None,
            resolutions=(),
            builds=tuple(records),
            externals=(),
            profile=locked.profile.label(),
        )

    def _signed_closure(
        self, record: BuildRecord, catalog: Catalog, verified: dict[str, Verified]
    ) -> tuple[list[ClosureNode], list[BuildRecord]]:
        """A candidate's closure with every node's signed metadata verified (a node that no
        mirror holds is a :class:`ClosureHole`; a bad signature is raised)."""
        if record.dependencies_known:
            walked, externals = runtime_closure(record, catalog)
            nodes = _records(walked, record, catalog)
        else:
            root = self._verify([record], verified)[record.hash]
            spec_nodes = Catalog(list(root.spec.nodes.values()), source=root.mirror)
            walked, externals = runtime_closure(root.record, spec_nodes)
            # Dependencies are looked for where their root was found, then on every mirror.
            nodes = [
                n if n.hash == record.hash else replace(n, stacks=record.stacks)
                for n in _records(walked, root.record, spec_nodes)
            ]
        found = self._verify(nodes, verified)
        return [ClosureNode.of(found[n.hash].record) for n in nodes], externals

    def _verify(
        self, records: Sequence[BuildRecord], verified: dict[str, Verified]
    ) -> dict[str, Verified]:
        todo = [r for r in records if r.hash not in verified]
        results, errors = self.fetcher.verify_all(todo) if todo else ({}, {})
        verified.update(results)
        if self.settings.offline:
            missing = [str(e) for e in errors.values() if isinstance(e, MissingBuildError)]
            if missing:
                raise MissingBuildError(
                    f"offline: {len(missing)} build(s) missing from the store "
                    f"{self.store.root}: " + "; ".join(sorted(missing))
                )
        failed = [(r, errors[r.hash]) for r in records if r.hash in errors]
        if failed:
            record, first = failed[0]
            if isinstance(first, MissingBuildError):
                raise ClosureHole(f"{record.name}/{record.short_hash} has no binary ({first})")
            # Builds verified at once fail in any order: the most telling error is raised (a
            # bad signature, not "mirror skipped" because the other builds' signatures were bad).
            from cacheclient.fetch.routing import severity  # noqa: PLC0415 - see the imports

            raise min((e for _, e in failed if not isinstance(e, MissingBuildError)), key=severity)
        return {r.hash: verified[r.hash] for r in records}

    # -- fetch and install ---------------------------------------------------------------------
    def fetch(self, plan: Plan, *, reporter: Reporter | None = None) -> FetchResult:
        """Download what *plan* still misses into the store, verified (metadata that planning
        already verified is not fetched again)."""
        fetcher = self.fetcher
        if reporter is not None:
            fetcher.reporter = reporter
        try:
            return fetcher.fetch(list(plan.builds), verified=plan.verified)
        finally:
            fetcher.reporter = self.reporter

    def install(
        self,
        plan: Plan,
        *,
        root: Path | None = None,
        force: bool = False,
        reporter: Reporter | None = None,
        fetched: FetchResult | None = None,
    ) -> InstallResult:
        """Install *plan*'s closures under *root* (fetching first unless *fetched* is given).

        The result's ``requests`` maps each request to the prefix of its selected build.
        """
        from cacheclient.installation import (  # noqa: PLC0415 - see the imports
            default_root,
            format_projection,
            install_fetched,
        )

        s = self.settings
        for record in plan.builds[:1]:  # a bad projection fails before any download
            format_projection(s.projection, record)
        result_fetch = fetched if fetched is not None else self.fetch(plan, reporter=reporter)
        externals = _externals(result_fetch.items, plan.externals)
        result = install_fetched(
            result_fetch.items,
            root=Path(root or s.root or default_root()),
            projection=s.projection,
            force=force,
            reporter=reporter or self.reporter,
            externals=externals,
        )
        requests = {
            res.request: p
            for res in plan.resolutions
            if res.selected is not None and (p := result.prefix_of(res.selected.hash)) is not None
        }
        return replace(result, requests=requests)


def _records(
    nodes: Sequence[ClosureNode], root: BuildRecord, catalog: Catalog
) -> list[BuildRecord]:
    """The full records of a walked closure (*root* last, as walked), to fetch and verify."""
    found = catalog.get_many(n.hash for n in nodes[:-1])
    missing = [n for n in nodes[:-1] if n.hash not in found]
    if missing:  # summarised a moment ago: only a source changing under us gets here
        raise ClosureHole(f"{missing[0].name}/{missing[0].short_hash} is missing from the metadata")
    return [*(found[n.hash] for n in nodes[:-1]), root]


def _plan_of(
    host: HostProfile, resolutions: Sequence[Resolution], verified: Mapping[str, Verified]
) -> Plan:
    builds: dict[str, BuildRecord] = {}
    externals: dict[str, BuildRecord] = {}
    for res in resolutions:
        for node in res.closure:  # every node of a plan's closure was verified
            builds.setdefault(node.hash, verified[node.hash].record)
        for ext in res.externals:
            externals.setdefault(ext.hash, ext)
    return Plan(
        host=host,
        resolutions=tuple(resolutions),
        builds=tuple(builds.values()),
        externals=tuple(externals.values()),
        verified={h: verified[h] for h in builds if h in verified},
    )


def _externals(items: Sequence[FetchedBuild], known: Sequence[BuildRecord]) -> list[BuildRecord]:
    """Externals the closure expects on the host: those the plan knows, plus those the signed
    specs name as runtime dependencies (a lock records none)."""
    found = {e.hash: e for e in known}
    for item in items:
        nodes = item.spec.nodes
        for dep in item.record.runtime_dependencies():
            node = nodes.get(dep.hash)
            if node is not None and node.is_external:
                found.setdefault(node.hash, node)
    return sorted(found.values(), key=lambda r: (r.name, r.hash))
