"""``cacheclient uninstall SPEC...``: remove installed builds (and their prefixes) from a root."""

from __future__ import annotations

import argparse
from typing import Any

from cacheclient.cli._common import print_json, warn
from cacheclient.cli._installed import add_root_option, root_from_args
from cacheclient.cli.terminal import printable
from cacheclient.installation.uninstall import uninstall

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "uninstall",
        help="remove installed builds and their prefixes from a root",
        description="Remove the build matching each SPEC from --root: its prefix and its "
        "record, together. A build another installed build depends on is kept unless "
        "--force. Exit 3: no build matches; 2: ambiguous or still needed; 8: a recorded "
        "prefix is not safely inside the root.",
    )
    parser.add_argument("specs", nargs="+", metavar="SPEC")
    parser.add_argument(
        "--force",
        "-f",
        action="store_true",
        help="remove even builds that other installed builds depend on",
    )
    parser.add_argument(
        "--all", "-a", action="store_true", help="remove every build a SPEC matches"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    add_root_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = root_from_args(args)
    result = uninstall(root, list(args.specs), force=bool(args.force), all_matches=bool(args.all))
    if args.json:
        print_json({"schema": "cacheclient.uninstall", "schema_version": 1, **result.to_dict()})
        return 0
    for message in result.warnings:
        warn(message)
    for removal in result.removed:
        rec = removal.record
        gone = "" if removal.prefix_removed else " (its prefix was already gone)"
        print(
            printable(f"uninstalled {rec.name}@{rec.version} /{rec.hash[:7]}  {rec.prefix}{gone}")
        )
    return 0
