"""Item 2 (T2): what another user planted in the store is never followed, never waited on."""

from __future__ import annotations

import json
import os
import stat

from security.sectools import EXPECTED, TOOL_HASH, Sandbox, expect_error

TOOL_SPEC = next(s for s in EXPECTED["specs"] if s["dag_hash"] == TOOL_HASH)
TARBALL = str(TOOL_SPEC["tarball"]["sha256"])


def _partial(box: Sandbox) -> os.PathLike[str]:
    folder = box.store / ".cacheclient" / "partial"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{TARBALL}.partial"


class TestPartialDownloads:
    def test_a_symlinked_partial_file_is_replaced_not_followed(self, box: Sandbox) -> None:
        partial = _partial(box)
        os.symlink(box.victim, partial)
        result = box.fetch()
        assert result.code == 0, result.err
        box.finish()

    def test_a_symlinked_partial_with_a_sidecar_is_refused(self, box: Sandbox) -> None:
        partial = _partial(box)
        os.symlink(box.victim, partial)
        meta = {"url": f"{box.mirror}/{TOOL_SPEC['tarball']['path']}", "validator": "x"}
        (box.store / ".cacheclient" / "partial" / f"{TARBALL}.partial.meta").write_text(
            json.dumps(meta)
        )
        expect_error(box.fetch(), 8, str(partial), "symlink")
        box.sentinel_unchanged()
        partial.unlink(missing_ok=True)  # type: ignore[attr-defined]
        assert box.fetch().code == 0
        box.finish()

    def test_a_fifo_partial_is_refused_never_waited_on(self, box: Sandbox) -> None:
        partial = _partial(box)
        os.mkfifo(partial)
        meta = {"url": f"{box.mirror}/{TOOL_SPEC['tarball']['path']}", "validator": "x"}
        (box.store / ".cacheclient" / "partial" / f"{TARBALL}.partial.meta").write_text(
            json.dumps(meta)
        )
        expect_error(box.fetch(), 8, str(partial), "FIFO")
        partial.unlink(missing_ok=True)  # type: ignore[attr-defined]
        assert box.fetch().code == 0
        box.finish()

    def test_a_symlinked_sidecar_is_refused(self, box: Sandbox) -> None:
        partial = _partial(box)
        partial.write_bytes(b"\x1f\x8b")  # type: ignore[attr-defined]
        sidecar = box.store / ".cacheclient" / "partial" / f"{TARBALL}.partial.meta"
        os.symlink(box.victim, sidecar)
        expect_error(box.fetch(), 8, str(sidecar), "symlink")
        box.sentinel_unchanged()
        sidecar.unlink(missing_ok=True)
        assert box.fetch().code == 0
        box.finish()

    def test_the_partial_directory_as_a_symlink_is_refused(self, box: Sandbox) -> None:
        (box.store / ".cacheclient").mkdir(parents=True, exist_ok=True)
        os.symlink(box.sentinel, box.store / ".cacheclient" / "partial")
        expect_error(box.fetch(), 8, "partial", "symlink")
        box.sentinel_unchanged()
        os.unlink(box.store / ".cacheclient" / "partial")
        assert box.fetch().code == 0
        box.finish()


class TestLocks:
    def _lock(self, box: Sandbox, kind: str) -> os.PathLike[str]:
        folder = box.store / ".cacheclient" / "locks" / TARBALL[:2]
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{TARBALL}.{kind}"

    def test_a_symlinked_download_lock_is_refused(self, box: Sandbox) -> None:
        lock = self._lock(box, "dl")
        os.symlink(box.victim, lock)
        expect_error(box.fetch(), 8, str(lock), "symlink")
        box.sentinel_unchanged()
        os.unlink(lock)
        assert box.fetch().code == 0
        box.finish()

    def test_a_symlinked_use_lock_is_not_followed(self, box: Sandbox) -> None:
        # The blob is then used without gc protection (as on a read-only store); gc refuses.
        lock = self._lock(box, "use")
        os.symlink(box.victim, lock)
        assert box.fetch().code == 0
        box.sentinel_unchanged()
        gc = box.cli("gc", "--older-than", "0", "--store", str(box.store))
        assert gc.code == 0, gc.err
        assert "kept 1 blob(s) in use" in gc.out
        assert box.blob(TARBALL).is_file()
        box.sentinel_unchanged()
        os.unlink(lock)
        box.finish()

    def test_a_fifo_lock_file_is_refused_never_waited_on(self, box: Sandbox) -> None:
        lock = self._lock(box, "dl")
        os.mkfifo(lock)
        expect_error(box.fetch(), 8, str(lock), "FIFO")
        os.unlink(lock)
        assert box.fetch().code == 0
        box.finish()

    def test_the_locks_directory_as_a_symlink_is_refused(self, box: Sandbox) -> None:
        (box.store / ".cacheclient").mkdir(parents=True, exist_ok=True)
        os.symlink(box.sentinel, box.store / ".cacheclient" / "locks")
        expect_error(box.fetch(), 8, "locks", "symlink")
        box.sentinel_unchanged()
        os.unlink(box.store / ".cacheclient" / "locks")
        assert box.fetch().code == 0
        box.finish()

    def test_lock_files_are_not_world_writable_whatever_the_umask(self, box: Sandbox) -> None:
        old = os.umask(0)  # inherited by the child process
        try:
            result = box.fetch()
        finally:
            os.umask(old)
        assert result.code == 0, result.err
        locks = [p for p in (box.store / ".cacheclient" / "locks").rglob("*") if p.is_file()]
        assert locks
        for lock in locks:
            assert stat.S_IMODE(lock.stat().st_mode) & 0o002 == 0, lock
        box.finish()


class TestTempFiles:
    def test_the_tmp_directory_as_a_symlink_is_refused(self, box: Sandbox) -> None:
        (box.store / ".cacheclient").mkdir(parents=True, exist_ok=True)
        os.symlink(box.sentinel, box.store / ".cacheclient" / "tmp")
        expect_error(box.fetch(), 8, "tmp", "symlink")
        box.sentinel_unchanged()
        os.unlink(box.store / ".cacheclient" / "tmp")
        assert box.fetch().code == 0
        box.finish()

    def test_a_symlinked_manifest_directory_is_refused(self, box: Sandbox) -> None:
        (box.store / "v3" / "manifests" / "spec").mkdir(parents=True)
        os.symlink(box.sentinel, box.store / "v3" / "manifests" / "spec" / "demo-tool")
        expect_error(box.fetch(), 8, "demo-tool", "symlink")
        box.sentinel_unchanged()
        os.unlink(box.store / "v3" / "manifests" / "spec" / "demo-tool")
        assert box.fetch().code == 0
        box.finish()
