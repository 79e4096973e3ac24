"""Install fetched builds into a root: extract, relocate, rename into place, record.

:func:`install_fetched` takes builds in post-order (dependencies first), as the fetcher
returns them, and for each one:

1. skips it when the root's database already has it and its prefix exists (unless
   ``force``), so re-running is a no-op that says so;
2. extracts its verified tarball into a temporary directory next to the final prefix
   (:mod:`.extract`), relocates it to the final prefix (:mod:`.relocate`), rewrites
   ``.spack/install_manifest.json`` for the new prefix (:mod:`.manifest`), and installs
   ``<root>/bin/sbang`` when a script needs it;
3. renames the prefix into place and records it in the database (:mod:`.installdb`).

The root therefore only ever holds complete prefixes, and the database matches them.
Externals are not installed: their paths are checked on the host and reported.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from cacheclient import safefs
from cacheclient.errors import StoreError, UsageError, VerificationError
from cacheclient.events import Reporter
from cacheclient.installation.extract import (
    DEFAULT_LIMITS,
    ExtractLimits,
    TarballMismatch,
    extract_prefix,
)
from cacheclient.installation.installdb import InstallDB, InstallRecord, locked_db
from cacheclient.installation.manifest import write_install_manifest
from cacheclient.installation.projection import DEFAULT_PROJECTION, format_projection
from cacheclient.installation.relocate import build_prefix_map, find_patchelf, relocate_prefix
from cacheclient.installation.sbang import install_sbang, sbang_path
from cacheclient.model import BlobRef, BuildRecord

__all__ = [
    "DEFAULT_PROJECTION",
    "ExternalCheck",
    "FetchedLike",
    "InstallResult",
    "InstalledBuild",
    "LocalBuild",
    "check_root_paths",
    "format_projection",
    "install_fetched",
    "planned_prefixes",
]


def __dir__() -> list[str]:
    return __all__


Status = Literal["installed", "reinstalled", "already-installed"]


class FetchedLike(Protocol):
    """What the installer needs of a fetched build (``cacheclient.fetch.FetchedBuild``)."""

    @property
    def record(self) -> BuildRecord: ...
    @property
    def tarball_path(self) -> Path: ...
    @property
    def tarball(self) -> BlobRef: ...
    @property
    def mirror(self) -> str: ...
    @property
    def signer(self) -> str | None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalBuild:
    """A build whose verified tarball is already on disk (for tests and local archives)."""

    record: BuildRecord
    tarball_path: Path
    tarball: BlobRef
    mirror: str = ""
    signer: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class InstalledBuild:
    """The outcome for one build."""

    record: BuildRecord
    prefix: Path
    status: Status
    seconds: float = 0.0
    relocation: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.record.name,
            "version": self.record.version,
            "hash": self.record.hash,
            "spec": self.record.format(),
            "prefix": str(self.prefix),
            "status": self.status,
            "seconds": round(self.seconds, 4),
            "relocation": dict(self.relocation),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ExternalCheck:
    """An external dependency: not installed from the cache, expected on the host."""

    record: BuildRecord
    path: str
    present: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.record.name,
            "version": self.record.version,
            "hash": self.record.hash,
            "path": self.path,
            "present": self.present,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class InstallResult:
    """What :func:`install_fetched` did, in install order."""

    root: Path
    builds: tuple[InstalledBuild, ...] = ()
    externals: tuple[ExternalCheck, ...] = ()
    warnings: tuple[str, ...] = ()
    requests: Mapping[str, Path] = field(default_factory=dict)
    """Each request (as given) and the prefix of the build selected for it."""

    @property
    def installed(self) -> list[InstalledBuild]:
        return [b for b in self.builds if b.status != "already-installed"]

    @property
    def reused(self) -> list[InstalledBuild]:
        return [b for b in self.builds if b.status == "already-installed"]

    def prefix_of(self, dag_hash: str) -> Path | None:
        return next((b.prefix for b in self.builds if b.record.hash == dag_hash), None)

    def prefix_for(self, request: str) -> Path | None:
        """The install prefix of the build chosen for *request* (as given to ``install``)."""
        return self.requests.get(request)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "builds": [b.to_dict() for b in self.builds],
            "externals": [e.to_dict() for e in self.externals],
            "warnings": list(self.warnings),
            "requests": {k: str(v) for k, v in self.requests.items()},
        }


def planned_prefixes(
    records: Sequence[BuildRecord],
    *,
    root: Path,
    projection: str = DEFAULT_PROJECTION,
    db: InstallDB | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Where each record will live: its recorded prefix if installed, else the projection."""
    out: dict[str, Path] = {}
    for rec in records:
        known = db.get(rec.hash) if db is not None else None
        if known is not None and not force:
            out[rec.hash] = Path(known.prefix)
        else:
            out[rec.hash] = root / format_projection(projection, rec)
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _check_distinct(planned: Mapping[str, Path], db: InstallDB) -> None:
    """Refuse a projection that puts two different builds into one prefix."""
    owner = {Path(rec.prefix): h for h, rec in db.records.items()}
    for dag_hash, prefix in planned.items():
        other = owner.setdefault(prefix, dag_hash)
        if other != dag_hash:
            raise UsageError(
                f"{prefix}: the projection gives builds {other[:7]} and {dag_hash[:7]} the same "
                "prefix; include {hash} in it"
            )


def _symlink_out(root: Path, path: Path) -> tuple[Path, str] | None:
    """The first component of *path* below *root* that is a symlink leading outside the root
    (with where it leads), or None."""
    real_root = os.path.realpath(root)
    here = root
    for name in path.relative_to(root).parts:
        here = here / name
        if not here.is_symlink():
            if not here.exists():
                return None
            continue
        target = os.path.realpath(here)
        if not Path(target).is_relative_to(real_root):
            return here, target
    return None


def check_root_paths(root: Path, planned: Mapping[str, Path], db: InstallDB) -> None:
    """Refuse to install through anything in the root that leads elsewhere (StoreError, exit 8).

    * every prefix the database records lies inside the root (by components, symlinks
      resolved) and outside its ``.cacheclient/``; a recorded prefix that is itself a symlink
      is refused;
    * no directory on the way to a planned prefix is a symlink leading outside the root;
    * no prefix lies inside another one.
    """
    for dag_hash, rec in sorted(db.records.items()):
        prefix = Path(os.path.normpath(rec.prefix))
        what = f"the install database's prefix of {rec.name}/{dag_hash[:7]}"
        if not prefix.is_absolute() or not prefix.is_relative_to(root) or prefix == root:
            raise StoreError(
                f"{db.path}: {what} is {rec.prefix!r}, outside the root {root}; refusing to use "
                "or change it (fix or remove that record)"
            )
        safefs.inside(root, prefix.relative_to(root).as_posix(), what=what)
        if prefix.is_symlink():
            raise StoreError(
                f"{prefix}: {what} is a symlink (to {os.readlink(prefix)}); refusing to follow it"
            )
    for prefix in planned.values():
        escape = _symlink_out(root, prefix)
        if escape is not None:
            link, target = escape
            raise StoreError(
                f"{link}: is a symlink to {target}, outside the root {root}; refusing to "
                f"install through it: point --root at the real location instead (e.g. --root "
                f"{os.path.realpath(root)} after moving the tree there), or remove the link"
            )
    everything = sorted(
        {Path(os.path.normpath(r.prefix)) for r in db.records.values()} | set(planned.values())
    )
    for outer, inner in itertools.pairwise(everything):
        if inner.is_relative_to(outer):
            raise StoreError(
                f"{inner}: lies inside the prefix {outer}; nested prefixes are refused "
                "(use a projection that gives every build its own directory)"
            )


def _remove_stale_work_dirs(parents: set[Path]) -> None:
    """Remove work directories an interrupted run left (we hold the root's lock)."""
    for parent in parents:
        try:
            stale = [*parent.glob(".*.tmp-*"), *parent.glob(".*.extract-*")]
        except OSError:
            continue
        for path in stale:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)


def _take_back(prefix: Path) -> None:
    """Remove a prefix the database could not record (e.g. disk full), so the root never
    holds an unrecorded one; a leftover is a work directory the next run removes."""
    trash = prefix.parent / f".{prefix.name}.tmp-unrecorded"
    try:
        os.rename(prefix, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _check_externals(externals: Sequence[BuildRecord]) -> list[ExternalCheck]:
    out = []
    for rec in externals:
        path = rec.external_path or ""
        out.append(ExternalCheck(record=rec, path=path, present=bool(path) and os.path.isdir(path)))
    return out


def _install_one(
    item: FetchedLike,
    *,
    root: Path,
    final: Path,
    new_prefixes: Mapping[str, str],
    limits: ExtractLimits,
    patchelf: str | Callable[[], str | None] | None,
    discard: Callable[[FetchedLike], None],
) -> dict[str, Any]:
    """Extract, relocate and move one build into *final*; returns relocation figures."""
    record = item.record
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as exc:
        raise StoreError(f"{final.parent}: cannot create: {exc.strerror or exc}") from None
    try:
        work = staging / "prefix"
        try:
            extracted = extract_prefix(
                item.tarball_path,
                work,
                expected_hash=record.hash,
                expected_sha256=item.tarball.checksum,
                limits=limits,
            )
        except TarballMismatch as exc:
            discard(item)
            raise _mismatch(item, exc) from None
        new_sbang = str(sbang_path(root))
        mapping = build_prefix_map(
            extracted.buildinfo,
            new_prefixes=new_prefixes,
            new_root=str(root),
            new_sbang=new_sbang,
        )
        report = relocate_prefix(extracted, mapping, new_sbang=new_sbang, patchelf=patchelf)
        # The archive's manifest describes the old prefix; write the new one, as Spack does.
        write_install_manifest(work, str(final))
        if report.uses_sbang:
            install_sbang(root)
        if final.exists() or final.is_symlink():
            os.rename(final, staging / "previous")
        os.rename(work, final)
    except OSError as exc:
        raise StoreError(
            f"{final}: installing {record.name}/{record.short_hash} failed: {exc.strerror or exc}"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "old_prefix": extracted.old_prefix,
        "files": len(extracted.entries),
        "bytes": extracted.size,
        "text_files": report.text_files,
        "binaries": report.binaries,
        "links": report.links,
        "sbang": report.uses_sbang,
        "patchelf": list(report.patchelf),
        "sha256": extracted.sha256,
        "compressed_bytes": extracted.compressed_size,
    }


def _store_of(blob: Path) -> str:
    """The store a blob path ``<store>/blobs/sha256/<c[:2]>/<c>`` belongs to (for messages)."""
    parts = blob.parts
    if len(parts) > 4 and parts[-4:-2] == ("blobs", "sha256"):
        return str(Path(*parts[:-4]))
    return str(blob.parent)


def _mismatch(item: FetchedLike, exc: TarballMismatch) -> VerificationError:
    rec = item.record
    return VerificationError(
        f"{rec.name}@{rec.version}/{rec.short_hash}: tarball blob {item.tarball_path} in the "
        f"store {_store_of(item.tarball_path)} is not the verified archive (sha256 "
        f"{exc.actual}, expected {exc.expected}): removed it; run the command again to fetch "
        "it anew",
        expected=exc.expected,
        actual=exc.actual,
    )


def _unlink_blob(item: FetchedLike) -> None:
    """Remove a tarball blob that failed verification, when it lies in a store's layout
    (``<store>/blobs/sha256/<c[:2]>/<c>`` beside ``<store>/.cacheclient``; a symlink is removed,
    not followed). Anything else (a local archive, a mirror directory) is left alone."""
    path = item.tarball_path
    parts = path.parts
    checksum = item.tarball.checksum
    in_layout = (
        len(parts) > 4
        and parts[-4:-2] == ("blobs", "sha256")
        and parts[-1] == checksum
        and parts[-2] == checksum[:2]
        and Path(*parts[:-4], safefs.PRIVATE).is_dir()
    )
    if in_layout:
        with contextlib.suppress(OSError):
            os.unlink(path)


def install_fetched(
    items: Sequence[FetchedLike],
    *,
    root: Path,
    projection: str = DEFAULT_PROJECTION,
    force: bool = False,
    reporter: Reporter | None = None,
    externals: Sequence[BuildRecord] = (),
    limits: ExtractLimits = DEFAULT_LIMITS,
    patchelf: str | Callable[[], str | None] | None = find_patchelf,
    discard: Callable[[FetchedLike], None] | None = None,
) -> InstallResult:
    """Install *items* (post-order: dependencies first) into *root*.

    Already installed builds are reused unless *force*; *externals* are checked for presence.
    Each tarball is hashed again while it is extracted; one that is not the verified archive
    any more is handed to *discard* (default: its file is removed, so the next run fetches it
    again) and raises :class:`VerificationError` (exit 4).
    Raises the first :class:`CacheClientError` met; builds installed before it stay installed
    and recorded, the failing one leaves nothing behind.
    """
    rep = reporter if reporter is not None else Reporter()
    root = Path(os.path.abspath(root))
    warnings: list[str] = []
    builds: list[InstalledBuild] = []
    with locked_db(root) as db:
        records = [item.record for item in items]
        planned = planned_prefixes(records, root=root, projection=projection, db=db, force=force)
        _check_distinct(planned, db)
        check_root_paths(root, planned, db)
        _remove_stale_work_dirs({p.parent for p in planned.values()})
        new_prefixes = {rec.hash: rec.prefix for rec in db.records.values()}
        new_prefixes.update({h: str(p) for h, p in planned.items()})
        for item in items:
            rec = item.record
            final = planned[rec.hash]
            known = db.get(rec.hash)
            if known is not None and not force and Path(known.prefix).is_dir():
                builds.append(InstalledBuild(record=rec, prefix=final, status="already-installed"))
                continue
            rep.installing(rec, str(final))
            started = time.perf_counter()
            figures = _install_one(
                item,
                root=root,
                final=final,
                new_prefixes=new_prefixes,
                limits=limits,
                patchelf=patchelf,
                discard=discard or _unlink_blob,
            )
            if figures["patchelf"]:
                msg = f"{rec.name}/{rec.short_hash}: run paths grown with patchelf in " + ", ".join(
                    figures["patchelf"]
                )
                warnings.append(msg)
                rep.warning(msg)
            db.put(
                InstallRecord(
                    hash=rec.hash,
                    name=rec.name,
                    version=rec.version,
                    prefix=str(final),
                    spec=rec.format(),
                    installed_at=_now(),
                    mirror=item.mirror or None,
                    tarball_sha256=item.tarball.checksum,
                    signer=item.signer,
                    old_prefix=str(figures["old_prefix"]),
                    dependencies=tuple(d.hash for d in rec.runtime_dependencies()),
                    verified={
                        "tarball_sha256": figures["sha256"],
                        "tarball_bytes": figures["compressed_bytes"],
                        "checked": "sha256 and gzip CRC-32/length while extracting",
                        "signer": item.signer,
                        "at": _now(),
                    },
                )
            )
            try:
                db.save()
            except StoreError:
                if known is None:  # no database names this prefix: take it back out
                    db.remove(rec.hash)
                    _take_back(final)
                raise
            status: Status = "reinstalled" if known is not None else "installed"
            builds.append(
                InstalledBuild(
                    record=rec,
                    prefix=final,
                    status=status,
                    seconds=time.perf_counter() - started,
                    relocation=figures,
                )
            )
            rep.installed(rec, str(final))
    checks = _check_externals(externals)
    for check in checks:
        if not check.present:
            msg = (
                f"external {check.record.name}@{check.record.version} is expected at "
                f"{check.path or '(no path recorded)'} but is not there"
            )
            warnings.append(msg)
            rep.warning(msg)
    return InstallResult(
        root=root, builds=tuple(builds), externals=tuple(checks), warnings=tuple(warnings)
    )
