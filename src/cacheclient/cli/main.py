"""Entry points: parse the command line, run one command, map errors to exit codes.

Every command accepts ``-q``, ``-v``/``-vv`` and ``--debug`` before or after its name. Errors
are printed once, on stderr, as one line (plus the exact commands that fix it, when there are
some); with ``--json`` stdout also gets one JSON document: the command's result, or an error
document (``cacheclient.error``) carrying the exit code and the message.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from cacheclient._version import __version__
from cacheclient.cli import _common
from cacheclient.cli.render import (
    GuardedStdout,
    configure_output,
    stop_display,
    write_diagnostic,
)
from cacheclient.errors import (
    CacheClientError,
    VerificationError,
    printable,
    printable_lines,
    redact,
)

__all__ = ["build_parser", "install_from_cache", "main"]


def __dir__() -> list[str]:
    return __all__


# One module per command; each defines ``register(subparsers)`` which adds a parser whose
# default ``func`` takes the parsed namespace and returns an exit code. Only the module of the
# command being run is imported (``--help``, ``--version`` and each command start fast); the
# one-line help of the others is repeated here (tests/cli/test_main.py keeps it in step).
COMMANDS = {
    "host": "show the host profile (platform, OS, target, libc) and the targets it can run",
    "inspect": "show what a binary mirror or a cache.spack.io page holds",
    "resolve": "pick the best build for each spec on this host and explain why",
    "fetch": "resolve specs and fetch their runtime closure into the local store",
    "keys": "list, trust, untrust or fetch the keys that sign builds",
    "verify": "re-hash every blob in the store; report (or --repair) what is corrupt",
    "gc": "evict least-recently-used blobs (never one in use)",
    "install": "install specs and their runtime closure from binary caches into a root",
    "warm": "fetch every spec of a CI manifest (or a lock) for every host profile into a store",
    "list": "list the builds installed in a root (like `spack find`)",
    "location": "print the install prefix of one installed build",
    "env": "print shell code that puts installed builds on PATH etc. (like `spack load --sh`)",
    "uninstall": "remove installed builds and their prefixes from a root",
    "config": "show every effective setting and where it comes from",
    "completion": "print a shell completion script (bash, zsh, fish)",
    "export": "write builds of the store (and their closures) as a standalone Spack mirror",
    "push": "publish builds from the store to an OCI registry or a directory mirror",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors (exit 2) also become a JSON error document when ``--json`` was given."""

    json_requested = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_requested:
            _common.finish_json(
                {"exit_code": 2, "type": "UsageError", "message": f"{self.prog}: {message}"}
            )
        super().error(message)


def _add_common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-q -v --debug``; on the top parser they go to ``*_top`` so a subcommand's own
    default does not overwrite them."""
    suffix = "_top" if top else ""
    taken = parser._option_string_actions
    group = parser.add_argument_group("output") if not top else parser
    if "-v" not in taken:
        group.add_argument(
            "-v",
            "--verbose",
            dest=f"verbose{suffix}",
            action="count",
            default=0,
            help="more detail on stderr: -v retries, skipped mirrors, each download; -vv debug",
        )
    if "-q" not in taken and "--quiet" not in taken:
        group.add_argument(
            "-q",
            "--quiet",
            dest=f"quiet{suffix}",
            action="store_true",
            help="no progress, only warnings and errors on stderr",
        )
    if "--debug" not in taken:
        group.add_argument(
            "--debug",
            dest=f"debug{suffix}",
            action="store_true",
            help="show tracebacks for errors (for bug reports)",
        )


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: list[argparse.ArgumentParser] = []
            for child in dict.fromkeys(action.choices.values()):
                found.extend(_leaves(child))
            return found
    return [parser]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser; with *only*, just that command's module is imported (the
    others are listed by name and help line)."""
    parser = _Parser(
        prog="cacheclient",
        description="Resolve, fetch, verify and install builds from Spack binary caches.",
    )
    parser.add_argument("--version", action="version", version=f"cacheclient {__version__}")
    _add_common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, summary in COMMANDS.items():
        if only is None or name == only:
            module = importlib.import_module(f"cacheclient.cli.{name}_cmd")
            module.register(sub)
        else:
            sub.add_parser(name, help=summary, add_help=False)
    for leaf in _leaves(parser):
        if leaf is not parser:
            _add_common_options(leaf, top=False)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The command word of *argv* ("" when there is none yet)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
        if arg == "--":
            break
    return ""


def _tune_gc() -> None:
    """A command is a short process that builds many objects and almost no cycles (reading an
    index, resolving a closure of thousands of builds): collect rarely, not never."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _flag(args: argparse.Namespace, name: str) -> int:
    return int(getattr(args, name, 0) or 0) + int(getattr(args, f"{name}_top", 0) or 0)


def _command_name(args: argparse.Namespace, prog: str) -> str:
    command = getattr(args, "command", None) or ("install" if prog != "cacheclient" else prog)
    action = getattr(args, "keys_action", None)
    return f"{command}.{action}" if command == "keys" and action else str(command)


def _hints(exc: CacheClientError, args: argparse.Namespace) -> list[str]:
    """The exact commands that fix *exc*, when there are some."""
    if isinstance(exc, VerificationError) and exc.key_id:
        store = getattr(args, "store", None)
        where = f" --store {store}" if store else ""
        mirror = exc.mirror or "MIRROR"
        return [
            f"cacheclient keys fetch {mirror}{where}",
            f"cacheclient keys trust {_fingerprint_of(exc.key_id, store)}{where}",
        ]
    return []


def _fingerprint_of(key_id: str, store: str | None) -> str:
    """The full fingerprint of *key_id* when that key was fetched already, else the key ID."""
    try:
        from cacheclient.settings import store_from_option  # noqa: PLC0415
        from cacheclient.trust import TrustStore  # noqa: PLC0415

        fetched = TrustStore(store_from_option(store).trust_dir).fetched_keys()
    except (CacheClientError, OSError):
        return key_id
    for key in fetched:
        if key.fingerprint.upper().endswith(key_id.upper()):
            return key.fingerprint
    return key_id


class _Redacting(io.TextIOBase):
    """A text stream that never lets ``user:password@`` of a URL through (see
    :func:`cacheclient.errors.redact`); with *results*, control characters other than tab and
    newline are shown as ``\\xNN`` too (stdout carries fields of untrusted metadata; stderr
    also carries the live display's own escapes, and its messages pass through
    :func:`~cacheclient.errors.printable` where they are made)."""

    def __init__(self, inner: TextIO, *, results: bool = False) -> None:
        self._inner = inner
        self._results = results

    def write(self, text: str) -> int:
        safe = redact(text)
        self._inner.write(printable_lines(safe) if self._results else safe)
        return len(text)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._inner, "encoding", "utf-8"))


def _run(parser: argparse.ArgumentParser, argv: Sequence[str], *, program: bool = False) -> int:
    """Run one command with credentials redacted from everything it prints."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Redacting(out, results=True), _Redacting(err)
    try:
        return _run_command(parser, argv, program=program)
    finally:
        sys.stdout, sys.stderr = out, err


def _run_command(
    parser: argparse.ArgumentParser, argv: Sequence[str], *, program: bool = False
) -> int:
    """Run one command; *program*: this is the process's own command line (not a library
    call), so an interrupt may end the process at once."""
    _Parser.json_requested = "--json" in argv
    _common.begin_command("cacheclient")
    args = parser.parse_args(argv)
    debug = bool(_flag(args, "debug")) or bool(os.environ.get("CACHECLIENT_DEBUG"))
    json_output = bool(getattr(args, "json", False))
    configure_output(
        verbose=_flag(args, "verbose"), quiet=bool(_flag(args, "quiet")), json_output=json_output
    )
    _common.begin_command(_command_name(args, parser.prog))
    error: dict[str, Any] | None = None
    code = 0
    try:
        code = args.func(args)
    except CacheClientError as exc:
        stop_display()
        if debug:
            raise
        hints = _hints(exc, args)
        write_diagnostic(f"{parser.prog}: error: {printable(str(exc))}")
        if hints:
            write_diagnostic("  To trust that key, check its fingerprint with its owner, then run:")
            for hint in hints:
                write_diagnostic(f"    {hint}")
        error = _common.error_object(exc, hints)
        code = exc.exit_code
    except KeyboardInterrupt:
        stop_display()
        write_diagnostic(f"{parser.prog}: interrupted")
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
    except RecursionError:
        stop_display()
        if debug:
            raise
        write_diagnostic(f"{parser.prog}: error: input nested too deeply")
        code = 2
    except Exception as exc:  # a bug, still one line (--debug shows the traceback)
        stop_display()
        if debug:
            raise
        detail = printable(f"{type(exc).__name__}: {exc}")[:300]
        write_diagnostic(
            f"{parser.prog}: error: internal error ({detail}); please report it "
            "(--debug shows the traceback)"
        )
        code = 1
    finally:
        stop_display()
        configure_output()  # a later in-process call starts from the defaults
    if json_output:
        if code and error is None:  # a failure without an exception still says so
            error = {"exit_code": code, "type": "Failure", "message": f"exit code {code}"}
        try:
            _common.finish_json(error)
        except BrokenPipeError:
            return code
    return code


def _guard_stdout() -> None:
    """When stdout and the live display share a terminal, results clear the display first."""
    try:
        shared = sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        shared = False
    if shared and not isinstance(sys.stdout, GuardedStdout):
        sys.stdout = GuardedStdout(sys.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    """``cacheclient COMMAND ...``"""
    args = sys.argv[1:] if argv is None else list(argv)
    if argv is None:
        _tune_gc()
        _guard_stdout()
    parser = build_parser(only=_command_in(args))
    return _run(parser, args, program=argv is None)


class _SingleCommand:
    """Stands in for ``add_subparsers()`` so one command's ``register`` builds a top parser."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.parser: argparse.ArgumentParser | None = None

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.pop("help", None)
        self.parser = _Parser(prog=self.prog, **kwargs)
        self.parser.add_argument(
            "--version", action="version", version=f"cacheclient {__version__}"
        )
        return self.parser


def install_from_cache(argv: Sequence[str] | None = None) -> int:
    """``install-from-cache SPEC...``: the same as ``cacheclient install SPEC...``."""
    single = _SingleCommand("install-from-cache")
    importlib.import_module("cacheclient.cli.install_cmd").register(single)
    if single.parser is None:  # pragma: no cover - register() always adds its parser
        raise RuntimeError("install_cmd.register added no parser")
    _add_common_options(single.parser, top=False)
    if argv is None:
        _guard_stdout()
    return _run(single.parser, sys.argv[1:] if argv is None else argv, program=argv is None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
