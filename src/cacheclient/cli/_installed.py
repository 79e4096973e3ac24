"""Options and helpers shared by the commands that read an install root (list, location,
uninstall, env)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cacheclient.installation import default_root
from cacheclient.installation.installdb import DB_DIR, InstallDB, read_db

__all__ = ["add_root_option", "load_root", "root_from_args"]


def __dir__() -> list[str]:
    return __all__


def add_root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        metavar="DIR",
        default=None,
        help="install root (default: CACHECLIENT_ROOT, else the user data dir)",
    )


def root_from_args(args: argparse.Namespace) -> Path:
    value = getattr(args, "root", None)
    root = Path(value).expanduser() if value else default_root()
    return Path(os.path.abspath(root))


def load_root(args: argparse.Namespace) -> tuple[Path, InstallDB, bool]:
    """``(root, its database, whether the root exists)``; a missing root reads as empty."""
    root = root_from_args(args)
    exists = (root / DB_DIR).is_dir()
    db = read_db(root) if exists else InstallDB(root)
    return root, db, exists
