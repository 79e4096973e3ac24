"""``cacheclient verify [--repair]``: re-hash every blob of the store and report what is corrupt.

A blob is corrupt when its sha256 is not its file name. A build is broken when its metadata file
or one of its blobs is missing or corrupt. ``--repair`` removes corrupt blobs (unless a running
process is using one), forgets broken builds and rewrites the store's index; a later ``fetch``
downloads them again. Without ``--repair`` problems exit with code 4.
"""

from __future__ import annotations

import argparse
from typing import Any

from cacheclient.cli._common import add_store_option, print_json, require_existing_store
from cacheclient.errors import VerificationError
from cacheclient.settings import store_from_option
from cacheclient.store import Store, sha256_file

__all__ = ["register", "run", "verify_store"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "verify",
        help="re-hash every blob in the store; report (or --repair) what is corrupt",
        description="Re-hash every blob of the store. Exit 0 when everything is intact (or "
        "was repaired), 4 when something is corrupt.",
    )
    add_store_option(parser)
    parser.add_argument(
        "--repair",
        action="store_true",
        help="remove corrupt blobs and broken builds (fetch them again later)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(func=run)


def verify_store(store: Store, *, repair: bool = False) -> dict[str, Any]:
    """Check every blob and build; with *repair*, remove what is corrupt. Returns a report."""
    corrupt: list[dict[str, str]] = []
    checked = 0
    total = 0
    bad: set[str] = set()
    for checksum, path in store.iter_blobs():
        checked += 1
        try:
            actual = sha256_file(path)
            total += path.stat().st_size
        except OSError as exc:
            actual = f"unreadable: {exc.strerror}"
        if actual != checksum:
            bad.add(checksum)
            corrupt.append({"digest": checksum, "actual": actual, "path": str(path)})
    broken: list[dict[str, str]] = []
    for build in store.builds():
        problems = []
        if store.read_file(build.metadata_path) is None:
            problems.append(f"metadata {build.metadata_path} missing")
        for kind, ref in (("spec", build.spec_blob), ("tarball", build.tarball)):
            if ref.checksum in bad:
                problems.append(f"{kind} blob {ref.checksum} corrupt")
            elif not store.has_blob(ref.checksum):
                problems.append(f"{kind} blob {ref.checksum} missing")
        if problems:
            broken.append(
                {
                    "build": f"{build.name}@{build.version}/{build.hash}",
                    "hash": build.hash,
                    "problem": "; ".join(problems),
                }
            )
    removed: list[str] = []
    kept_in_use: list[str] = []
    if repair:
        for entry in corrupt:
            if store.remove_blob(entry["digest"]):
                removed.append(entry["digest"])
            else:
                kept_in_use.append(entry["digest"])
        for entry in broken:
            store.remove_build(entry["hash"])
        if corrupt or broken:
            store.write_index()
    return {
        "store": str(store.root),
        "blobs_checked": checked,
        "bytes_checked": total,
        "corrupt": corrupt,
        "broken_builds": broken,
        "repaired": repair,
        "removed": removed,
        "in_use_not_removed": kept_in_use,
    }


def run(args: argparse.Namespace) -> int:
    store = store_from_option(getattr(args, "store", None))
    require_existing_store(store.root)
    report = verify_store(store, repair=bool(args.repair))
    corrupt, broken = report["corrupt"], report["broken_builds"]
    if args.json:
        print_json(report)
    else:
        print(
            f"checked {report['blobs_checked']} blob(s), {report['bytes_checked']} bytes "
            f"in {store.root}"
        )
        for entry in corrupt:
            print(f"CORRUPT {entry['path']}: sha256 is {entry['actual']}")
        for entry in broken:
            print(f"BROKEN  {entry['build']}: {entry['problem']}")
        if args.repair and (corrupt or broken):
            print(
                f"repaired: removed {len(report['removed'])} blob(s), forgot {len(broken)} "
                f"build(s); {len(report['in_use_not_removed'])} blob(s) in use were kept"
            )
    if (corrupt or broken) and not args.repair:
        first = corrupt[0]["path"] if corrupt else broken[0]["build"]
        raise VerificationError(
            f"{store.root}: {len(corrupt)} corrupt blob(s), {len(broken)} broken build(s) "
            f"(first: {first}); run 'cacheclient verify --repair'"
        )
    if report["in_use_not_removed"]:
        raise VerificationError(
            f"{store.root}: {len(report['in_use_not_removed'])} corrupt blob(s) are in use by "
            "a running process and were kept; run 'cacheclient verify --repair' again later"
        )
    return 0
