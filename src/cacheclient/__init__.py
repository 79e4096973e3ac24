"""cacheclient: resolve, fetch, verify and install builds from Spack binary caches.

The entry points a build tool needs are re-exported here (and imported lazily, so the
command line starts fast)::

    import cacheclient
    result = cacheclient.install(["demo-tool@1.0.0"], mirrors=["fixtures/spack-v3/signed"],
                                 root=Path("/opt/sw"))

Everything else is reached through its module: :mod:`cacheclient.resolve`,
:mod:`cacheclient.fetch`, :mod:`cacheclient.store`, :mod:`cacheclient.trust`, ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cacheclient.fetch import fetch_builds
    from cacheclient.host import HostProfile, detect_host
    from cacheclient.installation import install
    from cacheclient.reporter import Reporter

__all__ = [
    "HostProfile",
    "Reporter",
    "__version__",
    "detect_host",
    "fetch_builds",
    "install",
]

_LAZY = {
    "HostProfile": "cacheclient.host",
    "Reporter": "cacheclient.reporter",
    "detect_host": "cacheclient.host",
    "fetch_builds": "cacheclient.fetch",
    "install": "cacheclient.installation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cacheclient' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
