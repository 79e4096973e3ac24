"""``cacheclient config``: every effective setting, its value and where it came from."""

from __future__ import annotations

import argparse
from typing import Any

from cacheclient.cli._common import (
    add_host_options,
    add_output_options,
    add_source_options,
    add_store_option,
    print_json,
)
from cacheclient.settings import effective_settings

__all__ = ["register", "run"]


def __dir__() -> list[str]:
    return __all__


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "config",
        help="show every effective setting and where it comes from",
        description="Show each setting a command would use (with the same options given) and "
        "its source: a command-line flag, an environment variable, the config file, a "
        "default, or the probed host. Precedence: flag > environment > config file > default.",
    )
    add_source_options(parser)
    add_host_options(parser)
    add_store_option(parser)
    parser.add_argument("--root", metavar="DIR", help="install root")
    parser.add_argument("--jobs", "-j", type=int, default=None, help="parallel downloads")
    parser.add_argument("--projection", metavar="FORMAT", help="prefix layout below the root")
    add_output_options(parser)
    parser.set_defaults(func=run)


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    if value is None:
        return "(unset)"
    return str(value)


def run(args: argparse.Namespace) -> int:
    settings = effective_settings(args)
    if args.json:
        print_json({"settings": [s.to_dict() for s in settings]})
        return 0
    width = max(len(s.key) for s in settings)
    values = [_shown(s.value) for s in settings]
    vwidth = min(max(len(v) for v in values), 48)
    for setting, value in zip(settings, values, strict=True):
        print(f"{setting.key:<{width}}  {value:<{vwidth}}  ({setting.source})")
    return 0
