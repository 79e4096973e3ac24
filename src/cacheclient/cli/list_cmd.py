"""``cacheclient list [SPEC...]``: the builds installed in a root, like ``spack find``."""

from __future__ import annotations

import argparse
from typing import Any

from cacheclient.cli._common import print_json
from cacheclient.cli._installed import add_root_option, load_root
from cacheclient.cli.terminal import printable
from cacheclient.errors import NoMatchError
from cacheclient.installation.query import match, parse_installed

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "list",
        help="list the builds installed in a root (like `spack find`)",
        description="List the builds installed in --root, all of them or those matching any "
        "SPEC (name, @versions, variants, arch=, /hash). Exit 3 when SPECs are given and "
        "none matches.",
    )
    parser.add_argument("specs", nargs="*", metavar="SPEC", help="e.g. demo-tool@1: /vwaicym")
    parser.add_argument(
        "--paths", "-p", action="store_true", help="show each build's install prefix"
    )
    parser.add_argument(
        "--long", "-l", action="store_true", help="show the full spec line of each build"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    add_root_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root, db, exists = load_root(args)
    found = match(db.records, list(args.specs))
    if args.json:
        print_json(
            {
                "schema": "cacheclient.list",
                "schema_version": 1,
                "root": str(root),
                "builds": [{**rec.to_dict(), "arch": parse_installed(rec).arch} for rec in found],
            }
        )
    else:
        for rec in found:
            arch = parse_installed(rec).arch or "?"
            text = rec.spec if args.long and rec.spec else f"{rec.name}@{rec.version}"
            line = f"{rec.hash[:7]}  {text}"
            if not args.long:
                line += f"  {arch}"
            if args.paths:
                line += f"  {rec.prefix}"
            print(printable(line))
    if args.specs and not found:
        where = str(root) if exists else f"{root} (no builds installed there)"
        raise NoMatchError(f"no installed build matches {' '.join(args.specs)!r} in {where}")
    if not args.json and not found:
        state = "" if exists else " (the root does not exist yet)"
        print(f"no builds installed in {root}{state}")
    return 0
