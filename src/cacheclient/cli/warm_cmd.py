"""``cacheclient warm``: pre-fetch what CI jobs will need, for hosts they are not, into a store."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from cacheclient.ci.lock import Lock
from cacheclient.ci.manifest import Profile, parse_manifest_text
from cacheclient.ci.warm import WarmReport, warm, warm_from_lock
from cacheclient.cli._common import add_output_options, add_store_option, print_json, warn
from cacheclient.cli.render import make_reporter
from cacheclient.errors import NoMatchError, UsageError
from cacheclient.pipeline import Client
from cacheclient.settings import normalise_mirror, settings_from_args

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "warm",
        help="fetch every spec of a CI manifest (or a lock) for every host profile into a store",
        description="Resolve every spec for every profile of MANIFEST and fetch the union of "
        "the runtime closures into the store, each blob once. Exit 0 all warmed, 3 a spec had "
        "no build for a profile (unless --allow-missing), 4 verification failed, 5 no mirror "
        "reachable.",
    )
    parser.add_argument("manifest", nargs="?", metavar="MANIFEST.yaml")
    parser.add_argument("--lock", metavar="FILE", help="write a deterministic lockfile")
    parser.add_argument(
        "--from-lock", metavar="FILE", help="fetch exactly what FILE names, without resolving"
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="list specs with no build for a profile but still exit 0",
    )
    parser.add_argument("--jobs", "-j", type=int, default=None, help="parallel downloads")
    parser.add_argument(
        "--allow-unsigned", action="store_true", help="accept builds without a verified signature"
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use only the store (with --from-lock: check the store holds all of it)",
    )
    add_store_option(parser)
    add_output_options(parser)
    parser.set_defaults(func=run)


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path}: not UTF-8 text") from None


def _this_host() -> Profile:
    from cacheclient.resolution.host import detect_host  # noqa: PLC0415

    host = detect_host()
    libc = f"{host.libc.name}@{host.libc.version}" if host.libc else None
    return Profile(platform=host.platform, os=host.os, target=host.target, libc=libc)


def _print_human(report: WarmReport, cache_key: str | None) -> None:
    for sel in report.selections:
        if sel.selected is None:
            print(f"{sel.profile.label():40} {sel.request}: NO BUILD ({sel.message})")
        else:
            r = sel.selected
            print(
                f"{sel.profile.label():40} {sel.request}: {r.name}@{r.version} /{r.short_hash} "
                f"{r.os}-{r.target} (+{len(sel.closure) - 1} deps)"
            )
    t = report.totals()
    print(
        f"builds {t['builds']}: blobs present {t['blobs_present']}, fetched {t['blobs_fetched']},"
        f" failed {t['blobs_failed']}; {t['bytes_transferred']} bytes in {t['seconds']} s"
    )
    for mirror, counts in t["mirrors"].items():
        print(
            f"  {mirror}: {counts['builds']} builds, {counts['blobs_fetched']} blobs fetched, "
            f"{counts['requests']} requests, {counts['failures']} failures"
        )
    if t["not_signature_checked"]:
        print("NOT signature-checked: " + ", ".join(t["not_signature_checked"]))
    for sel in report.missing:
        print(f"missing: {sel.request} for {sel.profile.label()}", file=sys.stderr)
    if cache_key:
        print(f"cache-key: {cache_key}")


def run(args: argparse.Namespace) -> int:
    if bool(args.manifest) == bool(args.from_lock):
        raise UsageError("give either MANIFEST.yaml or --from-lock FILE")
    reporter = make_reporter(json_output=args.json, quiet=args.quiet)
    base = settings_from_args(args)
    if args.from_lock:
        lock = Lock.from_json(_read(args.from_lock, "--from-lock"), args.from_lock)
        settings = replace(
            base,
            mirrors=tuple(m.url for m in lock.mirrors),
            unsigned_mirrors=tuple(m.url for m in lock.mirrors if not m.signed),
        )
        with Client(settings, reporter=reporter, warn=warn) as client:
            report = warm_from_lock(lock, client=client)
    else:
        manifest = parse_manifest_text(_read(args.manifest, "manifest"), args.manifest)
        urls = tuple(normalise_mirror(m.url) for m in manifest.mirrors)
        settings = replace(
            base,
            mirrors=urls,
            metadata=tuple(manifest.metadata),
            unsigned_mirrors=tuple(
                normalise_mirror(m.url) for m in manifest.mirrors if not m.signed
            ),
            mirror_base=manifest.mirror_base or base.mirror_base,
        )
        profiles = list(manifest.profiles) or [_this_host()]
        with Client(settings, reporter=reporter, warn=warn) as client:
            report = warm(
                manifest, client=client, profiles=profiles, allow_missing=args.allow_missing
            )
        if args.lock:
            _lock_out(Path(args.lock), report)
    cache_key = report.lock.cache_key() if report.lock else None
    if args.json:
        print_json(report.to_dict())
    else:
        _print_human(report, cache_key)
    if report.error is not None:
        raise report.error
    if report.exit_code == NoMatchError.exit_code:
        raise NoMatchError(
            f"{len(report.missing)} spec(s) have no build for a profile (listed above); "
            "--allow-missing accepts that"
        )
    return report.exit_code


def _lock_out(path: Path, report: WarmReport) -> None:
    """Write the lock only for a run that succeeded (missing specs count as a failure unless
    --allow-missing): a failed run leaves an existing lock exactly as it was."""
    from cacheclient.ci.lockfile import write_lock  # noqa: PLC0415

    if report.lock is not None and report.exit_code == 0:
        write_lock(path, report.lock)
    else:
        warn(f"--lock {path}: not written, the run failed (an existing lock is left as it was)")
