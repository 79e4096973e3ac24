"""``cacheclient fetch``: resolve specs and fetch their runtime closures into the store.

Other commands (``install``, ``warm``) reuse :func:`add_arguments` and :func:`resolve_and_fetch`
so every command spells the options and reaches the store the same way.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from cacheclient import safefs
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
from cacheclient.fetch import DEFAULT_MIRROR_BASE, FetchResult, fetch_builds
from cacheclient.metadata.catalog import Catalog
from cacheclient.mirrors.catalogs import load_catalog
from cacheclient.model import BuildRecord
from cacheclient.settings import store_from_option
from cacheclient.store import INDEX_MANIFEST, Store

__all__ = [
    "add_arguments",
    "collect_records",
    "load_sources",
    "normalise_mirror",
    "register",
    "resolve_and_fetch",
    "run",
]


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


def normalise_mirror(url: str) -> str:
    """Absolute path for a local directory given as a relative path; URLs unchanged."""
    if "://" in url:
        return url.rstrip("/")
    return str(safefs.expand_path(url, "mirror").absolute())


def _config_value(name: str) -> Any:
    from cacheclient.settings import load_config  # noqa: PLC0415

    return getattr(load_config(), name, None)


def load_sources(args: argparse.Namespace, store: Store) -> tuple[Catalog, list[str]]:
    """The merged catalog of ``--metadata`` pages and ``--mirror``s, and the mirror URLs."""
    mirrors = [normalise_mirror(m) for m in (args.mirror or [])]
    metadata = list(getattr(args, "metadata", None) or [])
    if not mirrors and not metadata:
        mirrors = [normalise_mirror(m) for m in (_config_value("mirrors") or ())]
    offline = bool(getattr(args, "offline", False))
    if not mirrors and not metadata and offline and (store.root / INDEX_MANIFEST).is_file():
        mirrors = [str(store.root)]  # the store is a mirror of everything it holds
    if not mirrors and not metadata:
        raise UsageError("no source given: pass --mirror URL or --metadata PAGE")
    catalog = load_catalog(metadata, mirrors, store=store, offline=offline, warn=warn)
    return catalog, mirrors


def collect_records(resolutions: Sequence[Any]) -> list[BuildRecord]:
    """Every build of every resolution's runtime closure, dependencies first, once each."""
    seen: dict[str, BuildRecord] = {}
    for res in resolutions:
        closure = list(res.closure) or ([res.selected] if res.selected is not None else [])
        for record in closure:
            seen.setdefault(record.hash, record)
    return list(seen.values())


def _jobs(args: argparse.Namespace) -> int:
    jobs = getattr(args, "jobs", None)
    if jobs is None:
        jobs = _config_value("jobs") or 8
    try:
        value = int(jobs)
    except (TypeError, ValueError):
        raise UsageError(f"--jobs must be a positive integer, not {jobs!r}") from None
    if value < 1:
        raise UsageError(f"--jobs must be a positive integer, not {value}")
    return value


def resolve_and_fetch(
    args: argparse.Namespace, *, reporter: Reporter | None = None
) -> tuple[list[Any], FetchResult, Store]:
    """Resolve ``args.specs`` on the host the options describe and fetch every closure."""
    from cacheclient.cli.resolve_cmd import os_compat_from_args  # noqa: PLC0415
    from cacheclient.resolution.resolve import resolve_or_raise  # noqa: PLC0415
    from cacheclient.settings import host_from_args  # noqa: PLC0415

    jobs = _jobs(args)
    store = store_from_option(getattr(args, "store", None))
    catalog, mirrors = load_sources(args, store)
    host = host_from_args(args)
    resolutions = resolve_or_raise(
        list(args.specs), catalog, host, os_compat=os_compat_from_args(args)
    )
    records = collect_records(resolutions)
    if reporter is None:
        reporter = make_reporter(
            json_output=bool(getattr(args, "json", False)),
            quiet=bool(getattr(args, "quiet", False)),
        )
    base = (
        getattr(args, "mirror_base", None)
        or _config_value("mirror_base")
        or os.environ.get("CACHECLIENT_MIRROR_BASE")
        or DEFAULT_MIRROR_BASE
    )
    result = fetch_builds(
        records,
        mirrors=mirrors,
        store=store,
        trust=None,
        allow_unsigned=bool(getattr(args, "allow_unsigned", False)),
        offline=bool(getattr(args, "offline", False)),
        jobs=jobs,
        reporter=reporter,
        mirror_base=base,
    )
    return resolutions, result, store


def run(args: argparse.Namespace) -> int:
    resolutions, result, store = resolve_and_fetch(args)
    try:
        if args.json:
            data = result.to_dict()
            data["requests"] = [
                {
                    "request": res.request,
                    "selected": res.selected.hash if res.selected is not None else None,
                    "closure": [r.hash for r in res.closure],
                }
                for res in resolutions
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
    finally:
        store.close()
    return 0
