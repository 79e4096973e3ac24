"""Where the repository's test data lives, located relative to this file (never ../shared)."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "FIXTURES",
    "REALDATA",
    "REPO_ROOT",
    "SEED_PAGE",
    "SPACK_V3",
    "SPACK_V3_KEY",
    "SPACK_V3_SIGNED",
    "SPACK_V3_UNSIGNED",
    "V2_MIRRORS",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "fixtures"
SPACK_V3 = FIXTURES / "spack-v3"
SPACK_V3_SIGNED = SPACK_V3 / "signed"
SPACK_V3_UNSIGNED = SPACK_V3 / "unsigned"
SPACK_V3_KEY = SPACK_V3 / "public-key.asc"
REALDATA = FIXTURES / "realdata"
V2_MIRRORS = REALDATA / "spack-test-mirrors" / "v2_layout"
SEED_PAGE = FIXTURES / "seed" / "py-pyproject-hooks.cache-page.md"
