"""The one resolve -> plan -> fetch -> install path that the library and every command use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cacheclient.events import Reporter
from cacheclient.fetch import fetch_builds
from cacheclient.installation import DEFAULT_PROJECTION, InstallResult, default_root
from cacheclient.installation.installer import install_fetched
from cacheclient.mirrors.catalogs import load_catalog
from cacheclient.model import BuildRecord
from cacheclient.resolution.host import HostProfile, detect_host
from cacheclient.resolution.resolve import resolve_or_raise
from cacheclient.store import Store
from cacheclient.trust import TrustStore

__all__ = ["install"]


def __dir__() -> list[str]:
    return __all__


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
    the_store = store if isinstance(store, Store) else Store(Path(store) if store else None)
    catalog = load_catalog(metadata, mirrors, store=the_store, offline=offline)
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
    result = install_fetched(
        fetched.items,
        root=Path(root) if root is not None else default_root(),
        projection=projection,
        force=force,
        reporter=reporter,
        externals=list(externals.values()),
    )
    chosen = {res.request: res.selected.hash for res in resolutions if res.selected is not None}
    return replace(result, requests=chosen)
