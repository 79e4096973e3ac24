"""``cacheclient resolve``: pick the best build per request and explain the choice."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from cacheclient.cli._common import (
    add_host_options,
    add_output_options,
    add_source_options,
    add_store_option,
    print_json,
    warn,
)
from cacheclient.errors import NoMatchError
from cacheclient.mirrors.catalogs import load_catalog, offline_sources
from cacheclient.resolution.host import HostProfile
from cacheclient.resolution.resolve import Resolution, closest_candidates, no_match_message, resolve
from cacheclient.resolution.spec import parse_requests
from cacheclient.settings import host_from_args, settings_from_args
from cacheclient.store import Store

__all__ = ["register", "run"]

_SHOWN_WHEN_NOTHING_MATCHES = 5


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "resolve",
        help="pick the best build for each spec on this host and explain why",
        description="Resolve each SPEC against a cache.spack.io page or binary mirrors. "
        "Exit 0 when every spec has a build, 3 when one has none.",
    )
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="e.g. zlib@1.3 +shared")
    add_source_options(parser)
    add_store_option(parser)
    add_host_options(parser)
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never use the network: cached indexes only; with no source named, the builds "
        "the store holds",
    )
    parser.add_argument(
        "--explain", action="store_true", help="also list rejected builds with their reasons"
    )
    add_output_options(parser)
    parser.set_defaults(func=run)


def _print_human(results: Sequence[Resolution], host: HostProfile, explain: bool) -> None:
    print(f"host: {host}")
    for res in results:
        sel = res.selected
        if sel is None:
            print(f"{res.request}: nothing matches")
        else:
            stacks = f"  stacks: {', '.join(sel.stacks)}" if sel.stacks else ""
            print(f"{res.request}: {sel.format()}{stacks}")
            for dep in res.closure[:-1]:
                print(f"    needs {dep.name}@{dep.version} /{dep.short_hash} ({dep.target})")
            for ext in res.externals:
                print(f"    external {ext.name}@{ext.version} (from the host: {ext.external_path})")
        if explain:
            shown = res.candidates
        elif sel is None:
            shown = closest_candidates(res, _SHOWN_WHEN_NOTHING_MATCHES)
        else:
            continue
        for cand in shown:
            r = cand.record
            head = f"  {'#' + str(cand.rank) if cand.accepted else 'no':>4}  {r.hash[:7]}  "
            head += f"{r.name}@{r.version} {r.os} {r.target}"
            if cand.accepted:
                print(head)
            else:
                print(f"{head}: " + "; ".join(f"[{x.axis}] {x.message}" for x in cand.reasons))
        hidden = len(res.candidates) - len(shown)
        if hidden > 0:
            print(f"  ... {hidden} more rejected builds (use --explain to list them all)")


def run(args: argparse.Namespace) -> int:
    """Pure selection over the sources' metadata: no build's signed metadata is fetched (a
    page's builds show only themselves as their closure; ``install --dry-run`` shows the
    closure from the signed specs)."""
    requests = parse_requests(args.specs)
    host = host_from_args(args)
    settings = settings_from_args(args)
    os_compat, offline = settings.os_compat, settings.offline
    mirrors = list(settings.mirrors)
    store = Store(settings.store) if (mirrors or offline) else None
    try:
        if offline and store is not None:
            mirrors = offline_sources(settings.metadata, mirrors, store.root)
        catalog = load_catalog(settings.metadata, mirrors, store=store, offline=offline, warn=warn)
        results = resolve(requests, catalog, host, os_compat=os_compat, preferred_stacks=mirrors)
    finally:
        if store is not None:
            store.close()
    failed = [r for r in results if r.selected is None]
    if args.json:
        print_json(
            {
                "host": host.to_dict(),
                "os_compat": os_compat,
                "source": catalog.source,
                "warnings": list(catalog.warnings),
                "requests": [r.to_dict() for r in results],
            }
        )
    else:
        _print_human(results, host, args.explain)
    for res in failed[1:]:
        warn(no_match_message(res))
    if failed:
        raise NoMatchError(no_match_message(failed[0]))
    return 0
