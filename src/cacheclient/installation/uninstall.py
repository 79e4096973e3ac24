"""Removing installed builds from a root, safely.

:func:`uninstall` takes the root's lock, refuses to remove a build another installed build
depends on (unless ``force``), and removes only prefixes proven to lie inside the root: the
resolved path must be below the resolved root, must not be the root, its metadata folder or
``bin`` (where ``sbang`` lives), must be a real directory (not a symlink), and must not hold
another recorded prefix. The database is read back from disk, so a tampered ``prefix`` such
as ``/`` or ``../../home`` is refused, never deleted.

Each removal is atomic for the database: the prefix is first renamed to a work directory next
to it (``.<name>.tmp-uninstall``), then the record is removed and the database saved; if the
save fails, the prefix is renamed back. The work directory is deleted last; one an interrupted
run leaves is removed by the next install into that folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cacheclient.errors import NoMatchError, StoreError, UsageError
from cacheclient.installation.installdb import DB_DIR, InstallDB, InstallRecord, locked_db
from cacheclient.installation.query import closure, dependents, describe, match
from cacheclient.resolution.spec import parse_requests

__all__ = ["Removal", "UninstallResult", "check_prefix", "uninstall"]


def __dir__() -> list[str]:
    return __all__


@dataclass(frozen=True, kw_only=True, slots=True)
class Removal:
    """One build taken out of the root."""

    record: InstallRecord
    prefix_removed: bool
    """False when the recorded prefix was already gone (only the record was dropped)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.record.name,
            "version": self.record.version,
            "hash": self.record.hash,
            "prefix": self.record.prefix,
            "prefix_removed": self.prefix_removed,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class UninstallResult:
    root: Path
    removed: tuple[Removal, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "removed": [r.to_dict() for r in self.removed],
            "warnings": list(self.warnings),
        }


def check_prefix(root: Path, prefix: str, others: Sequence[str] = ()) -> Path:
    """*prefix* resolved, once proven to be a removable install prefix inside *root*.

    :raises StoreError: anything else (outside the root, the root itself, a symlink, ...).
    """
    real_root = Path(os.path.realpath(root))
    given = Path(prefix)
    if not given.is_absolute():
        raise StoreError(f"{root}: recorded prefix {prefix!r} is not absolute: not removing it")
    if given.is_symlink():
        raise StoreError(f"{prefix}: recorded prefix is a symbolic link: not removing it")
    real = Path(os.path.realpath(given))
    if real == real_root or real_root not in real.parents:
        raise StoreError(
            f"{prefix}: recorded prefix is not inside the root {root}: not removing it"
        )
    top = real.relative_to(real_root).parts[0]
    if top in (DB_DIR, "bin"):
        raise StoreError(f"{prefix}: recorded prefix is the root's own {top}/: not removing it")
    for other in others:
        other_real = Path(os.path.realpath(other))
        if other_real != real and real in other_real.parents:
            raise StoreError(
                f"{prefix}: recorded prefix holds another install ({other}): not removing it"
            )
    return real


def _remove_one(db: InstallDB, record: InstallRecord, root: Path) -> Removal:
    others = [r.prefix for h, r in db.records.items() if h != record.hash]
    real = check_prefix(root, record.prefix, others)
    trash: Path | None = None
    if real.is_dir():
        try:
            trash = Path(tempfile.mkdtemp(prefix=f".{real.name}.tmp-uninstall-", dir=real.parent))
            os.rename(real, trash / "prefix")
        except OSError as exc:
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
            raise StoreError(f"{real}: cannot remove: {exc.strerror or exc}") from None
    elif real.exists():
        raise StoreError(f"{real}: recorded prefix is not a directory: not removing it")
    db.remove(record.hash)
    try:
        db.save()
    except StoreError:
        db.put(record)
        if trash is not None:
            os.rename(trash / "prefix", real)
            shutil.rmtree(trash, ignore_errors=True)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return Removal(record=record, prefix_removed=trash is not None)


def uninstall(
    root: Path,
    specs: Sequence[str],
    *,
    force: bool = False,
    all_matches: bool = False,
) -> UninstallResult:
    """Remove the installed builds matching *specs* from *root*.

    A spec matching several builds is refused unless *all_matches*; a build that another
    installed build (not removed in the same call) depends on is refused unless *force*.

    :raises NoMatchError: a spec matches nothing; :raises UsageError: ambiguous or needed.
    :raises StoreError: a recorded prefix that is not safely inside the root.
    """
    requests = parse_requests(specs, anonymous=True)
    root = Path(os.path.abspath(root))
    if not (root / DB_DIR).is_dir():
        raise NoMatchError(f"{root}: no builds are installed here")
    warnings: list[str] = []
    removed: list[Removal] = []
    with locked_db(root) as db:
        chosen: dict[str, InstallRecord] = {}
        for req in requests:
            found = match(db.records, [req])
            if not found:
                raise NoMatchError(f"no installed build matches {req.text!r} in {root}")
            if len(found) > 1 and not all_matches:
                listed = ", ".join(describe(r) for r in found)
                raise UsageError(
                    f"{req.text!r} matches {len(found)} installed builds: {listed}; "
                    "name one with /HASH, or pass --all to remove them all"
                )
            chosen.update((r.hash, r) for r in found)
        for rec in chosen.values():
            needed_by = [d for d in dependents(db.records, rec.hash) if d.hash not in chosen]
            if needed_by and not force:
                names = ", ".join(describe(d) for d in needed_by)
                raise UsageError(
                    f"{describe(rec)} is needed by {names}: uninstall those first, or pass "
                    "--force (they will then miss it)"
                )
            if needed_by:
                warnings.append(
                    f"{describe(rec)} removed although "
                    + ", ".join(describe(d) for d in needed_by)
                    + " depend on it"
                )
        # Dependents before their dependencies, so an interrupted run never leaves a
        # recorded build whose dependency is gone.
        walk, _ = closure(db.records, sorted(chosen))
        for rec in [r for r in reversed(walk) if r.hash in chosen]:
            removed.append(_remove_one(db, rec, root))
    return UninstallResult(root=root, removed=tuple(removed), warnings=tuple(warnings))
