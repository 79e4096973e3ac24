"""Fetch resolved builds into the store: signature first, then checksums, never trusting a mirror.

For each build, :class:`Fetcher` looks in the store first (re-verifying what it reads there).
Otherwise it tries the mirrors that the record says hold the build (``record.stacks``, see
:mod:`.routing`), then the others, and per mirror the layouts it has: :mod:`.layout_v3` (signed
spec manifest, spec blob) and :mod:`.layout_v2` (signed spec file). Each layout returns a
:class:`~.results.PendingBuild`: metadata verified, tarball still to come.

The work runs in two parallel phases: first every build's metadata (signature, manifest, spec
blob, root hash), then the tarballs, so the progress display knows the job's total size. If a
tarball then fails on its mirror, the whole build is retried on the next one.

A mirror whose failures reach ``failure_limit`` is skipped for the rest of the run, and a failing
mirror never fails a build another mirror can serve. The first verification failure is raised
(exit 4) only when no mirror could provide a good copy. Nothing unverified is left in the store.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from cacheclient.errors import (
    CacheClientError,
    DownloadError,
    MetadataError,
    MissingBuildError,
    StoreError,
    VerificationError,
)
from cacheclient.events import Reporter
from cacheclient.fetch.layout_v2 import plan_v2
from cacheclient.fetch.layout_v3 import plan_v3
from cacheclient.fetch.oci_source import OCI_LAYOUT, is_oci_url, oci_from_store, plan_oci
from cacheclient.fetch.results import FetchedBlob, FetchedBuild, FetchResult, PendingBuild
from cacheclient.fetch.routing import (
    DEFAULT_MIRROR_BASE,
    MirrorHealth,
    NotHere,
    severity,
    stack_mirror_url,
)
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.metadata.specfile import SpecFile, read_specfile
from cacheclient.model import BlobRef, BuildRecord
from cacheclient.resolution.agreement import first_disagreement, signed_record
from cacheclient.store import Store, StoredBuild
from cacheclient.transport import (
    DownloadResult,
    Transport,
    TransportOptions,
    join_url,
    options_from_env,
    transport_for,
)
from cacheclient.trust import TrustStore

__all__ = [
    "DEFAULT_MIRROR_BASE",
    "FetchResult",
    "FetchedBlob",
    "FetchedBuild",
    "Fetcher",
    "PendingBuild",
    "fetch_builds",
    "stack_mirror_url",
]


def __dir__() -> list[str]:
    return __all__


_T = TypeVar("_T")


class Fetcher:
    """Verifies builds' signed metadata and fetches their blobs into one store, for one run.

    Mirror health (failure counts, which layout a mirror answered with) lasts as long as the
    object. :meth:`verify` is phase 1 for one build (store first, then the mirrors);
    :meth:`fetch` runs both phases for many builds in parallel, reusing phase-1 results that a
    caller (:class:`cacheclient.pipeline.Client`) already has.
    """

    def __init__(
        self,
        *,
        mirrors: Sequence[str],
        store: Store,
        trust: TrustStore | None = None,
        allow_unsigned: bool = False,
        unsigned_mirrors: Collection[str] = (),
        offline: bool = False,
        reporter: Reporter | None = None,
        options: TransportOptions | None = None,
        failure_limit: int = 3,
        mirror_base: str | None = None,
        jobs: int = 8,
    ) -> None:
        self.mirrors = [m.rstrip("/") or m for m in mirrors]
        self.store = store
        self.trust = trust or TrustStore.for_store(store.trust_dir)
        self.allow_unsigned = allow_unsigned
        self.unsigned_mirrors = {m.rstrip("/") for m in unsigned_mirrors}
        self.offline = offline
        self.reporter = reporter or Reporter()
        self.jobs = max(1, jobs)
        self.options = options or options_from_env(pool_size=self.jobs + 2)
        self.health = MirrorHealth(limit=failure_limit)
        self.mirror_base = mirror_base
        self.downloaded = 0
        self.warnings: list[str] = []
        self.cancelled = threading.Event()
        self._lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------------
    def _transport(self, url: str) -> Transport:
        return transport_for(url, self.options)

    def _warn(self, message: str) -> None:
        with self._lock:
            self.warnings.append(message)
        self.reporter.warning(message)

    def _order(self, record: BuildRecord) -> list[str]:
        listed = [stack_mirror_url(s, self.mirror_base).rstrip("/") for s in record.stacks]
        ordered: list[str] = []
        for mirror in [*listed, *self.mirrors]:
            if mirror and mirror not in ordered:
                ordered.append(mirror)
        return ordered

    def _needs_signature(self, mirror: str) -> bool:
        return not self.allow_unsigned and mirror.rstrip("/") not in self.unsigned_mirrors

    def _layouts(self, mirror: str) -> tuple[int, ...]:
        """The layouts to try on *mirror*, the one that answered last first. No index path is
        probed: a page-driven install must not touch an index (real ones are 80-185 MB)."""
        if is_oci_url(mirror):  # a registry: one layout (fetch/oci_source.py)
            return (OCI_LAYOUT,)
        with self.health.lock:
            return self.health.layouts.get(mirror, (3, 2))

    def _answered(self, mirror: str, layout: int) -> None:
        with self.health.lock:
            order = self.health.layouts.get(mirror, (3, 2))
            if order[0] != layout:
                self.health.layouts[mirror] = (layout, *(x for x in order if x != layout))

    def _verify(self, raw: bytes, url: str, mirror: str) -> tuple[bytes, str | None]:
        if not self._needs_signature(mirror):
            return raw, None
        try:
            return self.trust.verify_clearsigned(raw, url)
        except VerificationError as exc:
            raise VerificationError(str(exc), url=url, mirror=mirror, key_id=exc.key_id) from None

    @staticmethod
    def _label(record: BuildRecord, kind: str) -> str:
        return f"{record.name}@{record.version}/{record.short_hash} {kind}"

    def _ensure_blob(
        self,
        record: BuildRecord,
        kind: str,
        blob: BlobRef,
        mirror: str,
        relative: str,
        *,
        report: bool = False,
    ) -> FetchedBlob:
        """Download *blob* (at *relative* on *mirror*) into the store unless present; verify
        length and sha256."""
        url = join_url(mirror, relative)
        store = self.store
        checksum = blob.checksum
        label = self._label(record, kind)
        reporter = self.reporter if report else Reporter()
        if store.pin(checksum):
            reporter.download_finished(label, True)
            return self._fetched_blob(kind, blob, mirror, present=True)
        with store.download_lock(checksum, on_wait=lambda: reporter.waiting(label)):
            if store.pin(checksum):  # another process finished it while we waited
                reporter.download_finished(label, True)
                return self._fetched_blob(kind, blob, mirror, present=True)
            partial = store.partial_path(checksum)
            size = blob.size if blob.size >= 0 else None
            reporter.download_started(label, size)
            result = self._download_verified(
                url, mirror, checksum, label=label, size=size, reporter=reporter
            )
            store.commit_partial(partial, checksum)
            with self._lock:
                self.downloaded += result.size - result.resumed_from
            if not store.pin(checksum):
                raise StoreError(f"{store.blob_path(checksum)}: vanished right after download")
        reporter.download_finished(label, False)
        return self._fetched_blob(kind, blob, mirror, present=False)

    def _download_verified(
        self,
        url: str,
        mirror: str,
        checksum: str,
        *,
        label: str,
        size: int | None,
        reporter: Reporter,
    ) -> DownloadResult:
        """Stream *url* into the blob's partial file; its sha256 must be *checksum*."""
        store = self.store
        partial = store.partial_path(checksum)

        def progress(done: int, total: int | None) -> None:
            if self.cancelled.is_set():  # Ctrl-C: stop now, keep the partial file to resume
                raise DownloadError(f"{url}: interrupted", url=url)
            reporter.download_progress(label, done, total)

        for attempt in (1, 2):
            try:
                result = self._transport(url).download(
                    url, partial, expected_size=size, progress=progress
                )
            except StoreError:
                store.discard_partial(checksum)  # e.g. disk full: give the space back
                raise
            except VerificationError as exc:
                store.discard_partial(checksum)
                raise VerificationError(
                    str(exc), url=url, mirror=mirror, expected=exc.expected, actual=exc.actual
                ) from None
            if result is None:
                raise NotHere(url)
            if result.sha256 == checksum:
                return result
            store.discard_partial(checksum)
            if attempt == 1 and (result.resumed_from or size is None):
                # The kept prefix was bad (an older file?), or the size was unknown (v2) and
                # a body without Content-Length was cut short: once more from zero.
                continue
            raise VerificationError(
                f"{url}: sha256 mismatch for {label} from mirror {mirror}: "
                f"expected {checksum}, got {result.sha256}",
                url=url,
                mirror=mirror,
                expected=checksum,
                actual=result.sha256,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetched_blob(self, kind: str, blob: BlobRef, mirror: str, *, present: bool) -> FetchedBlob:
        return FetchedBlob(
            kind=kind,
            ref=blob,
            path=self.store.blob_path(blob.checksum),
            mirror=mirror,
            already_present=present,
        )

    @staticmethod
    def _check_root(spec: SpecFile, record: BuildRecord, url: str, mirror: str) -> None:
        """The signed spec is the build that was asked for, and agrees with the record that
        selected it (index, page or lock) on every field selection used."""
        if spec.root.hash != record.hash:
            raise VerificationError(
                f"{url}: the signed spec is {spec.root.name}/{spec.root.hash}, but "
                f"{record.name}/{record.hash} was requested (mirror {mirror})",
                url=url,
                mirror=mirror,
                expected=record.hash,
                actual=spec.root.hash,
            )
        differs = first_disagreement(record, spec.root)
        if differs is not None:
            field, unsigned, signed = differs
            where = record.source or "the index"
            raise VerificationError(
                f"{record.name}/{record.short_hash}: {where} says {field} {unsigned!r}, but "
                f"the signed spec says {signed!r} ({url}, mirror {mirror}); refusing a "
                "relabelled build",
                url=url,
                mirror=mirror,
                expected=unsigned,
                actual=signed,
            )

    # -- the store -------------------------------------------------------------------------------
    def from_store(self, record: BuildRecord) -> FetchedBuild | None:
        """The build from the store, re-verifying its stored metadata; None when incomplete."""
        store = self.store
        build = store.load_build(record.hash)
        if build is None:
            return None
        if not (store.pin(build.tarball.checksum) and store.pin(build.spec_blob.checksum)):
            return None
        if build.layout == OCI_LAYOUT:
            return oci_from_store(self, record, build)
        raw = store.read_file(build.metadata_path)
        if raw is None:
            return None
        where = str(store.root / build.metadata_path)
        payload, signer = self._verify(raw, where, build.mirror)
        if build.layout == 3:
            manifest = parse_manifest(payload, where)
            tarball, spec_ref = manifest.tarball, manifest.spec_blob
            if tarball != build.tarball or spec_ref != build.spec_blob:
                return None
            spec_bytes = store.read_blob(build.spec_blob.checksum)  # hashed as read back
            if spec_bytes is None:
                return None
            spec = read_specfile(spec_bytes, where)
        else:
            spec = read_specfile(payload, where)
            if spec.tarball_sha256 != build.tarball.checksum:
                return None
        self._check_root(spec, record, where, build.mirror)
        return self._stored(record, build, spec, signer)

    def _stored(
        self,
        record: BuildRecord,
        build: StoredBuild,
        spec: SpecFile,
        signer: str | None,
        *,
        extra_blobs: tuple[FetchedBlob, ...] = (),
    ) -> FetchedBuild:
        """A build complete in the store whose metadata was re-verified (by the caller)."""
        blobs = (
            *extra_blobs,
            self._fetched_blob("spec", build.spec_blob, build.mirror, present=True),
            self._fetched_blob("tarball", build.tarball, build.mirror, present=True),
        )
        return FetchedBuild(
            record=signed_record(record, spec.root),
            spec=spec,
            tarball_path=self.store.blob_path(build.tarball.checksum),
            tarball=build.tarball,
            manifest_path=self.store.root / build.metadata_path,
            mirror=build.mirror,
            signer=signer,
            already_present=True,
            layout=build.layout,
            blobs=blobs,
        )

    def missing_in_store(self, record: BuildRecord) -> str:
        build = self.store.load_build(record.hash)
        label = f"{record.name}@{record.version}/{record.hash}"
        if build is None:
            return f"{label} (metadata and tarball)"
        missing = [
            f"{kind} blob {ref.checksum}"
            for kind, ref in (("spec", build.spec_blob), ("tarball", build.tarball))
            if not self.store.has_blob(ref.checksum)
        ]
        return f"{label} ({', '.join(missing) or 'metadata does not verify'})"

    # -- the public steps --------------------------------------------------------------------------
    def verify(self, record: BuildRecord) -> FetchedBuild | PendingBuild:
        """Phase 1 for one build: from the store, or its signed metadata from a mirror.

        :raises MissingBuildError: no mirror has it (or, offline, the store does not: the
            message then says what is missing).
        :raises VerificationError: bad signature or checksum, or a relabelled build.
        """
        try:
            return self.plan(record)
        except NotHere as exc:
            raise MissingBuildError(str(exc)) from None

    def verify_all(
        self, records: Sequence[BuildRecord]
    ) -> tuple[dict[str, FetchedBuild | PendingBuild], dict[str, CacheClientError]]:
        """Phase 1 for many builds in parallel: results and errors by hash."""
        unique = {r.hash: r for r in records}
        if not self.offline:
            self.store.ensure()
        results, errors = _run_all(self, self.verify, unique, self.jobs)
        return results, {h: e for h, e in errors.items() if isinstance(e, CacheClientError)}

    def fetch(
        self,
        records: Sequence[BuildRecord],
        *,
        verified: Mapping[str, FetchedBuild | PendingBuild] | None = None,
    ) -> FetchResult:
        """Both phases for *records*; phase-1 results in *verified* are reused."""
        store, reporter = self.store, self.reporter
        if not self.offline:
            store.ensure()
        unique: dict[str, BuildRecord] = {}
        for record in records:
            unique.setdefault(record.hash, record)
        known = dict(verified or {})
        todo = {h: r for h, r in unique.items() if h not in known}
        plans, errors = _run_all(self, self.plan, todo, self.jobs)
        plans.update({h: known[h] for h in unique if h in known})
        to_download = [
            p.tarball.size
            for p in plans.values()
            if isinstance(p, PendingBuild)
            and p.tarball.size > 0
            and not store.has_blob(p.tarball.checksum)
        ]
        reporter.starting(len(plans), sum(to_download))
        results, late = _run_all(self, self.complete, plans, self.jobs)
        errors.update(late)
        _finish_run(store, results, offline=self.offline)
        if errors:
            _raise_errors(unique, errors, store)
        items = [results[h] for h in unique]
        summary = {
            "builds": len(items),
            "downloaded_bytes": self.downloaded,
            "already_present": sum(1 for i in items if i.already_present),
            "unsigned": sum(1 for i in items if i.signer is None),
        }
        reporter.finished(summary)
        return FetchResult(
            items=items,
            store=store.root,
            downloaded_bytes=self.downloaded,
            warnings=tuple(self.warnings),
        )

    # -- one build, in two phases --------------------------------------------------------------
    def _over_mirrors(
        self,
        record: BuildRecord,
        attempt: Callable[[str], _T],
        *,
        skip: Collection[str] = (),
        errors: list[CacheClientError] | None = None,
    ) -> _T:
        """Run *attempt* on each usable mirror in order until one succeeds."""
        errors = [] if errors is None else errors
        tried: list[str] = []
        for mirror in self._order(record):
            if mirror in skip:
                continue
            if not self.health.usable(mirror):
                self.reporter.candidate_rejected(mirror, "skipped after repeated failures")
                continue
            tried.append(mirror)
            try:
                result = attempt(mirror)
            except NotHere:
                self.reporter.candidate_rejected(
                    f"{mirror} for {record.name}/{record.short_hash}", "not on this mirror"
                )
            except CacheClientError as exc:
                if isinstance(exc, StoreError):
                    raise
                self.health.failed(mirror)
                errors.append(exc)
                self.reporter.mirror_failed(mirror, str(exc))
                self.reporter.candidate_rejected(mirror, str(exc))
            else:
                if errors:
                    self._warn(
                        f"{record.name}@{record.version}/{record.short_hash}: came from {mirror} "
                        f"after {len(errors)} failure(s) elsewhere (first: {errors[0]})"
                    )
                return result
        if errors:
            raise min(errors, key=severity)
        label = f"{record.name}@{record.version}/{record.hash}"
        if not tried and not skip:
            raise DownloadError(
                f"{label}: every mirror was skipped after repeated failures "
                f"({', '.join(self._order(record)) or 'no mirror given'})"
            )
        where = ", ".join([*skip, *tried])
        raise MissingBuildError(f"{label}: not found on any mirror ({where})")

    def plan(self, record: BuildRecord) -> FetchedBuild | PendingBuild:
        """Phase 1: the build from the store, or its verified metadata from a mirror."""
        try:
            hit = self.from_store(record)
        except (VerificationError, MetadataError):
            if self.offline:
                raise
            hit = None
        if hit is not None:
            return hit
        if self.offline:
            raise NotHere(self.missing_in_store(record))
        return self._over_mirrors(record, lambda mirror: self._plan_on(record, mirror))

    def complete(self, item: FetchedBuild | PendingBuild) -> FetchedBuild:
        """Phase 2: the tarball; when its mirror fails now, the whole build from another."""
        if isinstance(item, FetchedBuild):
            self.reporter.download_finished(self._label(item.record, "tarball"), True)
            return item
        try:
            return self._complete(item)
        except NotHere:
            errors: list[CacheClientError] = []
        except CacheClientError as exc:
            if isinstance(exc, StoreError):
                raise
            self.health.failed(item.mirror)
            self.reporter.mirror_failed(item.mirror, str(exc))
            self.reporter.candidate_rejected(item.mirror, str(exc))
            errors = [exc]
        record = item.record
        return self._over_mirrors(
            record,
            lambda mirror: self._complete(self._plan_on(record, mirror)),
            skip={item.mirror},
            errors=errors,
        )

    def _plan_on(self, record: BuildRecord, mirror: str) -> PendingBuild:
        layouts = self._layouts(mirror)
        if record.source is not None and record.source.startswith(f"{mirror}/build_cache/"):
            layouts = (2, 3)  # listed by this mirror's v2 index: no v3 probe first
        for layout in layouts:
            try:
                planner = plan_oci if layout == OCI_LAYOUT else plan_v3 if layout == 3 else plan_v2
                plan = planner(self, record, mirror)
            except NotHere:
                continue
            self._answered(mirror, layout)
            return plan
        raise NotHere(mirror)

    def _complete(self, plan: PendingBuild) -> FetchedBuild:
        record, mirror = plan.record, plan.mirror
        tar_blob = self._ensure_blob(
            record, "tarball", plan.tarball, mirror, plan.tarball_rel, report=True
        )
        tarball = plan.tarball
        if tarball.size < 0:  # v2: the size is known once the verified file is here
            tarball = BlobRef(
                media_type=tarball.media_type,
                checksum=tarball.checksum,
                size=tar_blob.path.stat().st_size,
                compression="gzip",
            )
            tar_blob = FetchedBlob(
                kind="tarball",
                ref=tarball,
                path=tar_blob.path,
                mirror=mirror,
                already_present=tar_blob.already_present,
            )
        self.store.write_file(plan.relative, plan.raw)
        alias = None
        if plan.layout == 2:
            alias = plan.tarball_rel
            self.store.link_alias(tarball.checksum, alias)
        self.store.save_build(
            StoredBuild(
                hash=record.hash,
                name=record.name,
                version=record.version,
                layout=plan.layout,
                metadata_path=plan.relative,
                tarball=tarball,
                spec_blob=plan.spec_blob.ref,
                mirror=mirror,
                signer=plan.signer,
                tarball_alias=alias,
            )
        )
        return FetchedBuild(
            record=record,
            spec=plan.spec,
            tarball_path=tar_blob.path,
            tarball=tarball,
            manifest_path=self.store.root / plan.relative,
            mirror=mirror,
            signer=plan.signer,
            already_present=plan.spec_blob.already_present and tar_blob.already_present,
            layout=plan.layout,
            blobs=(*plan.extra_blobs, plan.spec_blob, tar_blob),
        )


def _run_all(
    fetcher: Fetcher,
    work: Callable[[Any], FetchedBuild | PendingBuild],
    items: dict[str, Any],
    jobs: int,
) -> tuple[dict[str, Any], dict[str, BaseException]]:
    """Run *work* over *items* on a pool; results and errors by hash. Ctrl-C stops downloads."""
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    if not items:
        return results, errors
    # Not a ``with`` block: its exit would wait for a thread blocked in a read after Ctrl-C.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = {pool.submit(work, item): h for h, item in items.items()}
    try:
        for future in concurrent.futures.as_completed(futures):
            dag_hash = futures[future]
            try:
                results[dag_hash] = future.result()
            except (CacheClientError, NotHere) as exc:
                errors[dag_hash] = exc
    except BaseException:
        fetcher.cancelled.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results, errors


def fetch_builds(
    records: Sequence[BuildRecord],
    *,
    mirrors: Sequence[str],
    store: Store,
    trust: TrustStore | None,
    allow_unsigned: bool = False,
    offline: bool = False,
    jobs: int = 8,
    reporter: Reporter | None = None,
    unsigned_mirrors: Collection[str] = (),
    transport_options: TransportOptions | None = None,
    failure_limit: int = 3,
    mirror_base: str | None = None,
) -> FetchResult:
    """Fetch and verify *records* (e.g. a runtime closure) into *store*.

    Phase 1 verifies every build's metadata (and fetches its small spec blob); phase 2 downloads
    the tarballs, so the reporter learns the job's total size before the large transfers start.

    :param mirrors: mirror URLs tried after those each record's ``stacks`` name.
    :param trust: the trusted keys (default: the store's keyring and the user's).
    :param unsigned_mirrors: mirrors configured ``signed: false``.
    :param mirror_base: base URL for cache.spack.io stack names in ``record.stacks``.
    :raises VerificationError: a signature or checksum failed on every mirror that had the build,
        or the signed spec disagrees with the record that selected it.
    :raises DownloadError: no mirror could provide a build, or ``offline`` and it is missing
        (the message lists exactly what is missing).
    """
    fetcher = Fetcher(
        mirrors=mirrors,
        store=store,
        trust=trust,
        allow_unsigned=allow_unsigned,
        unsigned_mirrors=unsigned_mirrors,
        offline=offline,
        reporter=reporter,
        options=transport_options,
        failure_limit=failure_limit,
        mirror_base=mirror_base,
        jobs=jobs,
    )
    return fetcher.fetch(records)


def _finish_run(store: Store, results: dict[str, FetchedBuild], *, offline: bool) -> None:
    if offline or all(item.already_present for item in results.values()):
        return
    with contextlib.suppress(StoreError):
        store.write_index()


def _raise_errors(
    records: dict[str, BuildRecord], errors: dict[str, BaseException], store: Store
) -> None:
    missing = [str(exc) for h, exc in errors.items() if isinstance(exc, NotHere) and h in records]
    if missing:
        raise DownloadError(
            f"offline: {len(missing)} build(s) missing from the store {store.root}: "
            + "; ".join(sorted(missing))
        )
    ordered = [errors[h] for h in records if h in errors]
    failures = [e for e in ordered if isinstance(e, CacheClientError)]
    raise min(failures, key=severity)
