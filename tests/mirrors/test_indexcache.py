"""Conditional index refresh against nginx: TTL, ETag/If-None-Match, manifest checksum, .hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from builders import RESOLVE_PROBE, Parses
from cacheclient.errors import DownloadError, MetadataError
from cacheclient.metadata.database import parse_database
from cacheclient.mirrors.indexcache import open_mirror
from cacheclient.store import Store
from paths import SPACK_V3_SIGNED, V2_MIRRORS
from servers import NginxServer

INDEX = "/v3/manifests/index/index.manifest.json"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store") as s:
        yield s


def hashes(catalog: object) -> set[str]:
    return {r.hash for r in catalog}  # type: ignore[attr-defined]


class TestV3:
    def test_ttl_then_conditional_request(
        self, nginx_mirror: Callable[..., NginxServer], store: Store
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        first = open_mirror(server.url, store=store)
        assert len(first) == 18
        assert [e.uri.split("/")[1] for e in server.requests()] == ["v3", "blobs"]
        server.clear_log()
        assert hashes(open_mirror(server.url, store=store)) == hashes(first)
        assert server.requests() == []  # within the TTL: no request at all
        again = open_mirror(server.url, store=store, ttl=0)
        assert hashes(again) == hashes(first)
        (entry,) = server.requests()
        assert entry.uri == INDEX
        assert entry.if_none_match
        assert (entry.status, entry.body_bytes) == (304, 0)
        assert all(r.stacks == (server.url,) for r in again)

    def test_unchanged_checksum_without_etag_costs_only_the_manifest(
        self, nginx_mirror: Callable[..., NginxServer], store: Store
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED, etag=False)
        open_mirror(server.url, store=store)
        server.clear_log()
        open_mirror(server.url, store=store, ttl=0)
        assert [e.uri for e in server.requests()] == [INDEX]

    def test_changed_index_is_downloaded(
        self, tmp_path: Path, nginx_mirror: Callable[..., NginxServer], store: Store
    ) -> None:
        mirror = tmp_path / "mirror"
        shutil.copytree(SPACK_V3_SIGNED, mirror)
        server = nginx_mirror(mirror)
        assert len(open_mirror(server.url, store=store)) == 18
        manifest = json.loads((mirror / INDEX.lstrip("/")).read_text())
        record = manifest["data"][0]
        old = mirror / "blobs" / "sha256" / record["checksum"][:2] / record["checksum"]
        db = json.loads(old.read_bytes())
        victim = sorted(db["database"]["installs"])[0]
        del db["database"]["installs"][victim]
        data = json.dumps(db).encode()
        digest = hashlib.sha256(data).hexdigest()
        new = mirror / "blobs" / "sha256" / digest[:2] / digest
        new.parent.mkdir(parents=True, exist_ok=True)
        new.write_bytes(data)
        record.update(checksum=digest, contentLength=len(data))
        (mirror / INDEX.lstrip("/")).write_text(json.dumps(manifest))
        server.clear_log()
        catalog = open_mirror(server.url, store=store, ttl=0)
        assert victim not in hashes(catalog)
        assert [e.uri for e in server.requests()] == [INDEX, f"/blobs/sha256/{digest[:2]}/{digest}"]


class TestV2:
    @pytest.mark.parametrize(
        ("etag", "expected"),
        [
            (True, [("/build_cache/index.json", 304)]),
            (False, [("/build_cache/index.json.hash", 200)]),
        ],
    )
    def test_unchanged_index_costs_one_small_request(
        self,
        nginx_mirror: Callable[..., NginxServer],
        store: Store,
        etag: bool,
        expected: list[tuple[str, int]],
    ) -> None:
        server = nginx_mirror(V2_MIRRORS / "signed", etag=etag)
        first = open_mirror(server.url, store=store)
        assert len(first) > 0
        server.clear_log()
        again = open_mirror(server.url, store=store, ttl=0)
        assert hashes(again) == hashes(first)
        entries = server.requests()
        assert [(e.uri, e.status) for e in entries] == expected
        assert all(e.body_bytes < 100 for e in server.requests())

    def test_index_is_streamed_into_the_store(
        self,
        nginx_mirror: Callable[..., NginxServer],
        store: Store,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from cacheclient.mirrors import indexcache
        from cacheclient.transport.base import Transport

        monkeypatch.setattr(indexcache, "STORED_INDEX_ABOVE", 0)
        real_get = Transport.get

        def get(self: Transport, url: str, **kwargs: Any) -> object:
            assert not url.endswith("/index.json"), "the whole index was read into memory"
            return real_get(self, url, **kwargs)

        monkeypatch.setattr(Transport, "get", get)
        index = V2_MIRRORS / "signed/build_cache/index.json"
        server = nginx_mirror(V2_MIRRORS / "signed")
        catalog = open_mirror(server.url, store=store)
        assert hashes(catalog) == hashes(parse_database(index.read_bytes(), "v2"))
        (meta,) = store.indices_dir.rglob("meta.json")
        assert sorted(p.name for p in meta.parent.iterdir() if not p.name.endswith(".sqlite")) == [
            "index.json",
            "meta.json",
        ]
        assert (meta.parent / "index.json").read_bytes() == index.read_bytes()
        state = json.loads(meta.read_text())
        assert state["index_hash"] == hashlib.sha256(index.read_bytes()).hexdigest()
        assert state["size"] == index.stat().st_size
        assert state["etag"]  # nginx's: the next refresh is a conditional GET

    def test_an_index_over_the_limit_is_refused_and_leaves_nothing(
        self,
        nginx_mirror: Callable[..., NginxServer],
        store: Store,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from cacheclient import transport  # indexcache reads the limit there, when it asks

        index = V2_MIRRORS / "signed/build_cache/index.json"
        monkeypatch.setattr(transport, "INDEX_LIMIT", index.stat().st_size - 1)
        server = nginx_mirror(V2_MIRRORS / "signed")
        with pytest.raises(MetadataError, match="exceeds the"):
            open_mirror(server.url, store=store)
        assert not [p for p in store.indices_dir.rglob("*") if p.is_file()]


class TestPlanted:
    """The index cache folder is below the store: nothing planted there is followed."""

    def test_a_symlinked_index_folder_is_refused_and_nothing_written_elsewhere(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, tmp_path: Path
    ) -> None:
        from cacheclient.errors import StoreError

        server = nginx_mirror(SPACK_V3_SIGNED)
        open_mirror(server.url, store=store)
        (folder,) = store.indices_dir.iterdir()
        shutil.rmtree(folder)
        outside = tmp_path / "outside"
        outside.mkdir()
        folder.symlink_to(outside)
        with pytest.raises(StoreError, match="symlink"):
            open_mirror(server.url, store=store)
        assert list(outside.iterdir()) == []
        assert folder.is_symlink()

    def test_a_symlinked_meta_file_is_not_read_through(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, tmp_path: Path
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        first = open_mirror(server.url, store=store)
        (meta,) = store.indices_dir.rglob("meta.json")
        elsewhere = tmp_path / "elsewhere.json"
        planted = meta.read_text()  # a state that would say "fresh, no request"
        elsewhere.write_text(planted)
        meta.unlink()
        meta.symlink_to(elsewhere)
        server.clear_log()
        assert hashes(open_mirror(server.url, store=store)) == hashes(first)
        assert server.requests()  # not taken as fresh: asked the mirror again
        assert not meta.is_symlink()  # the state written anew, as a file of the store
        assert elsewhere.read_text() == planted


class TestOfflineAndLocal:
    def test_offline_uses_the_cache_without_requests(
        self, nginx_mirror: Callable[..., NginxServer], store: Store
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        first = open_mirror(server.url, store=store)
        server.stop()
        assert hashes(open_mirror(server.url, store=store, ttl=0, offline=True)) == hashes(first)

    def test_offline_without_cache(self, store: Store) -> None:
        with pytest.raises(DownloadError, match="no cached index"):
            open_mirror("http://127.0.0.1:9/mirror", store=store, offline=True)

    def test_local_mirror_is_read_directly(self, store: Store) -> None:
        catalog = open_mirror(str(SPACK_V3_SIGNED), store=store)
        assert len(catalog) == 18
        assert not store.indices_dir.exists()


_OPEN = """
import sys
from pathlib import Path
from cacheclient.mirrors.indexcache import open_mirror
from cacheclient.store import Store
print(len(open_mirror(sys.argv[1], store=Store(Path(sys.argv[2])))))
"""


class TestConcurrentRefresh:
    def test_cold_cache_is_filled_once(
        self, nginx_mirror: Callable[..., NginxServer], store: Store
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN, server.url, str(store.root)], stdout=subprocess.PIPE
            )
            for _ in range(5)
        ]
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        assert [o.strip() for o in outputs] == [b"18"] * 5
        blobs = [e for e in server.requests() if e.uri.startswith("/blobs/")]
        assert len(blobs) == 1


class TestStoredIndex:
    def test_large_index_is_kept_parsed_on_disk_and_gives_the_same_records(
        self,
        nginx_mirror: Callable[..., NginxServer],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from cacheclient.mirrors import indexcache
        from cacheclient.store import Store

        server = nginx_mirror(SPACK_V3_SIGNED)
        plain = indexcache.open_mirror(server.url, store=Store(tmp_path / "plain"))
        monkeypatch.setattr(indexcache, "STORED_INDEX_ABOVE", 0)
        store = Store(tmp_path / "s")
        first = indexcache.open_mirror(server.url, store=store)
        stored = list(store.root.rglob("*.sqlite"))
        assert len(stored) == 1
        assert (
            stored[0].stem
            == json.loads((SPACK_V3_SIGNED / "v3/manifests/index/index.manifest.json").read_text())[
                "data"
            ][0]["checksum"]
        )
        again = indexcache.open_mirror(server.url, store=store)  # within the TTL: no request
        for catalog in (first, again):
            assert len(catalog) == len(plain) == 18
            assert catalog.names() == plain.names()
            for record in plain:
                got = catalog.get(record.hash)
                assert got is not None
                assert dataclasses.replace(got, source=None) == dataclasses.replace(
                    record, source=None
                )


@pytest.fixture
def parsed_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every index counts as large: the fixture mirrors go through the parsed index."""
    from cacheclient.mirrors import indexcache

    monkeypatch.setattr(indexcache, "STORED_INDEX_ABOVE", 0)


def _drop_one_record_v3(mirror: Path) -> str:
    """Publish a new v3 index without one record; returns the removed hash."""
    manifest = json.loads((mirror / INDEX.lstrip("/")).read_text())
    record = manifest["data"][0]
    old = mirror / "blobs" / "sha256" / record["checksum"][:2] / record["checksum"]
    db = json.loads(old.read_bytes())
    victim: str = sorted(db["database"]["installs"])[0]
    del db["database"]["installs"][victim]
    data = json.dumps(db).encode()
    digest = hashlib.sha256(data).hexdigest()
    new = mirror / "blobs" / "sha256" / digest[:2] / digest
    new.parent.mkdir(parents=True, exist_ok=True)
    new.write_bytes(data)
    record.update(checksum=digest, contentLength=len(data))
    (mirror / INDEX.lstrip("/")).write_text(json.dumps(manifest))
    return victim


_PROBE = RESOLVE_PROBE + "print(' '.join(m for m in sys.argv[3:] if m in sys.modules))\n"
"""``python -c _PROBE MIRROR STORE MODULE...``: RESOLVE_PROBE, then which MODULEs it imported."""

WARM_NEVER = [
    "cacheclient.transport",
    "cacheclient.fetch.fetcher",
    "cacheclient.installation.installer",
    "cacheclient.ci.lock",
    "cacheclient.trust",
    "tenacity",
    # a registry's formats: only an oci:// mirror needs them
    "cacheclient.mirrors.oci_index",
    "cacheclient.metadata.oci_image",
    "cacheclient.metadata.specfile",
    # imported by the first logger (cacheclient.events.get_logger): nothing is logged here
    "logging",
    # only for "did you mean" when no build has the name asked for
    "difflib",
    # the fast JSON reader: only when an index is parsed
    "cacheclient.metadata.database_fast",
]
"""What a warm CLI resolve does not import (each costs start-up time of every command)."""


@pytest.mark.usefixtures("parsed_always")
class TestWarmParsesNothing:
    def test_http_warm_and_unchanged_refresh_parse_no_json(
        self,
        nginx_mirror: Callable[..., NginxServer],
        store: Store,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        parses = Parses(monkeypatch)
        first = open_mirror(server.url, store=store)
        assert parses.count == 1
        assert len(list(store.indices_dir.rglob("*.sqlite"))) == 1
        warm = open_mirror(server.url, store=store)
        expired = open_mirror(server.url, store=store, ttl=0)
        for catalog in (warm, expired):
            assert sorted(catalog.hashes()) == sorted(first.hashes())
            assert [catalog.get(h) for h in first.hashes()] == list(first)
        assert parses.count == 1

    def test_damaged_parsed_index_and_cached_index_are_fetched_again(
        self, nginx_mirror: Callable[..., NginxServer], store: Store
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        first = hashes(open_mirror(server.url, store=store))
        (sqlite,) = store.indices_dir.rglob("*.sqlite")
        sqlite.write_bytes(b"garbage")
        (sqlite.parent / "index.json").write_bytes(b'{"database": "edited"}')
        server.clear_log()
        assert hashes(open_mirror(server.url, store=store)) == first
        assert [e.uri.split("/")[1] for e in server.requests()] == ["v3", "blobs"]

    def test_cli_warm_resolve_imports_no_http_library_fetcher_or_installer(
        self, nginx_mirror: Callable[..., NginxServer], tmp_path: Path
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        cmd = [sys.executable, "-c", _PROBE, server.url, str(tmp_path / "s"), *WARM_NEVER]
        cold = subprocess.run(cmd, capture_output=True, text=True, check=True)
        warm = subprocess.run(cmd, capture_output=True, text=True, check=True)
        code, imported = cold.stdout.splitlines()[-2:]
        assert code == "0 True"  # the probe sees what a cold resolve imports
        assert {"cacheclient.transport", "tenacity", "logging"} <= set(imported.split())
        assert warm.stdout.splitlines()[-2:] == ["0 False", ""]

    def test_cli_warm_resolve_from_a_local_mirror_imports_only_what_it_uses(
        self, tmp_path: Path
    ) -> None:
        cmd = [sys.executable, "-c", _PROBE, str(SPACK_V3_SIGNED), str(tmp_path / "s"), *WARM_NEVER]
        cold = subprocess.run(cmd, capture_output=True, text=True, check=True)
        warm = subprocess.run(cmd, capture_output=True, text=True, check=True)
        assert list(tmp_path.glob("s/.cacheclient/indices/*/*.sqlite"))  # the parsed index
        # cold: no HTTP library, but the index is parsed (the probe sees the reader imported)
        assert cold.stdout.splitlines()[-2:] == ["0 False", "cacheclient.metadata.database_fast"]
        assert warm.stdout.splitlines()[-2:] == ["0 False", ""]


@pytest.mark.usefixtures("parsed_always")
class TestLocalMirrorCache:
    def test_v3_path_is_cached_and_a_new_index_is_noticed(
        self, tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        mirror = tmp_path / "mirror"
        shutil.copytree(SPACK_V3_SIGNED, mirror)
        parses = Parses(monkeypatch)
        first = open_mirror(str(mirror), store=store)
        assert len(first) == 18
        assert parses.count == 1
        assert len(list(store.indices_dir.rglob("*.sqlite"))) == 1
        again = open_mirror(str(mirror), store=store)
        assert hashes(again) == hashes(first)
        assert parses.count == 1
        assert all(r.stacks == (str(mirror),) for r in again)
        victim = _drop_one_record_v3(mirror)
        changed = open_mirror(str(mirror), store=store)
        assert hashes(changed) == hashes(first) - {victim}
        assert len(list(store.indices_dir.rglob("*.sqlite"))) == 1  # the old one is dropped

    @pytest.mark.parametrize("same_size_same_mtime", [False, True])
    def test_v2_file_url_is_cached_and_every_change_is_noticed(
        self,
        tmp_path: Path,
        store: Store,
        monkeypatch: pytest.MonkeyPatch,
        same_size_same_mtime: bool,
    ) -> None:
        mirror = tmp_path / "mirror"
        shutil.copytree(V2_MIRRORS / "signed", mirror)
        url = mirror.as_uri()
        index = mirror / "build_cache" / "index.json"
        parses = Parses(monkeypatch)
        first = open_mirror(url, store=store)
        assert parses.count == 1
        assert hashes(open_mirror(url, store=store)) == hashes(first)
        assert parses.count == 1  # warm: stat and index.json.hash only
        db = json.loads(index.read_bytes())
        installs = db["database"]["installs"]
        victim = sorted(h for h, e in installs.items() if e["spec"]["name"] == "libelf")[0]
        before = index.stat()
        if same_size_same_mtime:  # same length, same mtime: only ctime/inode tell
            installs[victim]["spec"]["name"] = "libelX"
            data = json.dumps(db, separators=(",", ":")).encode()
            data += b" " * (before.st_size - len(data))
            assert len(data) == before.st_size
        else:
            del installs[victim]
            data = json.dumps(db).encode()
        index.write_bytes(data)
        os.utime(index, ns=(before.st_atime_ns, before.st_mtime_ns))
        changed = open_mirror(url, store=store)
        if same_size_same_mtime:
            assert [r.hash for r in changed.by_name("libelX")] == [victim]
        else:
            assert hashes(changed) == hashes(first) - {victim}
        assert parses.count == 2

    def test_small_local_index_is_read_directly_without_a_store_write(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from cacheclient.mirrors import indexcache

        monkeypatch.setattr(indexcache, "STORED_INDEX_ABOVE", 1 << 30)
        assert len(open_mirror(str(SPACK_V3_SIGNED), store=store)) == 18
        assert not store.indices_dir.exists()

    def test_inspect_shares_the_cached_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from cacheclient.cli.inspect_cmd import inspect_source

        monkeypatch.setenv("CACHECLIENT_STORE", str(tmp_path / "store"))
        parses = Parses(monkeypatch)
        first = inspect_source(str(SPACK_V3_SIGNED))
        assert parses.count == 1
        assert inspect_source(str(SPACK_V3_SIGNED)) == first
        assert parses.count == 1
        assert first["records"] == 18
        assert list((tmp_path / "store").rglob("*.sqlite"))
