"""``cacheclient export (--lock L | SPEC... | --all) DEST``: builds as a standalone mirror.

DEST (new, or an empty directory) becomes a Spack binary mirror holding exactly the selected
builds and their link/run closures, in the layouts they were fetched in, with the indexes of
both layouts and the public keys of their trusted signers: copy it to an air-gapped site or
attach it to a release, then ``spack mirror add NAME DEST`` and ``spack buildcache keys
--install --trust``. A SPEC selects every build of the store that satisfies it (all targets).
Exit codes: 0 exported, 2 usage (DEST not empty, no selection), 3 a hash or SPEC is not in the
store, 4 a stored file fails verification, 8 the store is incomplete or DEST cannot be written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cacheclient.ci.export import export_mirror, select_builds
from cacheclient.ci.lock import Lock
from cacheclient.cli._common import add_store_option, print_json
from cacheclient.errors import UsageError
from cacheclient.resolution.spec import parse_requests
from cacheclient.settings import store_from_option

__all__ = ["register", "run"]


def __dir__() -> list[str]:
    return __all__


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "export",
        help="write builds of the store (and their closures) as a standalone Spack mirror",
        usage="cacheclient export [-h] [--store DIR] [--json] "
        "(--lock LOCK | --all | SPEC [SPEC ...]) DEST",
        description="Write the selected builds of the store, with their runtime closures, "
        "indexes and trusted signers' public keys, into DEST as a self-contained Spack mirror.",
    )
    add_store_option(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--lock", metavar="LOCK", help="export every build a lock file names")
    group.add_argument("--all", action="store_true", help="export every build of the store")
    parser.add_argument(
        "args",
        nargs="+",
        metavar="SPEC|DEST",
        help="the specs to export (every stored build satisfying one, all targets), then DEST: "
        "a new or empty directory",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    *specs, dest = args.args
    chosen = sum(bool(x) for x in (args.lock, args.all, specs))
    if chosen != 1:
        raise UsageError("export: give exactly one of --lock LOCK, --all or SPEC... before DEST")
    hashes: list[str] = []
    if args.lock:
        try:
            text = Path(args.lock).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{args.lock}: cannot read lock: {exc}") from None
        hashes = Lock.from_json(text, args.lock).all_hashes()
    requests = parse_requests(specs) if specs else []
    with store_from_option(getattr(args, "store", None)) as store:
        builds = select_builds(store, hashes=hashes, requests=requests, everything=args.all)
        if not builds:
            raise UsageError(f"export: the store {store.root} holds no build")
        report = export_mirror(store, builds, Path(dest))
    pub = report.publication
    if args.json:
        print_json(report.to_dict())
        return 0
    for build in report.builds:
        print(f"exported {build.name}@{build.version} /{build.hash[:7]} (layout v{build.layout})")
    keys = sorted(set(pub.keys_v3) | set(pub.keys_v2))
    print(
        f"{len(report.builds)} build(s) ({pub.builds_v3} v3, {pub.builds_v2} v2), "
        f"{len(keys)} public key(s) in {report.dest}"
    )
    for fpr in pub.withheld_keys:
        print(f"not published: key {fpr} signed some of these builds but is not trusted")
    return 0
