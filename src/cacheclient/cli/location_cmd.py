"""``cacheclient location SPEC``: the install prefix of one installed build, for scripts.

``$(cacheclient location demo-tool)/bin/demo-tool`` runs an installed program; like
``spack location -i``, a spec that matches no build or several is an error (exit 3).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cacheclient.cli._installed import add_root_option, load_root
from cacheclient.errors import StoreError
from cacheclient.installation.query import match_one, prefix_problem
from cacheclient.resolution.spec import parse_request

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "location",
        help="print the install prefix of one installed build",
        description="Print the prefix of the one build in --root that matches SPEC. Exit 3 "
        "when none or several match (add @version, variants or /HASH to choose), 8 when the "
        "recorded prefix is missing.",
    )
    parser.add_argument("spec", nargs="+", metavar="SPEC", help="e.g. demo-tool or /vwaicym")
    add_root_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    request = parse_request(" ".join(args.spec), anonymous=True)
    root, db, _ = load_root(args)
    record = match_one(db.records, request, str(root))
    problem = prefix_problem(record.prefix)
    if problem is not None:
        raise StoreError(
            f"{root}: the prefix recorded for {record.name}@{record.version} {problem}"
        )
    if not Path(record.prefix).is_dir():
        raise StoreError(
            f"{record.prefix}: recorded for {record.name}@{record.version} but missing "
            "(reinstall it with --force)"
        )
    print(record.prefix)
    return 0
