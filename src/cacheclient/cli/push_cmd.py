"""``cacheclient push``: publish builds from the store to an OCI registry or a directory mirror."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cacheclient.cli._common import add_output_options, add_store_option, print_json
from cacheclient.errors import UsageError

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "push",
        help="publish builds from the store to an OCI registry or a directory mirror",
        description="Push builds from the store, each with its runtime dependencies, to "
        "DESTINATION: oci://HOST[:PORT]/REPO (HTTPS) or oci+http://... laid out as Spack lays "
        "out an OCI build cache (one image per build, tag <name>-<version>-<hash>.spack, "
        "index.spack updated), or a directory / file:// URL as a Spack layout-v3 mirror. "
        "Blobs the destination already has are skipped. Registry credentials come from "
        "CACHECLIENT_OCI_USERNAME/CACHECLIENT_OCI_PASSWORD or ~/.docker/config.json. Exit 0 "
        "pushed, 2 usage, 3 a SPEC matched nothing in the store, 5 registry unreachable or "
        "refused, 8 a build or dependency is missing from the store.",
    )
    parser.add_argument("destination", metavar="DESTINATION")
    parser.add_argument("specs", nargs="*", metavar="SPEC", help="builds in the store to push")
    parser.add_argument(
        "--from-lock", metavar="FILE", help="push every build a warm lockfile names"
    )
    parser.add_argument("--all", action="store_true", help="push every build in the store")
    parser.add_argument(
        "--no-index", action="store_true", help="do not update the destination's index"
    )
    parser.add_argument(
        "--mount-from",
        metavar="REPO",
        help="another repository of the same registry to mount blobs from instead of uploading",
    )
    parser.add_argument("--jobs", "-j", type=int, default=8, help="builds pushed in parallel")
    add_store_option(parser)
    add_output_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cacheclient.ci.lock import Lock  # noqa: PLC0415
    from cacheclient.ci.push import push, select_builds  # noqa: PLC0415
    from cacheclient.settings import store_from_option  # noqa: PLC0415

    lock = None
    if args.from_lock:
        try:
            text = Path(args.from_lock).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--from-lock {args.from_lock}: cannot read: {exc.strerror}") from None
        lock = Lock.from_json(text, args.from_lock)
    store = store_from_option(args.store)
    with store:
        hashes = select_builds(store, specs=args.specs, lock=lock, everything=bool(args.all))

        def progress(message: str) -> None:
            if not args.json:  # one result line per build, on stdout
                print(message, flush=True)

        report = push(
            store,
            args.destination,
            hashes,
            update_index=not args.no_index,
            mount_from=args.mount_from,
            progress=progress,
            jobs=args.jobs,
        )
    if args.json:
        print_json(report)
        return 0
    builds = report["builds"]
    if report["kind"] == "oci":
        print(
            f"pushed {len(builds)} build(s) to {report['destination']}: "
            f"{report['blobs_uploaded']} blob(s) uploaded ({report['bytes_uploaded']} bytes), "
            f"index lists {report['index_builds']} build(s)"
        )
    else:
        print(
            f"pushed {len(builds)} build(s) to {report['destination']}: "
            f"{report['files_written']} file(s) written, index lists "
            f"{report['index_builds']} build(s)"
        )
    return 0
