"""The store publishes each layout's index, its trusted signers' keys, and prunes what it replaces.

Stores here are warmed from the real fixture mirrors (Spack 1.1's v3 fixture, Spack's own v2 test
mirror); the interop suite (tests/interop) has Spack itself read them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from cacheclient.cli.gc_cmd import collect_garbage
from cacheclient.fetch import fetch_builds
from cacheclient.metadata.layout import INDEX_V2, INDEX_V2_HASH, INDEX_V3, KEYS_V3
from cacheclient.mirrors.open import local_reader, open_catalog
from cacheclient.store import Store
from cacheclient.store.publish import (
    KEY_INDEX_V2,
    V2_BLOBS_MANIFEST,
    key_manifest_path,
    key_pub_path,
    publish,
    published_blobs,
)
from cacheclient.trust import TrustStore
from gpgtools import GPG
from paths import SPACK_V3, SPACK_V3_KEY, SPACK_V3_SIGNED, V2_MIRRORS

V3_KEY = (SPACK_V3 / "public-key.fingerprint.txt").read_text().split()[0]
V2_SIGNED = V2_MIRRORS / "signed"
V2_KEY = "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E"


def warm(store: Store, mirror: Path, key: Path, *, only: int | None = None) -> None:
    TrustStore(store.trust_dir).trust(str(key))
    records = [r for r in open_catalog(str(mirror), local_reader(mirror)) if r.installable]
    fetch_builds(records[:only], mirrors=[], store=store, trust=None)


def v2_key_file() -> Path:
    return V2_SIGNED / "build_cache" / "_pgp" / f"{V2_KEY}.pub"


@pytest.fixture
def mixed(tmp_path: Path) -> Store:
    with Store(tmp_path / "store") as store:  # closed: its pins are released
        warm(store, V2_SIGNED, v2_key_file())
        warm(store, SPACK_V3_SIGNED, SPACK_V3_KEY)
    return Store(tmp_path / "store")


def database(store: Store, relative: str) -> dict[str, object]:
    raw = store.read_file(relative)
    assert raw is not None
    if relative == INDEX_V3:
        checksum = json.loads(raw)["data"][0]["checksum"]
        raw = store.blob_path(checksum).read_bytes()
    return json.loads(raw)["database"]  # type: ignore[no-any-return]


def fingerprints(armored: bytes) -> list[str]:
    out = subprocess.run(
        [GPG, "--batch", "--with-colons", "--show-keys"],
        input=armored,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")][:1]


def db_blobs(store: Store) -> list[str]:
    return [c for c, p in store.iter_blobs() if p.read_bytes()[:12] == b'{"database":']


class TestLayouts:
    def test_each_layout_indexes_its_own_builds_in_its_form(self, mixed: Store) -> None:
        builds = mixed.builds()
        v3 = database(mixed, INDEX_V3)
        v2 = database(mixed, INDEX_V2)
        held3 = {h for h, r in v3["installs"].items() if r["in_buildcache"]}  # type: ignore[attr-defined]
        held2 = {h for h, r in v2["installs"].items() if r["in_buildcache"]}  # type: ignore[attr-defined]
        assert held3 == {b.hash for b in builds if b.layout == 3}
        assert held2 == {b.hash for b in builds if b.layout == 2}
        assert len(held3) == 18
        assert len(held2) == 6
        assert (v3["version"], v2["version"]) == ("8", "8")  # one v2 spec is specfile format 5
        for db in (v3, v2):
            assert not [h for h, r in db["installs"].items() if "compiler" in r["spec"]]  # type: ignore[attr-defined]
        raw2 = mixed.read_file(INDEX_V2)
        assert raw2 is not None
        assert mixed.read_file(INDEX_V2_HASH) == hashlib.sha256(raw2).hexdigest().encode() + b"\n"

    def test_v2_blobs_are_named_in_the_private_manifest(self, mixed: Store) -> None:
        raw = mixed.read_file(V2_BLOBS_MANIFEST)
        assert raw is not None
        named = {r["checksum"] for r in json.loads(raw)["data"]}
        v2 = [b for b in mixed.builds() if b.layout == 2]
        assert named == {r.checksum for b in v2 for r in (b.tarball, b.spec_blob)}

    def test_format4_only_v2_store_is_db7_and_v3_index_is_empty(self, tmp_path: Path) -> None:
        store = Store(tmp_path / "store")
        TrustStore(store.trust_dir).trust(str(v2_key_file()))
        records = [
            r
            for r in open_catalog(str(V2_SIGNED), local_reader(V2_SIGNED))
            if r.installable and r.target == "core2"
        ]
        fetch_builds(records, mirrors=[], store=store, trust=None)
        assert database(store, INDEX_V2)["version"] == "7"
        assert database(store, INDEX_V3)["installs"] == {}
        assert store.read_file(KEYS_V3) is None  # no v3 build, so no v3 key


class TestKeys:
    def test_trusted_signers_are_published_where_each_spack_looks(self, mixed: Store) -> None:
        manifest = mixed.read_file(key_manifest_path(V3_KEY))
        assert manifest is not None
        (record,) = json.loads(manifest)["data"]
        assert record["mediaType"] == "application/pgp-keys"
        assert fingerprints(mixed.blob_path(record["checksum"]).read_bytes()) == [V3_KEY]
        index = json.loads(mixed.read_file(KEYS_V3) or b"")["data"][0]
        assert index["mediaType"] == "application/vnd.spack.keyindex.v1+json"
        assert json.loads(mixed.blob_path(index["checksum"]).read_bytes()) == {"keys": {V3_KEY: {}}}
        pub = mixed.read_file(key_pub_path(V2_KEY))
        assert pub is not None
        assert fingerprints(pub) == [V2_KEY]
        assert json.loads(mixed.read_file(KEY_INDEX_V2) or b"") == {"keys": {V2_KEY: {}}}

    def test_an_untrusted_signer_is_withdrawn_never_published(self, mixed: Store) -> None:
        TrustStore(mixed.trust_dir).untrust(V2_KEY)
        report = publish(mixed)
        assert report.withheld_keys == (V2_KEY,)
        assert report.keys_v3 == (V3_KEY,)
        assert mixed.read_file(key_pub_path(V2_KEY)) is None
        assert mixed.read_file(KEY_INDEX_V2) is None
        assert report.builds_v2 == 6  # the builds stay; Spack just cannot verify them
        TrustStore(mixed.trust_dir).untrust(V3_KEY)
        report = publish(mixed)
        assert mixed.read_file(KEYS_V3) is None
        assert mixed.read_file(key_manifest_path(V3_KEY)) is None
        assert not [p for _, p in mixed.iter_blobs() if p.read_bytes().startswith(b"-----BEGIN")]


class TestHygiene:
    def test_superseded_and_stray_index_blobs_are_pruned(self, tmp_path: Path) -> None:
        store = Store(tmp_path / "store")
        warm(store, SPACK_V3_SIGNED, SPACK_V3_KEY, only=5)
        warm(store, SPACK_V3_SIGNED, SPACK_V3_KEY)  # a second, different index
        assert len(db_blobs(store)) == 1
        stray = store.put_blob(b'{"database":{"version":"8","installs":{}},"x":1}')
        with Store(store.root) as other:
            other.pin(stray)  # some process still reads it: kept for now
            assert stray not in publish(store).pruned_blobs
            assert store.has_blob(stray)
        assert stray in publish(store).pruned_blobs
        assert len(db_blobs(store)) == 1

    def test_gc_keeps_published_blobs_and_drops_orphans_of_forgotten_builds(
        self, mixed: Store
    ) -> None:
        victim = next(b for b in mixed.builds() if b.layout == 3)
        for checksum, path in mixed.iter_blobs():
            stamp = 100.0 if checksum in published_blobs(mixed) else 10_000.0
            stamp = 100.0 if checksum == victim.tarball.checksum else stamp
            os.utime(path, (stamp, stamp))
        report = collect_garbage(mixed, older_than=3600, now=10_060.0)
        assert [e["digest"] for e in report["evicted"]] == [victim.tarball.checksum]
        assert report["orphans_removed"] == [victim.spec_blob.checksum]
        assert not mixed.has_blob(victim.spec_blob.checksum)
        assert all(mixed.has_blob(c) for c in published_blobs(mixed))
        assert mixed.read_file(key_manifest_path(V3_KEY)) is not None


class TestUntrustedRecords:
    """Build records and blobs are read back from the store: malformed ones are never published."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("metadata_path", "../../outside.spec.manifest.json"),
            ("metadata_path", "v3/manifests/spec/../../../x"),
            ("signer", "../../trust/keys/EVIL"),
            ("tarball", {"checksum": "../../x", "mediaType": "m", "contentLength": 1}),
        ],
    )
    def test_a_tampered_record_is_left_out(self, mixed: Store, field: str, value: object) -> None:
        build = next(b for b in mixed.builds() if b.layout == 3)
        path = mixed.private_dir / "builds" / f"{build.hash}.json"
        record = json.loads(path.read_text())
        record[field] = value
        path.write_text(json.dumps(record))
        report = publish(mixed)
        assert report.builds_v3 == 17
        held = {h for h, r in database(mixed, INDEX_V3)["installs"].items() if r["in_buildcache"]}  # type: ignore[attr-defined]
        assert build.hash not in held
        assert not list(mixed.root.parent.glob("outside*"))

    def test_a_spec_blob_that_does_not_hash_to_its_name_is_left_out(self, mixed: Store) -> None:
        build = next(b for b in mixed.builds() if b.layout == 2 and b.name == "libelf")
        path = mixed.blob_path(build.spec_blob.checksum)
        tampered = path.read_bytes().replace(b'"libelf"', b'"libevil"')
        assert tampered != path.read_bytes()
        path.write_bytes(tampered)
        assert publish(mixed).builds_v2 == 5
