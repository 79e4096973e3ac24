"""Option groups shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from cacheclient.errors import CacheClientError, StoreError, printable
from cacheclient.events import get_logger

SCHEMA_VERSION = 1
"""Version of every ``--json`` document's schema (``schemas/<name>.json``); bumped when a
field changes meaning or disappears (adding a field keeps the version)."""


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
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress, only warnings and errors on stderr"
    )


@dataclass
class _JsonState:
    command: str = "cacheclient"
    document: dict[str, Any] | None = None


_JSON = _JsonState()


def begin_command(name: str) -> None:
    """Name the running command (its ``--json`` schema is ``cacheclient.<name>``)."""
    _JSON.command = name
    _JSON.document = None


def print_json(data: Any, *, schema: str | None = None) -> None:
    """Set the command's ``--json`` document; ``cli.main`` prints it once the command ends,
    with ``schema``/``schema_version`` first and, when the command failed, an ``error``
    object, so stdout always holds exactly one JSON document."""
    name = schema or _JSON.command
    _JSON.document = {"schema": f"cacheclient.{name}", "schema_version": SCHEMA_VERSION, **data}


def error_object(exc: CacheClientError, hints: list[str]) -> dict[str, Any]:
    """The ``error`` member of a failed command's JSON document."""
    obj: dict[str, Any] = {
        "exit_code": exc.exit_code,
        "type": type(exc).__name__,
        "message": str(exc),
    }
    for attr in ("url", "mirror", "key_id", "source", "path"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and value:
            obj[attr] = value
    if hints:
        obj["hints"] = hints
    return obj


def finish_json(error: dict[str, Any] | None) -> None:
    """Print the command's JSON document (or, when it failed before making one, the error
    document ``cacheclient.error``) on stdout."""
    document = _JSON.document
    _JSON.document = None
    if document is None:
        if error is None:
            return
        document = {
            "schema": "cacheclient.error",
            "schema_version": SCHEMA_VERSION,
            "command": _JSON.command,
        }
    document["error"] = error
    # msgspec: a resolve's closure of thousands of builds is printed in milliseconds, where
    # json.dump(indent=2) takes a good part of a warm command
    import msgspec  # noqa: PLC0415

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(document), indent=2).decode() + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    """A non-fatal problem the user should see (e.g. a mirror that was skipped), on stderr."""
    get_logger("cacheclient").warning("%s", printable(message))


def require_existing_store(root: Any) -> None:
    """Refuse a store that was never created: checking or cleaning it would report success on
    nothing (a CI cache that was never restored must not pass silently). Exit 8."""
    from pathlib import Path  # noqa: PLC0415

    path = Path(root)
    if not (path / ".cacheclient").is_dir() and not (path / "blobs").is_dir():
        what = "does not exist" if not path.exists() else "is not a cacheclient store"
        raise StoreError(
            f"store {path} {what} (nothing was ever fetched into it); pass --store DIR or "
            "set CACHECLIENT_STORE to the store to use"
        )
