"""The one-call library entry point, :func:`install`, with settings resolved like a command's.

Arguments a caller passes win; anything left out comes from the ``CACHECLIENT_*`` environment,
then the config file, then the defaults, exactly as for ``install-from-cache``
(:func:`cacheclient.settings.settings_from_args`). Step by step control is
:class:`cacheclient.pipeline.Client`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cacheclient.events import Reporter
from cacheclient.installation import InstallResult
from cacheclient.pipeline import Client
from cacheclient.resolution.host import HostProfile, detect_host
from cacheclient.settings import settings_from_args
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
    projection: str | None = None,
    force: bool = False,
    trust: TrustStore | None = None,
    allow_unsigned: bool = False,
    offline: bool = False,
    jobs: int | None = None,
    os_compat: str | None = None,
    mirror_base: str | None = None,
) -> InstallResult:
    """Resolve *specs* for *host* (default: this machine), fetch and install their closures.

    Signatures are checked against *trust* (default: the store's keyring and the user's) unless
    *allow_unsigned*. The result maps each request to its prefix (``result.requests``).

    :raises CacheClientError: the subclass of the first failure (no match: 3, verification: 4,
        download: 5, unsafe archive: 6, store or root: 8, relocation: 9).
    """
    given = argparse.Namespace(
        mirror=list(mirrors),
        metadata=list(metadata),
        root=str(root) if root is not None else None,
        store=None if store is None or isinstance(store, Store) else str(store),
        projection=projection,
        allow_unsigned=allow_unsigned,
        offline=offline,
        jobs=jobs,
        os_compat=os_compat,
        mirror_base=mirror_base,
    )
    settings = settings_from_args(given)
    the_store = store if isinstance(store, Store) else None
    with Client(settings, store=the_store, trust=trust, reporter=reporter) as client:
        plan = client.plan(list(specs), host if host is not None else detect_host())
        return client.install(plan, force=force)
