"""Installing builds from a binary cache: safe extraction, relocation, the install database.

The one call most programs need is :func:`install`: resolve *specs* for a host, fetch and
verify their runtime closures into the store, and install them (relocated) under *root*::

    from cacheclient.installation import install
    result = install(["zlib@1.3"], mirrors=["https://mirror.example/cache"], root=Path("/opt/sw"))
    for build in result.builds:
        print(build.status, build.prefix)

:func:`install_fetched` installs builds that were already fetched
(:func:`cacheclient.fetch.fetch_builds`), and the submodules expose the pieces:
:mod:`.extract`, :mod:`.relocate`, :mod:`.elf`, :mod:`.sbang`, :mod:`.installdb`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from cacheclient.installation.installer import (
    DEFAULT_PROJECTION,
    ExternalCheck,
    FetchedLike,
    InstalledBuild,
    InstallResult,
    LocalBuild,
    format_projection,
    install_fetched,
)
from cacheclient.model import BuildRecord
from cacheclient.reporter import Reporter

if TYPE_CHECKING:
    from cacheclient.catalog import Catalog
    from cacheclient.host import HostProfile
    from cacheclient.store import Store
    from cacheclient.trust import TrustStore

__all__ = [
    "DEFAULT_PROJECTION",
    "ExternalCheck",
    "FetchedLike",
    "InstallResult",
    "InstalledBuild",
    "LocalBuild",
    "default_root",
    "format_projection",
    "install",
    "install_fetched",
    "load_catalog",
]


def __dir__() -> list[str]:
    return __all__


def default_root() -> Path:
    """``CACHECLIENT_ROOT``, else ``<user data dir>/cacheclient/root``."""
    env = os.environ.get("CACHECLIENT_ROOT")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("cacheclient")) / "root"


def load_catalog(
    *, mirrors: Sequence[str] = (), metadata: Sequence[str] = (), store: Store, offline: bool
) -> Catalog:
    """One catalog from cache.spack.io pages and mirrors (indexes cached in *store*)."""
    from cacheclient.sourcing import load_catalog as load  # noqa: PLC0415

    return load(metadata, mirrors, store=store, offline=offline)


def install(
    specs: Sequence[str],
    *,
    mirrors: Sequence[str] = (),
    metadata: Sequence[str] = (),
    root: Path | str | None = None,
    store: Store | Path | str | None = None,
    host: HostProfile | None = None,
    reporter: Reporter | None = None,
    projection: str = DEFAULT_PROJECTION,
    force: bool = False,
    trust: TrustStore | None = None,
    allow_unsigned: bool = False,
    offline: bool = False,
    jobs: int = 8,
    os_compat: str = "exact",
    mirror_base: str | None = None,
) -> InstallResult:
    """Resolve *specs* for *host* (default: this machine), fetch and install their closures.

    Signatures are checked against *trust* (default: the store's trusted keys) unless
    *allow_unsigned*. Raises the :class:`~cacheclient.errors.CacheClientError` subclass of
    the first failure (no match: 3, verification: 4, download: 5, unsafe archive: 6,
    relocation: 9).
    """
    from cacheclient.fetch import fetch_builds  # noqa: PLC0415
    from cacheclient.host import detect_host  # noqa: PLC0415
    from cacheclient.resolve import resolve_or_raise  # noqa: PLC0415
    from cacheclient.store import Store  # noqa: PLC0415

    the_store = store if isinstance(store, Store) else Store(Path(store) if store else None)
    catalog = load_catalog(mirrors=mirrors, metadata=metadata, store=the_store, offline=offline)
    the_host = host if host is not None else detect_host()
    resolutions = resolve_or_raise(list(specs), catalog, the_host, os_compat=os_compat)
    records: dict[str, BuildRecord] = {}
    externals: dict[str, BuildRecord] = {}
    for res in resolutions:
        for rec in res.closure:
            records.setdefault(rec.hash, rec)
        for ext in res.externals:
            externals.setdefault(ext.hash, ext)
    fetched = fetch_builds(
        list(records.values()),
        mirrors=list(mirrors),
        store=the_store,
        trust=trust,
        allow_unsigned=allow_unsigned,
        offline=offline,
        jobs=jobs,
        reporter=reporter,
        mirror_base=mirror_base,
    )
    return install_fetched(
        fetched.items,
        root=Path(root) if root is not None else default_root(),
        projection=projection,
        force=force,
        reporter=reporter,
        externals=list(externals.values()),
    )
