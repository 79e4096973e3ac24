"""``cacheclient install`` / ``install-from-cache``: resolve, fetch, verify, install, relocate."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cacheclient import safefs
from cacheclient.ci.lock import Lock, LockedProfile
from cacheclient.cli._common import print_json
from cacheclient.cli.fetch_cmd import (
    add_arguments,
    collect_records,
    normalise_mirror,
    resolve_and_fetch,
)
from cacheclient.cli.render import format_bytes, make_reporter
from cacheclient.errors import CacheClientError, NoMatchError, UsageError
from cacheclient.fetch import FetchResult
from cacheclient.installation import DEFAULT_PROJECTION, default_root, format_projection
from cacheclient.installation.installdb import read_db
from cacheclient.installation.installer import InstallResult, install_fetched
from cacheclient.metadata.catalog import Catalog
from cacheclient.model import BlobRef, BuildRecord
from cacheclient.settings import store_from_option
from cacheclient.store import Store

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "install",
        help="install specs and their runtime closure from binary caches into a root",
        description="Resolve each SPEC for this host, fetch and verify its runtime closure "
        "into the store, then install every build (dependencies first) under --root, "
        "relocated to its new prefix. Builds already in the root are reused. Exit 3: no "
        "build matches; 4: verification failed; 5: download failed; 6: unsafe archive; "
        "8: root or store unusable; 9: relocation impossible (root too long).",
    )
    parser.add_argument("specs", nargs="*", metavar="SPEC", help="e.g. zlib@1.3 +shared")
    add_arguments(parser)
    group = parser.add_argument_group("installation")
    group.add_argument(
        "--from-lock",
        metavar="FILE",
        help="install exactly what a `cacheclient warm --lock` file names (no index, no "
        "resolution); with several profiles in it, the one matching the host options",
    )
    group.add_argument(
        "--root",
        metavar="DIR",
        default=None,
        help="install root (default: CACHECLIENT_ROOT, else the user data dir, "
        f"e.g. {default_root()})",
    )
    group.add_argument(
        "--projection",
        default=None,
        metavar="FORMAT",
        help="prefix layout below the root, from {platform} {os} {target} {name} {version} "
        f"{{hash}} (default: {DEFAULT_PROJECTION})",
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be fetched and installed, with sizes; change nothing",
    )
    group.add_argument(
        "--force", action="store_true", help="reinstall builds that are already installed"
    )
    parser.set_defaults(func=run)


def _root(args: argparse.Namespace) -> Path:
    value = getattr(args, "root", None)
    root = safefs.expand_path(value, "--root") if value else default_root()
    return Path(os.path.abspath(root))


def _projection(args: argparse.Namespace) -> str:
    return getattr(args, "projection", None) or DEFAULT_PROJECTION


_TARBALL_MEDIA = "application/vnd.spack.install."


def _tarball_blob(record: BuildRecord, mirrors: list[str]) -> BlobRef | None:
    """The tarball's blob record: from the catalog, else from the v3 spec manifest (read only,
    not verified: it is only used to show sizes)."""
    for blob in record.blobs:
        if blob.media_type.startswith(_TARBALL_MEDIA):
            return blob
    from cacheclient.metadata.layout import spec_manifest_path  # noqa: PLC0415
    from cacheclient.metadata.manifest import parse_manifest  # noqa: PLC0415
    from cacheclient.transport import reader_for  # noqa: PLC0415

    relative = spec_manifest_path(record.name, record.version, record.hash)
    for mirror in [*record.stacks, *mirrors]:
        if "://" not in mirror and not Path(mirror).is_dir():
            continue  # a cache.spack.io stack name, not a location
        try:
            data = reader_for(mirror)(relative)
            if data is not None:
                return parse_manifest(data, relative).tarball
        except CacheClientError:
            continue
    return None


def _catalog_read_only(args: argparse.Namespace) -> tuple[Catalog, list[str]]:
    """Like ``fetch``'s sources, but reading indexes directly: no cache is written."""
    from cacheclient.mirrors.catalogs import load_catalog  # noqa: PLC0415
    from cacheclient.mirrors.open import open_catalog  # noqa: PLC0415
    from cacheclient.settings import load_config  # noqa: PLC0415
    from cacheclient.transport import reader_for  # noqa: PLC0415

    mirrors = [normalise_mirror(m) for m in (args.mirror or [])]
    metadata = list(args.metadata or [])
    if not mirrors and not metadata:
        mirrors = [normalise_mirror(m) for m in load_config().mirrors]
    if not mirrors and not metadata:
        raise UsageError("no source given: pass --mirror URL or --metadata PAGE")
    catalogs = [load_catalog(metadata, [])] if metadata else []
    catalogs += [open_catalog(m, reader_for(m)) for m in mirrors]
    return (catalogs[0] if len(catalogs) == 1 else Catalog.merge(catalogs)), mirrors


def _dry_run(args: argparse.Namespace) -> int:
    from cacheclient.cli.resolve_cmd import os_compat_from_args  # noqa: PLC0415
    from cacheclient.resolution.resolve import resolve_or_raise  # noqa: PLC0415
    from cacheclient.settings import host_from_args  # noqa: PLC0415

    root = _root(args)
    projection = _projection(args)
    store = store_from_option(getattr(args, "store", None))
    try:
        catalog, mirrors = _catalog_read_only(args)
        host = host_from_args(args)
        resolutions = resolve_or_raise(
            list(args.specs), catalog, host, os_compat=os_compat_from_args(args)
        )
        db = read_db(root) if (root / ".cacheclient").is_dir() else None
        plan: list[dict[str, Any]] = []
        for rec in collect_records(resolutions):
            known = db.get(rec.hash) if db is not None else None
            blob = _tarball_blob(rec, mirrors)
            size = blob.size if blob is not None else None
            in_store = blob is not None and store.has_blob(blob.checksum)
            if known is not None and not args.force and Path(known.prefix).is_dir():
                action, prefix = "already-installed", known.prefix
            else:
                action = "reinstall" if known is not None else "install"
                prefix = str(root / format_projection(projection, rec))
            plan.append(
                {
                    "name": rec.name,
                    "version": rec.version,
                    "hash": rec.hash,
                    "spec": rec.format(),
                    "action": action,
                    "prefix": prefix,
                    "fetch": action != "already-installed" and not in_store,
                    "tarball_size": size,
                }
            )
        externals = [ext for res in resolutions for ext in res.externals]
    finally:
        store.close()
    to_fetch = sum(p["tarball_size"] or 0 for p in plan if p["fetch"])
    if args.json:
        print_json(
            {
                "dry_run": True,
                "root": str(root),
                "store": str(store.root),
                "builds": plan,
                "externals": [
                    {"name": e.name, "version": e.version, "path": e.external_path}
                    for e in externals
                ],
                "fetch_bytes": to_fetch,
            }
        )
        return 0
    print(f"dry run: nothing is changed; root {root}, store {store.root}")
    for p in plan:
        shown = format_bytes(p["tarball_size"]) if p["tarball_size"] is not None else "size ?"
        source = "fetch" if p["fetch"] else "in store"
        detail = "" if p["action"] == "already-installed" else f"  ({source}, {shown})"
        print(f"{p['action']:17} {p['spec']}\n{'':17} -> {p['prefix']}{detail}")
    for ext in externals:
        print(f"{'external':17} {ext.name}@{ext.version} (from the host: {ext.external_path})")
    n_install = sum(1 for p in plan if p["action"] != "already-installed")
    print(f"{n_install} build(s) to install, {format_bytes(to_fetch)} to download")
    return 0


def _print_result(result: InstallResult, unsigned: list[str]) -> None:
    for b in result.builds:
        if b.status == "already-installed":
            print(f"already installed  {b.record.format()}\n{'':18} {b.prefix}")
        else:
            print(f"{b.status:18} {b.record.format()}\n{'':18} {b.prefix}")
    for ext in result.externals:
        state = "present" if ext.present else "MISSING"
        print(f"external {state:9} {ext.record.name}@{ext.record.version} at {ext.path}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    if unsigned:
        print(
            f"warning: {len(unsigned)} build(s) were not signature-checked: {', '.join(unsigned)}"
        )
    n_new = len(result.installed)
    n_old = len(result.reused)
    if n_new == 0:
        print(f"nothing to do: all {n_old} build(s) already installed in {result.root}")
    else:
        print(f"{n_new} build(s) installed, {n_old} already present, in {result.root}")


def _fetch_from_lock(
    args: argparse.Namespace, reporter: Any
) -> tuple[list[Any], FetchResult, Store]:
    """Fetch, with no index and no resolution, the closure a lock names for this host."""
    from cacheclient.ci.warm import check_against_lock, fetch_from  # noqa: PLC0415
    from cacheclient.cli.fetch_cmd import _jobs  # noqa: PLC0415
    from cacheclient.settings import host_from_args  # noqa: PLC0415

    try:
        text = Path(args.from_lock).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--from-lock {args.from_lock}: cannot read: {exc}") from None
    lock = Lock.from_json(text, args.from_lock)
    locked = _lock_profile(lock, args, host_from_args)
    order: dict[str, None] = {}
    for spec in locked.specs:
        if spec.root is None:
            raise NoMatchError(
                f"{args.from_lock}: {spec.request!r} has no build for {locked.profile.label()}"
            )
        order.update(dict.fromkeys(spec.closure))
    store = store_from_option(getattr(args, "store", None))
    fetched = fetch_from(
        [lock.builds[h].to_record() for h in order],
        lock.mirrors,
        store=store,
        jobs=_jobs(args),
        allow_unsigned=bool(args.allow_unsigned),
        offline=bool(args.offline),
        reporter=reporter,
    )
    check_against_lock(lock, fetched)
    return [], fetched, store


def _lock_profile(lock: Lock, args: argparse.Namespace, host_from_args: Any) -> LockedProfile:
    if len(lock.profiles) == 1:
        return lock.profiles[0]
    host = host_from_args(args)
    for locked in lock.profiles:
        p = locked.profile
        if (p.platform, p.os, p.target) == (host.platform, host.os, host.target):
            return locked
    labels = ", ".join(p.profile.label() for p in lock.profiles)
    raise UsageError(
        f"{args.from_lock}: no profile for host {host.platform}-{host.os}-{host.target} "
        f"(the lock has {labels}; pass --platform/--os/--target)"
    )


def run(args: argparse.Namespace) -> int:
    if bool(args.specs) == bool(args.from_lock):
        raise UsageError("give SPEC arguments or --from-lock FILE (not both)")
    if args.dry_run:
        if args.from_lock:
            raise UsageError("--dry-run does not combine with --from-lock")
        return _dry_run(args)
    root = _root(args)
    projection = _projection(args)
    format_projection(projection, _probe_record())  # reject a bad --projection before fetching
    reporter = make_reporter(json_output=bool(args.json), quiet=bool(args.quiet))
    if args.from_lock:
        resolutions, fetched, store = _fetch_from_lock(args, reporter)
    else:
        resolutions, fetched, store = resolve_and_fetch(args, reporter=reporter)
    try:
        externals: dict[str, BuildRecord] = {}
        for res in resolutions:
            for ext in res.externals:
                externals.setdefault(ext.hash, ext)
        result = install_fetched(
            fetched.items,
            root=root,
            projection=projection,
            force=bool(args.force),
            reporter=reporter,
            externals=list(externals.values()),
        )
    finally:
        store.close()
    unsigned = [f"{i.record.name}/{i.record.short_hash}" for i in fetched.items if i.signer is None]
    if args.json:
        data = result.to_dict()
        data["store"] = str(fetched.store)
        data["downloaded_bytes"] = fetched.downloaded_bytes
        data["unsigned"] = unsigned
        data["requests"] = [
            {
                "request": res.request,
                "selected": res.selected.hash if res.selected is not None else None,
                "prefix": str(result.prefix_of(res.selected.hash))
                if res.selected is not None
                else None,
            }
            for res in resolutions
        ]
        print_json(data)
        return 0
    _print_result(result, unsigned)
    return 0


def _probe_record() -> BuildRecord:
    return BuildRecord(
        name="probe", version="0", hash="a" * 32, platform="linux", os="os", target="target"
    )
