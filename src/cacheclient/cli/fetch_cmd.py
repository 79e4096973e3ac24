"""``cacheclient fetch``: resolve specs and fetch their runtime closures into the store.

Other commands (``install``, ``warm``) reuse :func:`add_arguments` and :func:`client_for`, so
every command spells the options, resolves settings and reaches the pipeline the same way.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from cacheclient.cli._common import (
    add_fetch_options,
    add_host_options,
    add_output_options,
    add_source_options,
    add_store_option,
    print_json,
    warn,
)
from cacheclient.cli.render import make_reporter
from cacheclient.errors import UsageError
from cacheclient.events import Reporter
from cacheclient.mirrors.catalogs import offline_sources
from cacheclient.pipeline import Client, Plan
from cacheclient.settings import host_from_args, settings_from_args
from cacheclient.store import default_store_root

__all__ = ["add_arguments", "client_for", "plan_for", "register", "run"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "fetch",
        help="resolve specs and fetch their runtime closure into the local store",
        description="Resolve each SPEC, then download and verify (signature, sha256, size) "
        "every build of its runtime closure into the content-addressed store. Exit 4 when a "
        "signature or checksum fails, 5 when no mirror can provide a build.",
    )
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="e.g. zlib@1.3 +shared")
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sources, host, store, fetch and output options."""
    add_source_options(parser)
    add_host_options(parser)
    add_store_option(parser)
    add_fetch_options(parser)
    add_output_options(parser)


def client_for(args: argparse.Namespace, *, reporter: Reporter | None = None) -> Client:
    """The pipeline client for a command's options (settings resolved once, here)."""
    settings = settings_from_args(args)
    if settings.offline:  # with no source named, the store is a mirror of all it holds
        store_root = settings.store or default_store_root()
        found = offline_sources(settings.metadata, settings.mirrors, store_root)
        settings = replace(settings, mirrors=tuple(found))
    elif not settings.mirrors and not settings.metadata:
        raise UsageError("no source given: pass --mirror URL or --metadata PAGE")
    if reporter is None:
        reporter = make_reporter(
            json_output=bool(getattr(args, "json", False)),
            quiet=bool(getattr(args, "quiet", False)),
        )
    return Client(settings, reporter=reporter, warn=warn)


def plan_for(client: Client, args: argparse.Namespace) -> Plan:
    """Resolve ``args.specs`` on the host the options describe: the plan of the command."""
    return client.plan(list(args.specs), host_from_args(args))


def run(args: argparse.Namespace) -> int:
    client = client_for(args)
    try:
        plan = plan_for(client, args)
        result = client.fetch(plan)
    finally:
        client.close()
    if args.json:
        data = result.to_dict()
        data["requests"] = [
            {
                "request": res.request,
                "selected": res.selected.hash if res.selected is not None else None,
                "closure": [r.hash for r in res.closure],
            }
            for res in plan.resolutions
        ]
        print_json(data)
        return 0
    for item in result.items:
        state = "present" if item.already_present else "fetched"
        signed = f"signed by {item.signer}" if item.signer else "NOT signature-checked"
        print(f"{state:8} {item.record.format()}  from {item.mirror}  ({signed})")
    unsigned = result.unsigned
    if unsigned:
        names = ", ".join(f"{i.record.name}/{i.record.short_hash}" for i in unsigned)
        print(f"warning: {len(unsigned)} build(s) were not signature-checked: {names}")
    print(f"{len(result.items)} build(s) in {result.store}")
    return 0
