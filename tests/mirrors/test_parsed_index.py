"""The parsed index: same answers as the JSON index, no JSON parse when warm, and a damaged,
edited or replaced file is detected and rebuilt, never trusted, never a crash."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from builders import Parses, synthetic_index
from cacheclient.errors import MetadataError, StoreError
from cacheclient.metadata.catalog import Catalog
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.layout import spec_manifest_path
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.mirrors import parsed_index
from cacheclient.mirrors.parsed_index import (
    ParsedIndex,
    ParsedIndexCorrupt,
    build_parsed_index,
    open_parsed_index,
)
from cacheclient.model import BuildRecord, ClosureNode
from cacheclient.resolution.host import HostProfile
from cacheclient.resolution.resolve import resolve
from paths import SPACK_V3_SIGNED, V2_MIRRORS

HOST = HostProfile(platform="linux", os="debian12", target="x86_64_v4")
STACKS = ("m",)


def v3_index() -> tuple[bytes, str]:
    raw = (SPACK_V3_SIGNED / "v3/manifests/index/index.manifest.json").read_bytes()
    blob = parse_manifest(raw, "index manifest").index_blob
    assert blob is not None
    return (SPACK_V3_SIGNED / blob.path).read_bytes(), blob.checksum


def open_v3(folder: Path, data: Callable[[], bytes] | None = None) -> Catalog:
    raw, checksum = v3_index()
    index = open_parsed_index(
        folder,
        checksum,
        source="idx",
        data=data if data is not None else (lambda: raw),
        stacks=STACKS,
        manifest_path_for=spec_manifest_path,
    )
    return Catalog.over(index, source="idx")


def sqlite_file(folder: Path) -> Path:
    (path,) = folder.glob("*.sqlite")
    return path


def assert_built_as_by_one_process(folder: Path) -> None:
    """The v3 fixture's index, opened in *folder*, holds exactly what the JSON reader gives,
    and the folder holds nothing but its file."""
    data, _ = v3_index()
    expected = parse_database(data, "idx", stacks=STACKS, manifest_path_for=spec_manifest_path)
    catalog = open_v3(folder)
    for record in expected:
        assert catalog.get(record.hash) == record
    assert [p.name for p in folder.iterdir()] == [sqlite_file(folder).name]


class TestSameAnswers:
    def test_same_records_and_answer_as_the_json_index(self, tmp_path: Path) -> None:
        data, _ = v3_index()
        parsed = parse_database(data, "idx", stacks=STACKS, manifest_path_for=spec_manifest_path)
        stored = open_v3(tmp_path)
        assert len(stored) == len(parsed) == 18
        assert stored.names() == parsed.names()
        assert sorted(stored.hashes()) == sorted(parsed.hashes())
        for record in parsed:
            assert stored.get(record.hash) == record
        (a,) = resolve(["demo-tool@1.0.0"], stored, HOST)
        (b,) = resolve(["demo-tool@1.0.0"], parsed, HOST)
        assert a.to_dict() == b.to_dict()
        assert a.selected is not None
        assert a.selected.hash == "vwaicymp67emhvtu53ght22dv5pm6y2b"
        assert [r.hash for r in stored.find_prefix("vwaicym")] == [a.selected.hash]
        assert stored.get("z" * 32) is None

    def test_v2_index_with_externals(self, tmp_path: Path) -> None:
        data = (V2_MIRRORS / "signed/build_cache/index.json").read_bytes()
        index = open_parsed_index(tmp_path, "e" * 64, source="v2", data=lambda: data)
        catalog = Catalog.over(index, source="v2")
        (gcc,) = catalog.by_name("gcc")
        assert not gcc.installable
        assert gcc.is_external
        stored = sorted(catalog, key=lambda r: r.hash)
        assert stored == sorted(parse_database(data, "v2"), key=lambda r: r.hash)

    @pytest.mark.parametrize("layout", ["v3", "v2"])
    def test_each_summary_is_its_records(self, tmp_path: Path, layout: str) -> None:
        if layout == "v3":
            data, _ = v3_index()
        else:  # dependency-only and external records
            data = (V2_MIRRORS / "signed/build_cache/index.json").read_bytes()
        bad: dict[str, object] = {"name": "bad", "version": "1", "hash": _hash(3), "arch": "x"}
        doc = json.loads(data)
        doc["database"]["installs"][_hash(3)] = {"spec": bad, "in_buildcache": True}
        path = build_parsed_index(json.dumps(doc).encode(), tmp_path, "a" * 64, source="idx")
        with ParsedIndex(path, "a" * 64, source="idx") as index:
            hashes = [h for h in index.all_hashes() if h != _hash(3)]
            expected: dict[str, ClosureNode | None] = {
                h: ClosureNode.of(r) for h, r in index.get_many(hashes).items()
            }
            expected[_hash(3)] = None  # malformed: get() says what is wrong
            assert index.walk_many([*hashes, _hash(3), "z" * 32]) == expected
            assert any(node and node.children for node in expected.values())
            if layout == "v2":
                assert any(node and node.external for node in expected.values())
                assert any(node and not node.installable for node in expected.values())

    def test_a_malformed_record_fails_when_asked_for_like_the_json_index(
        self, tmp_path: Path
    ) -> None:
        h1, h2 = "a" * 32, "b" * 32
        node = {"name": "x", "version": "1", "hash": h1, "arch": "broken"}
        good = {
            "name": "y",
            "version": "1",
            "hash": h2,
            "arch": {"platform": "linux", "platform_os": "debian12", "target": "x86_64"},
        }
        doc = {"database": {"version": "8", "installs": {h1: {"spec": node}, h2: {"spec": good}}}}
        data = json.dumps(doc).encode()
        catalog = Catalog.over(
            open_parsed_index(tmp_path, "f" * 64, source="idx", data=lambda: data), source="idx"
        )
        assert catalog.names() == ["x", "y"]
        assert catalog.by_name("y")
        with pytest.raises(MetadataError) as stored_error:
            catalog.by_name("x")
        with pytest.raises(MetadataError) as json_error:
            parse_database(data, "idx").by_name("x")
        assert str(stored_error.value) == str(json_error.value)

    def test_a_malformed_index_leaves_nothing(self, tmp_path: Path) -> None:
        with pytest.raises(MetadataError):
            build_parsed_index(b'{"database": {"version": "8"}}', tmp_path, "k" * 64, source="bad")
        assert list(tmp_path.iterdir()) == []


class TestRowFormat:
    def test_bodies_leave_out_what_every_record_shares(self, tmp_path: Path) -> None:
        data, _ = v3_index()
        expected = parse_database(data, "idx", stacks=STACKS, manifest_path_for=spec_manifest_path)
        catalog = open_v3(tmp_path)
        conn = sqlite3.connect(sqlite_file(tmp_path))
        try:
            rows = conn.execute("SELECT hash, kind, body FROM records").fetchall()
        finally:
            conn.close()
        assert {kind for _, kind, _ in rows} == {parsed_index._V3_RECORD}
        for h, _, body in rows:
            fields = msgspec.msgpack.decode(body)
            assert not {"source", "stacks", "manifest_path", "target_info"} & set(fields)
            record = catalog.get(h)
            assert record is not None
            assert record == expected.get(h)
            assert record.source == "idx"
            assert record.stacks == STACKS
            assert record.manifest_path == spec_manifest_path(record.name, record.version, h)

    def test_v2_and_external_records_keep_no_manifest_path(self, tmp_path: Path) -> None:
        data = (V2_MIRRORS / "signed/build_cache/index.json").read_bytes()
        index = open_parsed_index(tmp_path, "e" * 64, source="v2", data=lambda: data, stacks=STACKS)
        conn = sqlite3.connect(sqlite_file(tmp_path))
        try:
            kinds = {kind for (kind,) in conn.execute("SELECT kind FROM records")}
        finally:
            conn.close()
        assert kinds == {parsed_index._RECORD}
        catalog = Catalog.over(index, source="v2")
        assert all(r.manifest_path is None for r in catalog)
        assert sorted(catalog, key=lambda r: r.hash) == sorted(
            parse_database(data, "v2", stacks=STACKS), key=lambda r: r.hash
        )

    def test_another_manifest_path_rule_is_stored(self, tmp_path: Path) -> None:
        data, checksum = v3_index()

        def rule(name: str, version: str, dag_hash: str) -> str:
            return f"elsewhere/{name}/{dag_hash}"

        index = open_parsed_index(
            tmp_path, checksum, source="idx", data=lambda: data, manifest_path_for=rule
        )
        catalog = Catalog.over(index, source="idx")
        assert sorted(catalog, key=lambda r: r.hash) == sorted(
            parse_database(data, "idx", manifest_path_for=rule), key=lambda r: r.hash
        )


@pytest.fixture
def two_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every index is read by two processes (a forked child writes the second half)."""
    monkeypatch.setattr(parsed_index, "PARALLEL_ABOVE", 0)
    monkeypatch.setattr(parsed_index, "_can_fork", lambda: True)


def _fails_in(where: str, exc: type[BaseException]) -> Callable[..., None]:
    """A stand-in for _Rows.insert raising *exc* in the child or the parent only."""
    parent = os.getpid()
    real = parsed_index._Rows.insert

    def insert(self: object, conn: sqlite3.Connection, part: tuple[int, int]) -> None:
        if (os.getpid() == parent) == (where == "parent"):
            raise exc("injected")
        real(self, conn, part)  # type: ignore[arg-type]

    return insert


@pytest.mark.usefixtures("two_processes")
class TestTwoProcesses:
    def test_same_records_as_one_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        merged: list[int] = []
        real_merge = parsed_index._merge

        def merge(conn: sqlite3.Connection, other: Path) -> None:
            child = sqlite3.connect(other)
            try:
                merged.append(child.execute("SELECT COUNT(*) FROM records").fetchone()[0])
            finally:
                child.close()
            real_merge(conn, other)

        monkeypatch.setattr(parsed_index, "_merge", merge)
        data, _ = v3_index()
        expected = parse_database(data, "idx", stacks=STACKS, manifest_path_for=spec_manifest_path)
        catalog = open_v3(tmp_path)
        assert merged == [9]  # the child's half of the 18 records
        assert sorted(catalog.hashes()) == sorted(expected.hashes())
        for record in expected:
            assert catalog.get(record.hash) == record
        assert [p.name for p in tmp_path.iterdir()] == [sqlite_file(tmp_path).name]

    def test_targets_of_both_halves(self, tmp_path: Path) -> None:
        data = json.dumps(synthetic_index(400, seed=5)).encode()
        index = open_parsed_index(
            tmp_path, "d" * 64, source="g", data=lambda: data, manifest_path_for=spec_manifest_path
        )
        catalog = Catalog.over(index, source="g")
        expected = parse_database(data, "g", manifest_path_for=spec_manifest_path)
        assert sorted(catalog.hashes()) == sorted(expected.hashes())
        for record in expected:
            assert catalog.get(record.hash) == record
        conn = sqlite3.connect(sqlite_file(tmp_path))
        try:
            ids = [n for (n,) in conn.execute("SELECT id FROM targets")]
        finally:
            conn.close()
        assert min(ids) < parsed_index._CHILD_TARGETS < max(ids)

    def test_v2_with_externals_and_a_malformed_record(self, tmp_path: Path) -> None:
        doc = json.loads((V2_MIRRORS / "signed/build_cache/index.json").read_bytes())
        installs = doc["database"]["installs"]
        last = sorted(installs)[-1]
        installs[last]["spec"]["arch"] = "broken"
        data = json.dumps(doc).encode()
        index = open_parsed_index(tmp_path, "e" * 64, source="v2", data=lambda: data)
        catalog = Catalog.over(index, source="v2")
        full = parse_database(data, "v2")
        assert sorted(catalog.hashes()) == sorted(full.hashes())

        def outcome(read: Callable[[str], BuildRecord | None], h: str) -> object:
            try:
                return read(h)
            except MetadataError as exc:
                return str(exc)

        for h in full.hashes():
            assert outcome(catalog.get, h) == outcome(full.get, h)
        assert isinstance(outcome(catalog.get, last), str)

    def test_a_failing_child_costs_only_time(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(parsed_index._Rows, "insert", _fails_in("child", RuntimeError))
        assert_built_as_by_one_process(tmp_path)

    @pytest.mark.parametrize("exc", [KeyboardInterrupt, StoreError])
    def test_a_failing_parent_stops_the_child_and_leaves_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: type[BaseException]
    ) -> None:
        monkeypatch.setattr(parsed_index._Rows, "insert", _fails_in("parent", exc))
        data, checksum = v3_index()
        with pytest.raises(exc):
            build_parsed_index(data, tmp_path, checksum, source="idx", stacks=STACKS)
        assert list(tmp_path.iterdir()) == []

    def test_a_malformed_index_leaves_nothing(self, tmp_path: Path) -> None:
        with pytest.raises(MetadataError):
            build_parsed_index(b'{"database": {"version": "8"}}', tmp_path, "k" * 64, source="bad")
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("damage", ["garbage", "symlink", "directory"])
    def test_a_child_file_replaced_underneath_is_not_merged(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
    ) -> None:
        real = parsed_index._Helper.result

        def result(self: parsed_index._Helper) -> Path | None:
            if self.pid is not None:
                os.waitpid(self.pid, 0)
                self.pid = None
            DAMAGE[damage](self.path)
            self.pid = os.getpid()  # done: only the exit status is faked
            monkeypatch.setattr(os, "waitpid", lambda pid, options: (pid, 0))
            return real(self)

        monkeypatch.setattr(parsed_index._Helper, "result", result)
        monkeypatch.setattr(parsed_index, "_merge", lambda *a: pytest.fail("merged"))
        data, _ = v3_index()
        expected = parse_database(data, "idx", stacks=STACKS, manifest_path_for=spec_manifest_path)
        catalog = open_v3(tmp_path / "idx")
        for record in expected:
            assert catalog.get(record.hash) == record
        if damage == "symlink":
            assert (tmp_path / "victim.txt").read_text() == "keep me"

    def test_no_fork_means_one_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def fork() -> int:
            raise BlockingIOError(11, "Resource temporarily unavailable")

        monkeypatch.setattr(os, "fork", fork)
        assert_built_as_by_one_process(tmp_path)


class TestWhenToFork:
    def test_not_while_another_thread_runs(self) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            assert not parsed_index._can_fork()
        finally:
            stop.set()
            thread.join()

    def test_small_indexes_are_read_by_one_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(parsed_index, "_can_fork", lambda: True)
        monkeypatch.setattr(os, "fork", lambda: pytest.fail("forked"))
        open_v3(tmp_path)


class TestWarm:
    def test_warm_open_parses_no_json_and_builds_only_what_it_needs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        open_v3(tmp_path)  # cold: builds the file
        parses = Parses(monkeypatch)
        catalog = open_v3(tmp_path, data=lambda: pytest.fail("the index was read"))
        (res,) = resolve(["demo-zlib"], catalog, HOST)
        assert res.selected is not None
        assert parses.count == 0
        assert len(catalog._cache) == 6  # the six demo-zlib builds; nothing else

    def test_cold_open_parses_once(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        parses = Parses(monkeypatch)
        open_v3(tmp_path)
        assert parses.count == 1

    def test_missing_without_data(self, tmp_path: Path) -> None:
        with pytest.raises(MetadataError, match="no usable parsed index"):
            open_parsed_index(tmp_path, "0" * 64, source="idx")


def _update(path: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def _swap(table: str, column: str) -> Callable[[Path], None]:
    """Two rows of *table* exchange *column* and CRC: each row's CRC still matches."""

    def swap(path: Path) -> None:
        conn = sqlite3.connect(path)
        try:
            (a, va, ca), (b, vb, cb) = conn.execute(
                f"SELECT hash, {column}, crc FROM {table} WHERE kind != 1 ORDER BY hash LIMIT 2"  # noqa: S608
            ).fetchall()
            update = f"UPDATE {table} SET {column} = ?, crc = ? WHERE hash = ?"  # noqa: S608
            conn.execute(update, (vb, cb, a))
            conn.execute(update, (va, ca, b))
            conn.commit()
        finally:
            conn.close()

    return swap


_swap_bodies = _swap("records", "body")


def _edit_body(key: str, value: object) -> Callable[[Path], None]:
    """Every record body given *key* (a field the reader fills in), the CRC recomputed."""

    def edit(path: Path) -> None:
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT hash, kind, body, target FROM records WHERE kind != 1")
            for h, kind, body, target in rows.fetchall():
                fields = msgspec.msgpack.decode(body)
                fields[key] = value
                new = msgspec.msgpack.encode(fields)
                crc = parsed_index._crc(new, kind, target)
                conn.execute("UPDATE records SET body = ?, crc = ? WHERE hash = ?", (new, crc, h))
            conn.commit()
        finally:
            conn.close()

    return edit


def _previous_format(path: Path) -> None:
    """A file this code wrote, but with the layout version before the current one."""
    _update(path, f"PRAGMA user_version = {parsed_index.FORMAT - 1}")


def _other_target(path: Path) -> None:
    """A record pointed at another target description, the CRC recomputed to match."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("INSERT INTO targets VALUES (99, ?, ?)", (b"\x81\xa4name\xa1x", 0))
        conn.execute(
            "UPDATE targets SET crc = ? WHERE id = 99",
            (parsed_index._crc(b"\x81\xa4name\xa1x", 0, 99),),
        )
        rows = conn.execute("SELECT hash, kind, body FROM records WHERE kind != 1").fetchall()
        for h, kind, body in rows:
            crc = parsed_index._crc(body, kind, 99)
            conn.execute("UPDATE records SET target = 99, crc = ? WHERE hash = ?", (crc, h))
        conn.commit()
    finally:
        conn.close()


def _replace_with_symlink(path: Path) -> None:
    victim = path.parent.parent / "victim.txt"
    victim.write_text("keep me")
    path.unlink()
    path.symlink_to(victim)


def _replace_with_directory(path: Path) -> None:
    path.unlink()
    (path / "sub").mkdir(parents=True)


def _truncate(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a database at all" * 100)


def _zeroed_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8192:12288] = bytes(4096)
    path.write_bytes(bytes(data))


def _other_index(path: Path) -> None:
    other = path.parent / "other"
    data = (V2_MIRRORS / "signed/build_cache/index.json").read_bytes()
    built = build_parsed_index(data, other, "9" * 64, source="idx", stacks=STACKS)
    os.replace(built, path)


def _old_format(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE records (hash TEXT PRIMARY KEY, name TEXT, node TEXT)")
    conn.commit()
    conn.close()


def _flip_walks(path: Path) -> None:
    """Every summary says "not installable", its CRC left as it was (a flipped bit)."""
    conn = sqlite3.connect(path)
    try:
        for h, walk in conn.execute("SELECT hash, walk FROM walks WHERE kind != 1").fetchall():
            fields = msgspec.msgpack.decode(walk)
            fields["installable"] = False
            conn.execute(
                "UPDATE walks SET walk = ? WHERE hash = ?", (msgspec.msgpack.encode(fields), h)
            )
        conn.commit()
    finally:
        conn.close()


def _garbage_walks(path: Path) -> None:
    """Every summary replaced by msgpack of another shape, its CRC matching."""
    walk = msgspec.msgpack.encode([1, 2, 3])
    _update(path, "UPDATE walks SET walk = ?, crc = ?", walk, zlib.crc32(walk))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "garbage": _garbage,
    "truncated": _truncate,
    "zeroed-page": _zeroed_page,
    "symlink": _replace_with_symlink,
    "directory": _replace_with_directory,
    "other-index": _other_index,
    "old-format": _old_format,
    "crc-mismatch": lambda p: _update(p, "UPDATE records SET crc = crc + 1"),
    "swapped-bodies": _swap_bodies,
    "edited-record": _edit_body("stacks", ["evil"]),
    "source-in-body": _edit_body("source", "idx"),
    "stacks-in-body": _edit_body("stacks", list(STACKS)),
    "manifest-path-in-body": _edit_body("manifest_path", "v3/manifests/spec/evil.json"),
    "previous-format": _previous_format,
    "other-target": _other_target,
    "target-table": lambda p: _update(p, "UPDATE targets SET crc = crc + 1"),
    "meta-checksum": lambda p: _update(p, "UPDATE meta SET value = 'x' WHERE key = 'checksum'"),
    "meta-count": lambda p: _update(p, "UPDATE meta SET value = 'many' WHERE key = 'count'"),
    "no-meta": lambda p: _update(p, "DROP TABLE meta"),
    "name-column": lambda p: _update(p, "UPDATE records SET name = 'other'"),
    "body-not-blob": lambda p: _update(p, "UPDATE records SET body = 3"),
    "kind": lambda p: _update(p, "UPDATE records SET kind = 7"),
    "summary-crc": _flip_walks,
    "summary-swapped": _swap("walks", "walk"),
    "summary-not-msgpack": _garbage_walks,
    "no-summaries": lambda p: _update(p, "DROP TABLE walks"),
}


class TestUntrustedFile:
    @pytest.mark.parametrize("damage", sorted(DAMAGE))
    def test_damage_is_detected_and_rebuilt(self, tmp_path: Path, damage: str) -> None:
        folder = tmp_path / "idx"
        data, _ = v3_index()
        expected = parse_database(data, "idx", stacks=STACKS, manifest_path_for=spec_manifest_path)
        open_v3(folder)
        DAMAGE[damage](sqlite_file(folder))
        catalog = open_v3(folder)
        assert sorted(catalog.hashes()) == sorted(expected.hashes())
        for record in expected:
            assert catalog.get(record.hash) == record
        summaries = open_v3(folder).walk_many(expected.hashes())
        assert summaries == {r.hash: ClosureNode.of(r) for r in expected}
        path = sqlite_file(folder)
        assert not path.is_symlink()
        assert path.is_file()
        assert not list(folder.glob(".partial-*"))
        if damage == "symlink":
            assert (tmp_path / "victim.txt").read_text() == "keep me"

    @pytest.mark.parametrize(
        "damage", ["crc-mismatch", "swapped-bodies", "edited-record", "other-target"]
    )
    def test_damage_found_mid_command_rebuilds_once(self, tmp_path: Path, damage: str) -> None:
        data, _ = v3_index()
        expected = parse_database(data, "idx", stacks=STACKS, manifest_path_for=spec_manifest_path)
        catalog = open_v3(tmp_path)  # opened and checked: now damaged underneath
        DAMAGE[damage](sqlite_file(tmp_path))
        for record in expected:
            assert catalog.get(record.hash) == record

    @pytest.mark.parametrize(
        "damage", ["summary-crc", "summary-swapped", "summary-not-msgpack", "no-summaries"]
    )
    def test_summary_damage_found_mid_walk_rebuilds_once(self, tmp_path: Path, damage: str) -> None:
        data, _ = v3_index()
        expected = parse_database(data, "idx", stacks=STACKS, manifest_path_for=spec_manifest_path)
        catalog = open_v3(tmp_path)
        DAMAGE[damage](sqlite_file(tmp_path))
        (res,) = resolve(["demo-tool@1.0.0"], catalog, HOST)
        (want,) = resolve(["demo-tool@1.0.0"], expected, HOST)
        assert res.to_dict() == want.to_dict()
        assert len(res.closure) > 1

    def test_damage_that_survives_a_rebuild_is_one_clear_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        catalog = open_v3(tmp_path)

        def broken(self: ParsedIndex, dag_hash: str) -> BuildRecord | None:
            raise ParsedIndexCorrupt("disk keeps flipping bits")

        monkeypatch.setattr(ParsedIndex, "get", broken)
        with pytest.raises(MetadataError, match="damaged again after a rebuild"):
            catalog.get("vwaicymp67emhvtu53ght22dv5pm6y2b")

    def test_a_damaged_file_is_never_read_as_records(self, tmp_path: Path) -> None:
        open_v3(tmp_path)
        path = sqlite_file(tmp_path)
        _swap_bodies(path)
        _, checksum = v3_index()
        with ParsedIndex(path, checksum, source="idx", stacks=STACKS) as index:
            hashes = sorted(index.all_hashes())

            def read_all() -> None:
                for h in hashes:
                    index.get(h)

            with pytest.raises(ParsedIndexCorrupt):
                read_all()


def _node(name: str, dag_hash: str, deps: list[tuple[str, str]]) -> dict[str, object]:
    return {
        "name": name,
        "version": "1",
        "hash": dag_hash,
        "arch": {"platform": "linux", "platform_os": "debian12", "target": "x86_64"},
        "dependencies": [
            {"name": n, "hash": h, "parameters": {"deptypes": ["link"], "virtuals": []}}
            for n, h in deps
        ],
    }


def _index(nodes: list[dict[str, object]]) -> bytes:
    installs = {n["hash"]: {"spec": n, "in_buildcache": True} for n in nodes}
    return json.dumps({"database": {"version": "8", "installs": installs}}).encode()


def _hash(i: int) -> str:
    return f"{i:032d}".translate(str.maketrans("0123456789", "abcdefghij"))


def _calls(monkeypatch: pytest.MonkeyPatch, method: str) -> list[tuple[object, ...]]:
    """The arguments of every call of ``ParsedIndex.<method>`` from now on (each still runs)."""
    calls: list[tuple[object, ...]] = []
    real = getattr(ParsedIndex, method)

    def counted(self: ParsedIndex, *args: object) -> object:
        calls.append(args)
        return real(self, *args)

    monkeypatch.setattr(ParsedIndex, method, counted)
    return calls


class TestClosureReads:
    """A closure is read from the parsed index in batches, with the same answer."""

    WIDE = 1200  # more than two batches of leaves
    HOST = HostProfile(platform="linux", os="debian12", target="x86_64")

    def wide_index(self) -> bytes:
        # root -> mid-0..2 -> 1,200 leaves shared by all three, plus a chain of 5 under leaf 0
        leaves = [(f"leaf-{i}", _hash(1000 + i)) for i in range(self.WIDE)]
        chain = [(f"chain-{i}", _hash(9000 + i)) for i in range(5)]
        nodes = [_node("root", _hash(1), [(f"mid-{i}", _hash(10 + i)) for i in range(3)])]
        nodes += [_node(f"mid-{i}", _hash(10 + i), leaves) for i in range(3)]
        nodes += [_node(n, h, [chain[0]] if n == "leaf-0" else []) for n, h in leaves]
        nodes += [
            _node(n, h, [chain[i + 1]] if i + 1 < len(chain) else [])
            for i, (n, h) in enumerate(chain)
        ]
        return _index(nodes)

    def wide_catalog(self, tmp_path: Path, data: bytes) -> Catalog:
        index = open_parsed_index(tmp_path, "c" * 64, source="idx", data=lambda: data)
        return Catalog.over(index, source="idx")

    def test_a_large_closure_takes_a_few_queries_and_gives_the_json_answer(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = self.wide_index()
        catalog = self.wide_catalog(tmp_path, data)
        queries = _calls(monkeypatch, "_query")
        (stored,) = resolve(["root"], catalog, self.HOST)
        (parsed,) = resolve(["root"], parse_database(data, "idx"), self.HOST)
        assert stored.selected is not None
        assert len(stored.closure) == 1 + 3 + self.WIDE + 5
        assert stored.to_dict() == parsed.to_dict()
        assert [r.hash for r in stored.closure] == [r.hash for r in parsed.closure]
        # one query for the name, then per level of the closure: mids (1), leaves (3 batches
        # of 500), then one per link of the chain (5)
        assert len(queries) <= 12, queries

    def test_a_closure_is_walked_without_decoding_its_records(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        catalog = self.wide_catalog(tmp_path, self.wide_index())
        decoded = _calls(monkeypatch, "_record")
        (res,) = resolve(["root"], catalog, self.HOST)
        assert len(res.closure) == 1 + 3 + self.WIDE + 5
        # the candidate only, not its 1,208 dependencies
        assert [dag_hash for dag_hash, _ in decoded] == [_hash(1)]

    def test_get_many_is_get_for_each(self, tmp_path: Path) -> None:
        bad: dict[str, object] = {"name": "bad", "version": "1", "hash": _hash(3), "arch": "broken"}
        data = _index([_node("a", _hash(1), []), _node("b", _hash(2), []), bad])
        path = build_parsed_index(data, tmp_path, "d" * 64, source="idx")
        with ParsedIndex(path, "d" * 64, source="idx") as index:
            found = index.get_many([_hash(2), _hash(1), _hash(1), _hash(7)])
            assert found == {_hash(1): index.get(_hash(1)), _hash(2): index.get(_hash(2))}
            assert index.get_many([]) == {}
            with pytest.raises(MetadataError) as many:
                index.get_many([_hash(1), _hash(3)])
            with pytest.raises(MetadataError) as one:
                index.get(_hash(3))
            assert str(many.value) == str(one.value)

    def test_a_hole_met_first_still_decides_over_a_malformed_record_read_ahead(
        self, tmp_path: Path
    ) -> None:
        # root -> a-missing (not in the index), b-bad (malformed): the walk meets the hole
        # first, so the candidate is rejected for its closure, as with the JSON index; the
        # malformed record read ahead in the same batch changes nothing.
        bad: dict[str, object] = {
            "name": "b-bad",
            "version": "1",
            "hash": _hash(3),
            "arch": "broken",
        }
        root = _node("root", _hash(1), [("a-missing", _hash(2)), ("b-bad", _hash(3))])
        data = _index([root, bad])
        catalog = Catalog.over(
            open_parsed_index(tmp_path, "e" * 64, source="idx", data=lambda: data), source="idx"
        )
        (stored,) = resolve(["root"], catalog, self.HOST)
        (parsed,) = resolve(["root"], parse_database(data, "idx"), self.HOST)
        assert stored.selected is None
        assert stored.to_dict() == parsed.to_dict()
        (candidate,) = stored.candidates
        assert [r.axis for r in candidate.reasons] == ["closure"]
        assert "a-missing/" in candidate.reasons[0].message

    def test_inspect_reads_every_record_in_batches_and_keeps_none(self, tmp_path: Path) -> None:
        from cacheclient.cli.inspect_cmd import _record_rows

        bad: dict[str, object] = {
            "name": "leaf-0007",
            "version": "1",
            "hash": _hash(7),
            "arch": "broken",
        }
        nodes = [_node(f"leaf-{i:04d}", _hash(1000 + i), []) for i in range(self.WIDE)]
        data = _index([*nodes, bad])
        catalog = Catalog.over(
            open_parsed_index(tmp_path, "f" * 64, source="idx", data=lambda: data), source="idx"
        )
        problems: list[str] = []
        names = [r.name for r in _record_rows(catalog, problems)]
        assert names == sorted(f"leaf-{i:04d}" for i in range(self.WIDE))  # all but the bad one
        assert len(problems) == 1
        assert _hash(7) in problems[0] or "leaf-0007" in problems[0]
        assert catalog._cache == {}  # one batch at a time: nothing kept

        # merged with a second source (a mirror with both layouts): the parts keep nothing either
        other = Catalog.over(
            open_parsed_index(tmp_path / "b", "f" * 64, source="idx", data=lambda: data),
            source="idx",
        )
        merged = Catalog.merge([catalog, other])
        assert len(list(_record_rows(merged, []))) == self.WIDE
        assert catalog._cache == other._cache == merged._cache == {}
