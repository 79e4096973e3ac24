"""The library entry points a build tool uses: ``cacheclient.install`` and a custom Reporter."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

import cacheclient
from cacheclient.errors import NoMatchError, VerificationError
from cacheclient.store import Store
from cacheclient.trust import TrustStore
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED

HOST = cacheclient.HostProfile(platform="linux", os="debian12", target="x86_64_v3", libc=None)


class Recorder(cacheclient.Reporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def installing(self, record: Any, prefix: str) -> None:
        self.events.append(("installing", record.name))

    def installed(self, record: Any, prefix: str) -> None:
        self.events.append(("installed", record.name))

    def download_finished(self, artifact: str, already_present: bool) -> None:
        self.events.append(("downloaded", already_present))


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    TrustStore(store.trust_dir).trust(str(SPACK_V3_KEY))
    return store


class TestInstall:
    def test_one_call_installs_a_closure_and_reports_progress(self, tmp_path: Path) -> None:
        recorder = Recorder()
        result = cacheclient.install(
            ["demo-tool@1.0.0"],
            mirrors=[str(SPACK_V3_SIGNED)],
            root=tmp_path / "root",
            store=_store(tmp_path),
            host=HOST,
            reporter=recorder,
        )
        names = [b.record.name for b in result.builds]
        assert names[-1] == "demo-tool"  # dependencies first
        assert set(names) == {"demo-tool", "demo-libfoo", "demo-zlib", "demo-pyhooks"}
        installed = [name for event, name in recorder.events if event == "installed"]
        assert installed == names
        prefix = result.prefix_of(result.builds[-1].record.hash)
        assert prefix is not None
        tool = prefix / "bin" / "demo-tool"
        out = subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout
        assert out.startswith("demo-tool 1.0.0")

    def test_untrusted_signatures_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(VerificationError):
            cacheclient.install(
                ["demo-zlib@1.3.1"],
                mirrors=[str(SPACK_V3_SIGNED)],
                root=tmp_path / "root",
                store=tmp_path / "empty-store",
                host=HOST,
            )
        assert not (tmp_path / "root").exists() or not any((tmp_path / "root").rglob("lib"))

    def test_no_match_is_a_typed_error(self, tmp_path: Path) -> None:
        with pytest.raises(NoMatchError, match="demo-tool@9"):
            cacheclient.install(
                ["demo-tool@9"], mirrors=[str(SPACK_V3_SIGNED)], root=tmp_path, host=HOST
            )


class TestResolve:
    def test_resolve_is_pure_over_a_catalog(self) -> None:
        from cacheclient.mirrors.open import local_reader, open_catalog
        from cacheclient.resolution.resolve import resolve

        catalog = open_catalog(str(SPACK_V3_SIGNED), local_reader(SPACK_V3_SIGNED))
        (res,) = resolve(["demo-tool@1.0.0"], catalog, HOST)
        assert res.selected is not None
        assert res.selected.hash == "p3ni4vmgrbpf2zerdw3f2o22ifxs2xn7"
        assert [r.name for r in res.closure][-1] == "demo-tool"


class TestResources:
    def test_repeated_installs_do_not_leak_descriptors(self, tmp_path: Path) -> None:
        """Everything the one-call API opens is closed (the store's descriptors used to grow
        with every call, and gc could not evict those blobs)."""
        store_dir = tmp_path / "store"
        _store(tmp_path).close()

        def open_fds() -> int:
            return len(list(Path("/proc/self/fd").iterdir()))

        counts = []
        for i in range(4):
            cacheclient.install(
                ["demo-zlib@1.3.1"],
                mirrors=[str(SPACK_V3_SIGNED)],
                root=tmp_path / f"root{i}",
                store=store_dir,
                host=HOST,
            )
            counts.append(open_fds())
        assert counts[-1] == counts[1], counts
