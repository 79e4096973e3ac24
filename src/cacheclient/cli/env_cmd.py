"""``cacheclient env SPEC... [--shell sh|csh|fish]``: shell code that makes builds usable.

Like ``spack load --sh``: ``eval "$(cacheclient env demo-tool)"`` puts the build's ``bin``
(and those of its run and link dependencies) on ``PATH``, its man pages on ``MANPATH``, its
``pkg-config`` files on ``PKG_CONFIG_PATH`` and its prefix on ``CMAKE_PREFIX_PATH``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cacheclient.cli._common import print_json, warn
from cacheclient.cli._installed import add_root_option, load_root
from cacheclient.cli.terminal import printable
from cacheclient.installation.query import closure, match_one, prefix_problem
from cacheclient.installation.shellenv import SHELLS, environment, render
from cacheclient.resolution.spec import parse_requests

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "env",
        help="print shell code that puts installed builds on PATH etc. (like `spack load --sh`)",
        description="Print the environment that makes each installed SPEC and its run and "
        "link dependencies usable: PATH, MANPATH, ACLOCAL_PATH, PKG_CONFIG_PATH and "
        "CMAKE_PREFIX_PATH, prefixed to their current values. Use it as "
        'eval "$(cacheclient env SPEC)". Exit 3 when a SPEC matches no build or several.',
    )
    parser.add_argument("specs", nargs="+", metavar="SPEC")
    parser.add_argument(
        "--shell",
        choices=SHELLS,
        default=None,
        help="the shell to write code for (default: from $SHELL: fish, csh for csh/tcsh, else sh)",
    )
    for name in SHELLS:
        parser.add_argument(
            f"--{name}",
            dest="shell",
            action="store_const",
            const=name,
            help=f"same as --shell {name}",
        )
    parser.add_argument(
        "--only",
        choices=("package", "dependencies", "all"),
        default="all",
        help="set up the builds themselves, only their dependencies, or both (default)",
    )
    parser.add_argument("--json", action="store_true", help="print the variables as JSON")
    add_root_option(parser)
    parser.set_defaults(func=run)


def _login_shell(shell: str) -> str:
    name = os.path.basename(shell)
    if name == "fish":
        return "fish"
    if name in ("csh", "tcsh"):
        return "csh"
    return "sh"


def run(args: argparse.Namespace) -> int:
    requests = parse_requests(args.specs, anonymous=True)
    root, db, _ = load_root(args)
    chosen = [match_one(db.records, req, str(root)) for req in requests]
    walk, missing = closure(db.records, [r.hash for r in chosen])
    wanted = {r.hash for r in chosen}
    if args.only == "package":
        walk = [r for r in walk if r.hash in wanted]
    elif args.only == "dependencies":
        walk = [r for r in walk if r.hash not in wanted]
    for dag_hash in missing:
        warn(f"dependency /{dag_hash[:7]} is not installed in {root}: left out")
    usable = []
    for rec in walk:
        label = printable(f"{rec.name}@{rec.version} /{rec.hash[:7]}")
        problem = prefix_problem(rec.prefix)
        if problem is not None:
            warn(f"{label}: its recorded prefix {problem}: left out")
            continue
        if not os.path.isdir(rec.prefix):
            warn(f"{label}: prefix {rec.prefix} is missing")
        usable.append(rec)
    walk = usable
    # Requested builds first on PATH, then their dependencies (the reverse of post-order).
    prefixes = [r.prefix for r in reversed(walk)]
    variables = environment(prefixes, os.environ)
    if args.json:
        print_json(
            {
                "schema": "cacheclient.env",
                "schema_version": 1,
                "root": str(root),
                "builds": [{"name": r.name, "hash": r.hash, "prefix": r.prefix} for r in walk],
                "variables": variables,
            }
        )
        return 0
    sys.stdout.write(render(variables, args.shell or _login_shell(os.environ.get("SHELL", ""))))
    return 0
