"""Fixtures of the security suite: nginx serving the signed fixture mirror, and a sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from paths import SPACK_V3_SIGNED
from security.sectools import Sandbox
from servers import NginxServer


@pytest.fixture(scope="module")
def signed_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx serving the signed fixture mirror (import it into a test module to use it)."""
    server = NginxServer(SPACK_V3_SIGNED, tmp_path_factory.mktemp("nginx")).start()
    yield server.url
    server.stop()


@pytest.fixture
def box(tmp_path: Path, signed_mirror: str) -> Sandbox:
    """A sandbox whose store trusts the fixture key, with nothing fetched yet."""
    sandbox = Sandbox(tmp_path, signed_mirror)
    sandbox.trust()
    return sandbox
