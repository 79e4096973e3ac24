"""cacheclient: resolve, fetch, verify and install builds from Spack binary caches."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
