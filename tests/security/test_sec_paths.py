"""Item 3 (T2, T3): no path read from the store's or the root's metadata is trusted."""

from __future__ import annotations

import json
import os

from security.sectools import TOOL_HASH, Sandbox, build_record, expect_error


def _db(box: Sandbox) -> dict[str, object]:
    data: dict[str, object] = json.loads((box.root / ".cacheclient" / "installed.json").read_text())
    return data


def _write_db(box: Sandbox, data: dict[str, object]) -> None:
    (box.root / ".cacheclient" / "installed.json").write_text(json.dumps(data))


class TestInstallRoot:
    def test_a_recorded_prefix_outside_the_root_is_never_touched(self, box: Sandbox) -> None:
        assert box.install().code == 0
        db = _db(box)
        installs = db["installs"]
        assert isinstance(installs, dict)
        installs[TOOL_HASH]["prefix"] = str(box.sentinel)
        _write_db(box, db)
        line = expect_error(box.install("--force"), 8, str(box.sentinel), "outside the root")
        assert "installed.json" in line
        box.sentinel_unchanged()

    def test_a_root_subdirectory_symlinked_outside_is_refused(self, box: Sandbox) -> None:
        box.root.mkdir()
        os.symlink(box.sentinel, box.root / "linux-x86_64_v4")
        line = expect_error(box.install(), 8, "linux-x86_64_v4", "symlink", "--root")
        assert str(box.sentinel) in line
        box.sentinel_unchanged()
        os.unlink(box.root / "linux-x86_64_v4")
        assert box.install().code == 0
        box.finish()

    def test_a_recorded_prefix_that_is_a_symlink_is_refused(self, box: Sandbox) -> None:
        assert box.install().code == 0
        prefix = next((box.root / "linux-x86_64_v4").iterdir())
        moved = box.base / "moved"
        prefix.rename(moved)
        os.symlink(box.sentinel, prefix)
        expect_error(box.install("--force"), 8, str(prefix), "symlink")
        box.sentinel_unchanged()

    def test_nested_prefixes_are_refused(self, box: Sandbox) -> None:
        assert box.install().code == 0
        db = _db(box)
        installs = db["installs"]
        assert isinstance(installs, dict)
        other = dict(installs[TOOL_HASH])
        other["hash"] = "a" * 32
        other["prefix"] = str(box.root / "linux-x86_64_v4")
        installs["a" * 32] = other
        _write_db(box, db)
        expect_error(box.install("--force"), 8, "nested prefixes")
        box.sentinel_unchanged()

    def test_a_symlinked_bookkeeping_directory_is_refused(self, box: Sandbox) -> None:
        box.root.mkdir()
        os.symlink(box.sentinel, box.root / ".cacheclient")
        expect_error(box.install(), 8, ".cacheclient", "symlink")
        box.sentinel_unchanged()
        os.unlink(box.root / ".cacheclient")
        assert box.install().code == 0
        box.finish()


class TestStoreRecords:
    def _plant(self, box: Sandbox, key: str, value: str) -> None:
        assert box.fetch().code == 0
        record = build_record(box.store)
        record[key] = value
        path = box.store / ".cacheclient" / "builds" / f"{TOOL_HASH}.json"
        path.write_text(json.dumps(record))

    def test_verify_repair_never_deletes_outside_the_store(self, box: Sandbox) -> None:
        self._plant(box, "metadata_path", "../sentinel/victim.txt")
        result = box.cli("verify", "--store", str(box.store))
        line = expect_error(result, 4, "broken build")
        assert "run 'cacheclient verify --repair'" in line
        assert box.cli("verify", "--repair", "--store", str(box.store)).code == 0
        box.sentinel_unchanged()
        assert box.fetch().code == 0  # the record is written again
        box.finish()

    def test_gc_never_deletes_outside_the_store(self, box: Sandbox) -> None:
        self._plant(box, "tarball_alias", "../sentinel/victim.txt")
        assert box.cli("gc", "--older-than", "0", "--store", str(box.store)).code == 0
        box.sentinel_unchanged()
        assert box.cli("verify", "--repair", "--store", str(box.store)).code == 0
        box.finish()

    def test_a_record_naming_the_bookkeeping_is_not_used(self, box: Sandbox) -> None:
        self._plant(box, "metadata_path", ".cacheclient/trust/trusted.gpg")
        assert box.cli("verify", "--repair", "--store", str(box.store)).code == 0
        assert (box.store / ".cacheclient" / "trust" / "trusted.gpg").is_file()
        assert box.install().code == 0  # fetched again, trust intact
        box.finish()

    def test_a_symlinked_record_is_not_followed(self, box: Sandbox) -> None:
        assert box.fetch().code == 0
        path = box.store / ".cacheclient" / "builds" / f"{TOOL_HASH}.json"
        path.unlink()
        os.symlink(box.victim, path)
        assert box.install().code == 0  # the record is not used: the build is fetched again
        assert not path.is_symlink()
        box.finish()


def test_verify_reports_and_repairs_planted_blob_entries(box: Sandbox) -> None:
    assert box.fetch().code == 0
    shard = box.store / "blobs" / "sha256" / "ab"
    shard.mkdir(exist_ok=True)
    planted = shard / ("ab" + "0" * 62)
    os.symlink(box.victim, planted)
    os.symlink(box.sentinel, box.store / "blobs" / "sha256" / "cd")
    line = expect_error(box.cli("verify", "--store", str(box.store)), 4, "corrupt blob")
    assert str(planted) in line or "2 corrupt" in line
    assert box.cli("verify", "--repair", "--store", str(box.store)).code == 0
    assert not planted.is_symlink()
    box.finish()
