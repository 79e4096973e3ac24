"""cacheclient: resolve, fetch, verify and install builds from Spack binary caches.

The entry points a build tool needs are re-exported here (and imported lazily, so the
command line starts fast)::

    import cacheclient
    result = cacheclient.install(["demo-tool@1.0.0"], mirrors=["fixtures/spack-v3/signed"],
                                 root=Path("/opt/sw"))
    print(result.requests["demo-tool@1.0.0"])      # its prefix

    with cacheclient.Client(cacheclient.Settings(mirrors=("fixtures/spack-v3/signed",))) as c:
        plan = c.plan(["demo-tool@1.0.0"])           # resolution + closure, verified metadata
        c.fetch(plan)                                # tarballs into the store
        result = c.install(plan, root=Path("/opt/sw"))

Everything else is reached through its module: :mod:`cacheclient.resolution.resolve`,
:mod:`cacheclient.fetch`, :mod:`cacheclient.store`, :mod:`cacheclient.trust`, ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cacheclient._version import __version__

if TYPE_CHECKING:
    from cacheclient.api import install
    from cacheclient.events import Reporter
    from cacheclient.fetch import fetch_builds
    from cacheclient.pipeline import Client, Plan, Settings
    from cacheclient.resolution.host import HostProfile, detect_host

__all__ = [
    "Client",
    "HostProfile",
    "Plan",
    "Reporter",
    "Settings",
    "__version__",
    "detect_host",
    "fetch_builds",
    "install",
]

_LAZY = {
    "Client": "cacheclient.pipeline",
    "Plan": "cacheclient.pipeline",
    "Settings": "cacheclient.pipeline",
    "HostProfile": "cacheclient.resolution.host",
    "Reporter": "cacheclient.events",
    "detect_host": "cacheclient.resolution.host",
    "fetch_builds": "cacheclient.fetch",
    "install": "cacheclient.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cacheclient' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
