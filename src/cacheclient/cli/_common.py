"""Option groups shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cacheclient.errors import printable


def add_host_options(parser: argparse.ArgumentParser) -> None:
    """``--platform --os --target --libc --os-compat``: override the probed host."""
    group = parser.add_argument_group("host (defaults: probed; env CACHECLIENT_*; config)")
    group.add_argument("--platform", help="host platform, e.g. linux")
    group.add_argument("--os", dest="host_os", metavar="OS", help="host OS, e.g. ubuntu24.04")
    group.add_argument("--target", help="host microarchitecture, e.g. zen4 or x86_64_v3")
    group.add_argument("--libc", help="host libc, e.g. glibc@2.39")
    group.add_argument(
        "--os-compat",
        choices=("exact", "libc"),
        default=None,
        help="accept builds for the same OS only (exact, default) or for any OS whose libc "
        "the host can run (libc)",
    )


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """``--mirror URL... --metadata PAGE --mirror-base URL``: where builds come from."""
    group = parser.add_argument_group("sources")
    group.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="URL",
        help="a binary mirror (path, file://, http(s)://); repeat for several, in priority order",
    )
    group.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="PAGE",
        help="a cache.spack.io package page (path or URL) to resolve from",
    )
    group.add_argument(
        "--mirror-base",
        default=None,
        metavar="URL",
        help="base URL of the stack mirrors named on a page "
        "(default https://binaries.spack.io/develop)",
    )


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=None,
        metavar="DIR",
        help="local content-addressed store (default: CACHECLIENT_STORE or the user cache dir)",
    )


def add_fetch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", "-j", type=int, default=None, help="parallel downloads")
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept builds without a verified signature (they are reported as such)",
    )
    parser.add_argument(
        "--offline", action="store_true", help="use only the local store; never the network"
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def warn(message: str) -> None:
    """A non-fatal problem the user should see (e.g. a mirror that was skipped), on stderr."""
    print(f"cacheclient: warning: {printable(message)}", file=sys.stderr)
