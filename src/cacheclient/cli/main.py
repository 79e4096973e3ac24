"""Entry points: parse the command line, run one command, map errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from cacheclient._version import __version__
from cacheclient.errors import CacheClientError

__all__ = ["build_parser", "install_from_cache", "main"]

# One module per command; each defines ``register(subparsers)`` which adds a parser whose
# default ``func`` takes the parsed namespace and returns an exit code.
COMMANDS = (
    "host",
    "inspect",
    "resolve",
    "fetch",
    "keys",
    "verify",
    "gc",
    "install",
    "warm",
    "push",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cacheclient",
        description="Resolve, fetch, verify and install builds from Spack binary caches.",
    )
    parser.add_argument("--version", action="version", version=f"cacheclient {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for errors (for bug reports)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"cacheclient.cli.{name}_cmd")
        module.register(sub)
    return parser


def _run(parser: argparse.ArgumentParser, argv: Sequence[str], *, program: bool = False) -> int:
    """Run one command; *program*: this is the process's own command line (not a library
    call), so an interrupt may end the process at once."""
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or bool(os.environ.get("CACHECLIENT_DEBUG"))
    try:
        code: int = args.func(args)
    except CacheClientError as exc:
        if debug:
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        if program:
            # Download threads may sit in a blocking read: do not wait for them at exit.
            # Every file is consistent at any instant (partial files resume, flocks die
            # with the process), so ending here loses nothing.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except BrokenPipeError:
        return 0
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``cacheclient COMMAND ...``"""
    parser = build_parser()
    return _run(parser, sys.argv[1:] if argv is None else argv, program=argv is None)


class _SingleCommand:
    """Stands in for ``add_subparsers()`` so one command's ``register`` builds a top parser."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.parser: argparse.ArgumentParser | None = None

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.pop("help", None)
        self.parser = argparse.ArgumentParser(prog=self.prog, **kwargs)
        self.parser.add_argument(
            "--version", action="version", version=f"cacheclient {__version__}"
        )
        self.parser.add_argument("--debug", action="store_true", help="show tracebacks")
        return self.parser


def install_from_cache(argv: Sequence[str] | None = None) -> int:
    """``install-from-cache SPEC...``: the same as ``cacheclient install SPEC...``."""
    single = _SingleCommand("install-from-cache")
    importlib.import_module("cacheclient.cli.install_cmd").register(single)
    if single.parser is None:  # pragma: no cover - register() always adds its parser
        raise RuntimeError("install_cmd.register added no parser")
    return _run(single.parser, sys.argv[1:] if argv is None else argv, program=argv is None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
