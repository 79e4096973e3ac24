"""``cacheclient install`` / ``install-from-cache``: resolve, fetch, verify, install, relocate."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from cacheclient import safefs
from cacheclient.ci.lock import Lock, LockedProfile
from cacheclient.ci.warm import check_against_lock
from cacheclient.cli._common import print_json
from cacheclient.cli.fetch_cmd import add_arguments, client_for, plan_for
from cacheclient.cli.render import format_bytes, make_reporter
from cacheclient.errors import UsageError
from cacheclient.installation import DEFAULT_PROJECTION, default_root, format_projection
from cacheclient.installation.installdb import read_db
from cacheclient.installation.installer import InstallResult
from cacheclient.model import BuildRecord
from cacheclient.pipeline import Client
from cacheclient.settings import host_from_args, settings_from_args

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
        "resolution); the lock profile of the host, else the best one it can run (see --profile)",
    )
    group.add_argument(
        "--profile",
        metavar="NAME",
        help="with --from-lock: the lock profile to install (platform-os-target, e.g. "
        "linux-debian12-x86_64_v3); default: the host's own, else the best one it can run",
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


def _dry_run(args: argparse.Namespace) -> int:
    """The real plan, with nothing downloaded but verified metadata: signatures checked,
    closures from the signed specs, sizes from the signed manifests."""
    root = _root(args)
    projection = _projection(args)
    client = client_for(args)
    try:
        plan = plan_for(client, args)
        store_root = client.store.root
    finally:
        client.close()
    db = read_db(root) if (root / ".cacheclient").is_dir() else None
    rows: list[dict[str, Any]] = []
    missing = {r.hash for r in plan.to_fetch()}
    for rec in plan.builds:
        known = db.get(rec.hash) if db is not None else None
        if known is not None and not args.force and Path(known.prefix).is_dir():
            action, prefix = "already-installed", known.prefix
        else:
            action = "reinstall" if known is not None else "install"
            prefix = str(root / format_projection(projection, rec))
        rows.append(
            {
                "name": rec.name,
                "version": rec.version,
                "hash": rec.hash,
                "spec": rec.format(),
                "action": action,
                "prefix": prefix,
                "fetch": action != "already-installed" and rec.hash in missing,
                "tarball_size": plan.tarball_size(rec.hash),
                "signed": plan.signed(rec.hash),
            }
        )
    to_fetch = sum(r["tarball_size"] or 0 for r in rows if r["fetch"])
    if args.json:
        print_json(
            {
                "dry_run": True,
                "root": str(root),
                "store": str(store_root),
                "builds": rows,
                "externals": [
                    {"name": e.name, "version": e.version, "path": e.external_path}
                    for e in plan.externals
                ],
                "fetch_bytes": to_fetch,
            }
        )
        return 0
    print(f"dry run: nothing is changed; root {root}, store {store_root}")
    for r in rows:
        shown = format_bytes(r["tarball_size"]) if r["tarball_size"] is not None else "size ?"
        source = "fetch" if r["fetch"] else "in store"
        signed = "" if r["signed"] else ", NOT signature-checked"
        detail = "" if r["action"] == "already-installed" else f"  ({source}, {shown}{signed})"
        print(f"{r['action']:17} {r['spec']}\n{'':17} -> {r['prefix']}{detail}")
    for ext in plan.externals:
        print(f"{'external':17} {ext.name}@{ext.version} (from the host: {ext.external_path})")
    n_install = sum(1 for r in rows if r["action"] != "already-installed")
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


def _lock_profile(lock: Lock, args: argparse.Namespace) -> LockedProfile:
    """The profile to install: ``--profile``, the host's own, else the best it can run
    (:mod:`cacheclient.ci.lockprofile`); said on stderr when it is not the host's own."""
    from cacheclient.ci.lockprofile import choose_profile  # noqa: PLC0415

    choice = choose_profile(
        lock.profiles,
        host_from_args(args),
        os_compat=settings_from_args(args).os_compat,
        name=getattr(args, "profile", None),
        source=args.from_lock,
    )
    if not choice.exact and not args.quiet:
        label = choice.locked.profile.label()
        print(f"cacheclient: using lock profile {label}: {choice.reason}", file=sys.stderr)
    return choice.locked


def run(args: argparse.Namespace) -> int:
    if bool(args.specs) == bool(args.from_lock):
        raise UsageError("give SPEC arguments or --from-lock FILE (not both)")
    if args.dry_run:
        if args.from_lock:
            raise UsageError("--dry-run does not combine with --from-lock")
        return _dry_run(args)
    root = _root(args)
    format_projection(_projection(args), _probe_record())  # a bad --projection fails first
    reporter = make_reporter(json_output=bool(args.json), quiet=bool(args.quiet))
    lock: Lock | None = None
    if args.from_lock:
        lock = _read_lock(args)
        mirrors = tuple(m.url for m in lock.mirrors)
        unsigned = tuple(m.url for m in lock.mirrors if not m.signed)
        client = Client(
            replace(settings_from_args(args), mirrors=mirrors, unsigned_mirrors=unsigned),
            reporter=reporter,
        )
    else:
        client = client_for(args, reporter=reporter)
    try:
        if lock is not None:
            plan = client.plan_lock(lock, _lock_profile(lock, args), args.from_lock)
        else:
            plan = plan_for(client, args)
        fetched = client.fetch(plan)
        if lock is not None:
            check_against_lock(lock, fetched)
        result = client.install(plan, root=root, force=bool(args.force), fetched=fetched)
    finally:
        client.close()
    unsigned_builds = [
        f"{i.record.name}/{i.record.short_hash}" for i in fetched.items if i.signer is None
    ]
    if args.json:
        data = result.to_dict()
        data["store"] = str(fetched.store)
        data["downloaded_bytes"] = fetched.downloaded_bytes
        data["unsigned"] = unsigned_builds
        data["lock_profile"] = plan.profile  # with --from-lock: the profile installed
        data["requests"] = [
            {
                "request": res.request,
                "selected": res.selected.hash if res.selected is not None else None,
                "prefix": str(result.prefix_of(res.selected.hash))
                if res.selected is not None
                else None,
            }
            for res in plan.resolutions
        ]
        print_json(data)
        return 0
    _print_result(result, unsigned_builds)
    return 0


def _read_lock(args: argparse.Namespace) -> Lock:
    try:
        text = Path(args.from_lock).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--from-lock {args.from_lock}: cannot read: {exc}") from None
    return Lock.from_json(text, args.from_lock)


def _probe_record() -> BuildRecord:
    return BuildRecord(
        name="probe", version="0", hash="a" * 32, platform="linux", os="os", target="target"
    )
