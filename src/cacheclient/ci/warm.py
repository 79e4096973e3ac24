"""CI cache warming: resolve every spec for every host profile, fetch the union, write a lock.

:func:`warm` resolves a :class:`~cacheclient.ci.manifest.WarmManifest` and fetches the union of
the runtime closures into a store, each blob once; :func:`warm_from_lock` fetches exactly what
a lock names, without any index. Both return a :class:`WarmReport`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cacheclient.ci.lock import Lock, LockedBuild, LockedProfile, LockedSpec
from cacheclient.ci.manifest import MirrorEntry, Profile, WarmManifest
from cacheclient.errors import CacheClientError, VerificationError
from cacheclient.events import Reporter
from cacheclient.fetch import FetchedBuild, FetchResult
from cacheclient.model import BuildRecord
from cacheclient.resolution.host import HostProfile, parse_libc
from cacheclient.resolution.resolve import Resolution, no_match_message
from cacheclient.transport import requests_made

if TYPE_CHECKING:
    from cacheclient.pipeline import Client

__all__ = [
    "Selection",
    "WarmReport",
    "check_against_lock",
    "host_for_profile",
    "warm",
    "warm_from_lock",
]


def __dir__() -> list[str]:
    return __all__


@dataclass(frozen=True, kw_only=True, slots=True)
class Selection:
    """What one request resolved to for one profile."""

    profile: Profile
    request: str
    selected: BuildRecord | None
    closure: tuple[str, ...]
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        sel = self.selected
        return {
            "profile": self.profile.label(),
            "request": self.request,
            "selected": None
            if sel is None
            else {
                "hash": sel.hash,
                "name": sel.name,
                "version": sel.version,
                "os": sel.os,
                "target": sel.target,
            },
            "closure": list(self.closure),
            "message": self.message,
        }


@dataclass(kw_only=True, slots=True)
class WarmReport:
    """The outcome of a warm run; ``exit_code`` follows the CLI's exit codes."""

    selections: list[Selection] = field(default_factory=list)
    fetch: FetchResult | None = None
    lock: Lock | None = None
    error: CacheClientError | None = None
    seconds: float = 0.0
    allow_missing: bool = False
    mirrors: tuple[str, ...] = ()
    mirror_failures: dict[str, int] = field(default_factory=dict)
    requests_before: dict[str, int] = field(default_factory=dict)
    """Requests made to each mirror before this run (the count is process-wide)."""

    def count_requests_from_now(self) -> None:
        self.requests_before = {m: requests_made(_prefix(m)) for m in self.mirrors}

    @property
    def missing(self) -> list[Selection]:
        return [s for s in self.selections if s.selected is None]

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        if self.missing and not self.allow_missing:
            return 3
        return 0

    def totals(self) -> dict[str, Any]:
        items = self.fetch.items if self.fetch else []
        blobs = [b for i in items for b in i.blobs]
        per_mirror: Counter[str] = Counter()
        fetched_per_mirror: Counter[str] = Counter()
        for item in items:
            per_mirror[item.mirror] += 1
            fetched_per_mirror[item.mirror] += sum(1 for b in item.blobs if not b.already_present)
        return {
            "builds": len(items),
            "blobs_present": sum(1 for b in blobs if b.already_present),
            "blobs_fetched": sum(1 for b in blobs if not b.already_present),
            "blobs_failed": 0 if self.error is None else 1,
            "bytes_transferred": self.fetch.downloaded_bytes if self.fetch else 0,
            "seconds": round(self.seconds, 3),
            "mirrors": {
                m: {
                    "builds": per_mirror[m],
                    "blobs_fetched": fetched_per_mirror[m],
                    "requests": requests_made(_prefix(m)) - self.requests_before.get(m, 0),
                    "failures": self.mirror_failures.get(m, 0),
                }
                for m in sorted({*per_mirror, *self.mirrors, *self.mirror_failures})
            },
            "not_signature_checked": sorted(
                f"{i.record.name}@{i.record.version}/{i.record.hash}"
                for i in items
                if i.signer is None
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "selections": [s.to_dict() for s in self.selections],
            "missing": [f"{s.request} for {s.profile.label()}" for s in self.missing],
            "totals": self.totals(),
            "cache_key": self.lock.cache_key() if self.lock else None,
            "error": str(self.error) if self.error else None,
        }


class _FailureCounter(Reporter):
    """Forwards every hook to *inner* and counts, per mirror URL, how often a mirror failed
    (``mirror_failed``), for the report's per-mirror failures."""

    def __init__(self, inner: Reporter | None, counts: dict[str, int]) -> None:
        self.inner = inner or Reporter()
        self.counts = counts

    def starting(self, total_items: int, total_bytes: int) -> None:
        self.inner.starting(total_items, total_bytes)

    def download_started(self, artifact: str, size: int | None) -> None:
        self.inner.download_started(artifact, size)

    def download_progress(self, artifact: str, done: int, total: int | None) -> None:
        self.inner.download_progress(artifact, done, total)

    def download_finished(self, artifact: str, already_present: bool) -> None:
        self.inner.download_finished(artifact, already_present)

    def candidate_rejected(self, candidate: str, reason: str) -> None:
        self.inner.candidate_rejected(candidate, reason)

    def mirror_failed(self, mirror: str, reason: str) -> None:
        self.counts[mirror] = self.counts.get(mirror, 0) + 1
        self.inner.mirror_failed(mirror, reason)

    def warning(self, message: str) -> None:
        self.inner.warning(message)

    def finished(self, summary: Mapping[str, int]) -> None:
        self.inner.finished(summary)


def host_for_profile(profile: Profile) -> HostProfile:
    """The host a profile describes; its libc is the one its OS ships unless it names one."""
    from cacheclient.resolution.compat import libc_for_os  # noqa: PLC0415

    libc = parse_libc(profile.libc, source="profile libc") if profile.libc else None
    return HostProfile(
        platform=profile.platform,
        os=profile.os,
        target=profile.target,
        libc=libc or libc_for_os(profile.os),
    )


def _selection(profile: Profile, request: str, res: Resolution) -> Selection:
    if res.selected is None:
        return Selection(
            profile=profile,
            request=request,
            selected=None,
            closure=(),
            message=no_match_message(res),
        )
    return Selection(
        profile=profile,
        request=request,
        selected=res.selected,
        closure=tuple(r.hash for r in res.closure),
    )


def _locked_build(item: FetchedBuild, store: Path) -> LockedBuild:
    rec = item.record
    # The store keeps manifests at their mirror-relative paths, so this is the mirror's path.
    manifest = item.manifest_path.relative_to(store).as_posix()
    blobs = tuple(b.ref for b in sorted(item.blobs, key=lambda b: b.kind))
    return LockedBuild(
        hash=rec.hash,
        name=rec.name,
        version=rec.version,
        platform=rec.platform,
        os=rec.os,
        target=rec.target,
        mirror=item.mirror,
        manifest=manifest,
        layout=item.layout,
        signer=item.signer,
        blobs=blobs,
        compiler=rec.compiler,
    )


def _make_lock(
    mirrors: Sequence[MirrorEntry], selections: Sequence[Selection], fetched: FetchResult
) -> Lock:
    builds = {item.record.hash: _locked_build(item, fetched.store) for item in fetched.items}
    profiles: dict[Profile, list[LockedSpec]] = {}
    for sel in selections:
        profiles.setdefault(sel.profile, []).append(
            LockedSpec(
                request=sel.request,
                root=sel.selected.hash if sel.selected else None,
                closure=sel.closure,
            )
        )
    return Lock(
        mirrors=tuple(mirrors),
        profiles=tuple(LockedProfile(profile=p, specs=tuple(s)) for p, s in profiles.items()),
        builds=builds,
    )


def _prefix(mirror: str) -> str:
    return mirror.rstrip("/") + "/"


def warm(
    manifest: WarmManifest,
    *,
    client: Client,
    profiles: Sequence[Profile],
    allow_missing: bool = False,
) -> WarmReport:
    """Resolve every spec for every profile and fetch the union of the runtime closures.

    Closures come from the pipeline (:meth:`cacheclient.pipeline.Client.plan`): from the index's
    edges, or from the signed specs where a page gives none, so the lock pins every build a
    profile will install. Errors (verification, download) are kept in the report, not raised,
    so the caller can still print what was selected and what was fetched before the failure.
    """
    from cacheclient.pipeline import Plan  # noqa: PLC0415 - same layer, imported when used

    started = time.monotonic()
    report = WarmReport(allow_missing=allow_missing, mirrors=tuple(m.url for m in manifest.mirrors))
    report.count_requests_from_now()
    client.reporter = _FailureCounter(client.reporter, report.mirror_failures)
    preferred = [m.url for m in manifest.mirrors]
    builds: dict[str, BuildRecord] = {}
    verified: dict[str, Any] = {}
    try:
        for profile in profiles:
            plan = client.plan(
                manifest.specs,
                host_for_profile(profile),
                preferred_stacks=preferred,
                allow_missing=True,
                os_compat=profile.os_compat,
            )
            for res in plan.resolutions:
                report.selections.append(_selection(profile, res.request, res))
            builds.update((b.hash, b) for b in plan.builds if b.hash not in builds)
            verified.update(plan.verified)
        union = Plan(
            host=None,
            resolutions=(),
            builds=tuple(builds.values()),
            externals=(),
            verified=verified,
        )
        report.fetch = client.fetch(union)
    except CacheClientError as exc:
        report.error = exc
    if report.fetch is not None:
        report.lock = _make_lock(manifest.mirrors, report.selections, report.fetch)
    report.seconds = time.monotonic() - started
    return report


def warm_from_lock(lock: Lock, *, client: Client) -> WarmReport:
    """Fetch exactly the builds *lock* names (no index, no resolution) and check their digests.

    With an offline client, only checks that the store holds all of it (the error lists what
    is not).
    """
    from cacheclient.pipeline import Plan  # noqa: PLC0415

    started = time.monotonic()
    report = WarmReport(lock=lock, mirrors=tuple(m.url for m in lock.mirrors))
    report.count_requests_from_now()
    client.reporter = _FailureCounter(client.reporter, report.mirror_failures)
    for locked_profile in lock.profiles:
        for spec in locked_profile.specs:
            root = lock.builds.get(spec.root) if spec.root else None
            report.selections.append(
                Selection(
                    profile=locked_profile.profile,
                    request=spec.request,
                    selected=root.to_record() if root else None,
                    closure=spec.closure,
                )
            )
    records = tuple(lock.builds[h].to_record() for h in lock.all_hashes())
    try:
        report.fetch = client.fetch(Plan(host=None, resolutions=(), builds=records, externals=()))
        check_against_lock(lock, report.fetch)
    except CacheClientError as exc:
        report.error = exc
    report.seconds = time.monotonic() - started
    return report


def check_against_lock(lock: Lock, fetched: FetchResult) -> None:
    """Raise VerificationError when what was fetched is not what the lock names."""
    for item in fetched.items:
        locked = lock.builds[item.record.hash]
        want = {b.checksum for b in locked.blobs}
        got = {b.ref.checksum for b in item.blobs}
        if want != got:
            raise VerificationError(
                f"{item.record.name}@{item.record.version}/{item.record.hash}: the mirror now "
                f"serves blobs {sorted(got)} but the lock names {sorted(want)}",
                mirror=item.mirror,
                expected=",".join(sorted(want)),
                actual=",".join(sorted(got)),
            )
        if locked.signer is not None and item.signer != locked.signer:
            raise VerificationError(
                f"{item.record.name}/{item.record.hash}: signed by {item.signer or 'nobody'}, "
                f"but the lock says {locked.signer}",
                mirror=item.mirror,
            )
