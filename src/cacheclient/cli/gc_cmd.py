"""``cacheclient gc --max-size SIZE | --older-than AGE``: evict least-recently-used blobs.

The store records a blob's last use as its mtime (set whenever a fetch or install uses it).
Blobs are evicted oldest first; a blob some running process is using (a shared lock on its
``.use`` file) is never evicted, and the blob of the store's current index is kept. Builds
that lost a blob are forgotten and the index is rewritten, so the store stays a valid mirror.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from cacheclient.cli._common import add_store_option, print_json, require_existing_store
from cacheclient.cli.render import format_bytes
from cacheclient.errors import UsageError
from cacheclient.settings import store_from_option
from cacheclient.store import Store
from cacheclient.store.publish import published_blobs

__all__ = ["collect_garbage", "parse_age", "parse_size", "register", "run"]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str) -> int:
    """Bytes from ``500M``, ``10GiB``, ``1.5G``, ``2048`` (K/M/G/T/P are powers of 1024).

    >>> parse_size("1.5K"), parse_size("2GiB")
    (1536, 2147483648)
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(f"--max-size {text!r}: expected a size such as 500M, 10G or 2048")
    number, unit = float(match.group(1)), match.group(2).lower()
    power = " kmgtp".index(unit) if unit else 0
    return int(number * 1024**power)


def parse_age(text: str) -> float:
    """Seconds from ``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` (plain numbers are seconds).

    >>> parse_age("2h"), parse_age("1w")
    (7200.0, 604800.0)
    """
    match = _AGE_RE.match(text)
    if not match:
        raise UsageError(f"--older-than {text!r}: expected an age such as 30d, 12h or 90m")
    return float(match.group(1)) * _AGE_UNITS[match.group(2).lower()]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "gc",
        help="evict least-recently-used blobs (never one in use)",
        description="Evict least-recently-used blobs until the store fits --max-size and/or "
        "holds nothing unused for longer than --older-than.",
    )
    add_store_option(parser)
    parser.add_argument("--max-size", metavar="SIZE", help="e.g. 20G: shrink the store below it")
    parser.add_argument("--older-than", metavar="AGE", help="e.g. 30d: evict blobs unused since")
    parser.add_argument("--dry-run", action="store_true", help="only say what would be evicted")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(func=run)


def collect_garbage(
    store: Store,
    *,
    max_size: int | None = None,
    older_than: float | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> dict[str, Any]:
    """Evict LRU blobs per the limits; returns what was evicted, kept (in use) and the sizes."""
    now = time.time() if now is None else now
    keep = published_blobs(store)  # the index and key blobs the store publishes
    entries: list[tuple[float, int, str, Path]] = []
    for checksum, path in store.iter_blobs():
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((stat.st_mtime, stat.st_size, checksum, path))  # mtime = last use
    entries.sort()
    total = sum(e[1] for e in entries)
    size_now = total
    evicted: list[dict[str, Any]] = []
    in_use: list[str] = []
    for last_used, size, checksum, _path in entries:
        if checksum in keep:
            continue
        too_old = older_than is not None and now - last_used > older_than
        too_big = max_size is not None and size_now > max_size
        if not (too_old or too_big):
            continue
        ok = True if dry_run else store.remove_blob(checksum)
        if ok:
            size_now -= size
            evicted.append({"digest": checksum, "size": size, "last_used": last_used})
        else:
            in_use.append(checksum)
    forgotten: list[str] = []
    orphans: list[str] = []
    if evicted and not dry_run:
        lost = [
            b
            for b in store.builds()
            if not (store.has_blob(b.tarball.checksum) and store.has_blob(b.spec_blob.checksum))
        ]
        for build in lost:
            store.remove_build(build.hash)
            forgotten.append(build.hash)
        # The other blob of a forgotten build is an orphan now: no manifest names it.
        remaining = {r.checksum for b in store.builds() for r in (b.tarball, b.spec_blob)}
        for ref in {r for b in lost for r in (b.tarball, b.spec_blob)}:
            path = store.blob_path(ref.checksum)
            if ref.checksum in remaining or not path.is_file():
                continue
            size = path.stat().st_size
            if store.remove_blob(ref.checksum):
                size_now -= size
                orphans.append(ref.checksum)
        store.write_index()
    for partial in sorted((store.private_dir / "partial").glob("*.partial")):
        try:
            age = now - partial.stat().st_mtime
        except OSError:
            continue
        if older_than is not None and age > older_than and not dry_run:
            store.discard_partial(partial.stem)
    return {
        "store": str(store.root),
        "size_before": total,
        "size_after": size_now,
        "evicted": evicted,
        "in_use_kept": in_use,
        "builds_forgotten": forgotten,
        "orphans_removed": sorted(orphans),
        "dry_run": dry_run,
    }


def run(args: argparse.Namespace) -> int:
    if not args.max_size and not args.older_than:
        raise UsageError("gc: give --max-size SIZE and/or --older-than AGE")
    max_size = parse_size(args.max_size) if args.max_size else None
    older_than = parse_age(args.older_than) if args.older_than else None
    store = store_from_option(getattr(args, "store", None))
    require_existing_store(store.root)
    report = collect_garbage(
        store, max_size=max_size, older_than=older_than, dry_run=bool(args.dry_run)
    )
    if args.json:
        print_json(report)
        return 0
    verb = "would evict" if args.dry_run else "evicted"
    freed = sum(e["size"] for e in report["evicted"])
    print(
        f"{verb} {len(report['evicted'])} blob(s), {format_bytes(freed)}; store "
        f"{format_bytes(report['size_before'])} -> {format_bytes(report['size_after'])}"
    )
    if report["in_use_kept"]:
        print(f"kept {len(report['in_use_kept'])} blob(s) in use by running processes")
    return 0
