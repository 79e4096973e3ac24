"""``cacheclient keys``: placeholder until the command lands."""

from __future__ import annotations

import argparse
from typing import Any

from cacheclient.errors import UsageError


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("keys", help="(not implemented yet)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise UsageError("'keys' is not implemented yet")
