"""Shared fixtures: nginx and fault-injecting servers on loopback, throwaway gpg keys, data paths.

Helpers for tests live in ``servers.py`` (NginxServer, FaultServer, Fault), ``gpgtools.py``
(GpgKey) and ``paths.py`` (FIXTURES and friends); import them directly, e.g.
``from servers import Fault``. Every server a fixture starts is stopped at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpgtools import GPG, GpgKey
from paths import FIXTURES
from registryserver import registry_factory  # noqa: F401 - fixture of tests/oci
from servers import NGINX, FaultServer, NginxServer

ServeDir = Callable[..., NginxServer]
MakeFaultServer = Callable[..., FaultServer]
MakeKey = Callable[..., GpgKey]


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real user's cache/config: XDG dirs point into tmp_path,
    and CACHECLIENT_* settings from the caller's environment are dropped."""
    for name in list(os.environ):
        if name.startswith("CACHECLIENT_"):
            monkeypatch.delenv(name)
    for var, sub in (("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config")):
        monkeypatch.setenv(var, str(tmp_path / "xdg" / sub))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg" / "data"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The repository's fixtures/ folder."""
    return FIXTURES


@pytest.fixture
def nginx_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeDir]:
    """Factory: ``serve(directory, *, etag=True, ranges=True, extra="") -> NginxServer``.

    Each call starts Debian's nginx on a free 127.0.0.1 port serving ``directory`` read-only;
    all are stopped at teardown. Fails (never skips) when nginx is not installed.
    """
    if not os.access(NGINX, os.X_OK):
        pytest.fail(
            f"{NGINX} is missing: install Debian's nginx-light (.ci/run does it with apt-get)",
            pytrace=False,
        )
    started: list[NginxServer] = []

    def serve(
        directory: Path | str, *, etag: bool = True, ranges: bool = True, extra: str = ""
    ) -> NginxServer:
        work = tmp_path_factory.mktemp("nginx")
        server = NginxServer(directory, work, etag=etag, ranges=ranges, extra=extra)
        started.append(server)
        return server.start()

    yield serve
    for server in started:
        server.stop()


@pytest.fixture
def fault_server() -> Iterator[MakeFaultServer]:
    """Factory: ``make(root=None, *, ranges=True, etag=True) -> FaultServer`` (started)."""
    started: list[FaultServer] = []

    def make(
        root: Path | str | None = None, *, ranges: bool = True, etag: bool = True
    ) -> FaultServer:
        server = FaultServer(root, ranges=ranges, etag=etag)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


def _need_gpg() -> None:
    if not Path(GPG).exists():
        pytest.fail("gpg is missing: install Debian's gnupg (.ci/run does it)", pytrace=False)


@pytest.fixture(scope="session")
def gpg_key_factory() -> Iterator[MakeKey]:
    """Factory: ``make(uid=..., *, algo="ed25519", expire="never", faked_system_time=None)``.

    Each key lives in its own GNUPGHOME; all are deleted (and their agents stopped) at the end.
    """
    _need_gpg()
    made: list[GpgKey] = []

    def make(
        uid: str = "cacheclient test <test@cacheclient.invalid>",
        *,
        algo: str = "ed25519",
        expire: str = "never",
        faked_system_time: str | None = None,
    ) -> GpgKey:
        key = GpgKey(uid, algo=algo, expire=expire, faked_system_time=faked_system_time)
        made.append(key)
        return key

    yield make
    for key in made:
        key.close()


@pytest.fixture(scope="session")
def gpg_key(gpg_key_factory: MakeKey) -> GpgKey:
    """One throwaway signing key for the session: ``.fingerprint``, ``.clearsign(text)``,
    ``.public_key()``, ``.export_public(path)``."""
    return gpg_key_factory()
