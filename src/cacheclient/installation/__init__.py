"""Installing builds from a binary cache: safe extraction, relocation, the install database.

This layer imports only value objects, errors, events and pure readers: it installs builds that
were already fetched and verified (:func:`install_fetched`), whoever fetched them. Resolving and
fetching as well is :func:`cacheclient.pipeline.install`. The submodules expose the pieces:
:mod:`.extract`, :mod:`.relocate`, :mod:`.elf`, :mod:`.sbang`, :mod:`.installdb`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from cacheclient import safefs
from cacheclient.installation.projection import DEFAULT_PROJECTION, format_projection

if TYPE_CHECKING:
    from cacheclient.installation.installer import (
        ExternalCheck,
        FetchedLike,
        InstalledBuild,
        InstallResult,
        LocalBuild,
        install_fetched,
    )

__all__ = [
    "DEFAULT_PROJECTION",
    "ExternalCheck",
    "FetchedLike",
    "InstallResult",
    "InstalledBuild",
    "LocalBuild",
    "default_root",
    "format_projection",
    "install_fetched",
]


def __dir__() -> list[str]:
    return __all__


def __getattr__(name: str) -> object:
    """The installer's names, imported on first use: a command that installs nothing (resolve,
    list) does not pay for the installer's imports."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("cacheclient.installation.installer"), name)
    globals()[name] = value
    return value


def default_root() -> Path:
    """``CACHECLIENT_ROOT``, else ``<user data dir>/cacheclient/root``."""
    env = os.environ.get("CACHECLIENT_ROOT")
    if env:
        return safefs.expand_path(env, "CACHECLIENT_ROOT")
    return Path(platformdirs.user_data_dir("cacheclient")) / "root"
