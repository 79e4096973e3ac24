"""The content-addressed store: atomic writes, locks shared between processes, index, verify, gc."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cacheclient.cli.gc_cmd import collect_garbage, parse_age, parse_size
from cacheclient.cli.main import main
from cacheclient.cli.verify_cmd import verify_store
from cacheclient.errors import StoreError, UsageError
from cacheclient.fetch import fetch_builds
from cacheclient.mirrors.open import local_reader, open_catalog
from cacheclient.model import BlobRef
from cacheclient.store import INDEX_MANIFEST, Store, StoredBuild, default_store_root
from cacheclient.trust import TrustStore
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store") as s:
        yield s


@pytest.fixture
def warm(tmp_path: Path) -> Path:
    """A store holding every build of the signed fixture mirror (fetched from the directory)."""
    root = tmp_path / "warm"
    with Store(root) as s:
        TrustStore(s.trust_dir).trust(str(SPACK_V3_KEY))
        records = list(open_catalog(str(SPACK_V3_SIGNED), local_reader(SPACK_V3_SIGNED)))
        fetch_builds([r for r in records if r.installable], mirrors=[], store=s, trust=None)
    return root


def privileged(*command: str) -> list[str]:
    """*command* as root: directly when we are root (CI containers), else through ``sudo -n``."""
    return list(command) if os.geteuid() == 0 else ["sudo", "-n", *command]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (mode 1777, so a non-root test user can write to it)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(
        privileged("mount", "-t", "tmpfs", "-o", "size=256k,mode=1777", "tmpfs", str(mount)),
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(privileged("umount", "-l", str(mount)), check=False)


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.startswith(".tmp-")]


class TestLocation:
    def test_env_overrides_the_user_cache_dir(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert default_store_root() == tmp_path / "xdg" / "cache" / "cacheclient" / "store"
        monkeypatch.setenv("CACHECLIENT_STORE", str(tmp_path / "elsewhere"))
        assert default_store_root() == tmp_path / "elsewhere"
        assert Store().root == tmp_path / "elsewhere"

    def test_explicit_root_is_made_absolute(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        assert Store("rel").root == tmp_path / "rel"


class TestAtomicWrites:
    def test_write_read_and_no_temp_files(self, store: Store) -> None:
        store.write_file("v3/manifests/x.json", b"one")
        store.write_file("v3/manifests/x.json", b"two")
        assert store.read_file("v3/manifests/x.json") == b"two"
        assert store.read_file("v3/none.json") is None
        assert leftovers(store.root) == []

    def test_put_blob_checks_the_digest(self, store: Store) -> None:
        digest = store.put_blob(b"data")
        assert digest == hashlib.sha256(b"data").hexdigest()
        assert store.blob_path(digest).read_bytes() == b"data"
        with pytest.raises(StoreError, match="hashes to"):
            store.put_blob(b"other", checksum="0" * 64)
        assert [c for c, _ in store.iter_blobs()] == [digest]

    def test_read_only_store_is_a_store_error(self, tmpfs: Path) -> None:
        subprocess.run(privileged("mount", "-o", "remount,ro", str(tmpfs)), check=True)
        store = Store(tmpfs / "store")
        with pytest.raises(StoreError, match=r"store.*read-only"):
            store.ensure()
        assert not (tmpfs / "store").exists()

    def test_read_only_warm_store_still_serves_fetches(self, tmpfs: Path) -> None:
        with Store(tmpfs / "store") as store:
            TrustStore(store.trust_dir).trust(str(SPACK_V3_KEY))
            catalog = open_catalog(str(SPACK_V3_SIGNED), local_reader(SPACK_V3_SIGNED))
            records = [r for r in catalog if r.name == "demo-zlib"]
            fetch_builds(records, mirrors=[], store=store, trust=None)
        subprocess.run(privileged("mount", "-o", "remount,ro", str(tmpfs)), check=True)
        with Store(tmpfs / "store") as store:
            for offline in (True, False):
                result = fetch_builds(records, mirrors=[], store=store, trust=None, offline=offline)
                assert all(item.already_present for item in result.items)
                assert all(item.signer for item in result.items)

    def test_disk_full_leaves_nothing_visible(self, tmpfs: Path) -> None:
        store = Store(tmpfs / "store")
        store.ensure()
        big = os.urandom(512 * 1024)
        digest = hashlib.sha256(big).hexdigest()
        with pytest.raises(StoreError, match="no space left on device") as info:
            store.put_blob(big)
        assert str(store.blob_path(digest)) in str(info.value)
        assert not store.has_blob(digest)
        assert leftovers(store.root) == []


class TestIndexAndRecords:
    def test_store_is_a_spack_mirror(self, warm: Path) -> None:
        catalog = open_catalog(str(warm), local_reader(warm))
        expected = open_catalog(str(SPACK_V3_SIGNED), local_reader(SPACK_V3_SIGNED))
        assert sorted(r.hash for r in catalog) == sorted(r.hash for r in expected)
        assert json.loads((warm / "v3" / "layout.json").read_text()) == {"signing": "gpg"}
        manifest = json.loads((warm / INDEX_MANIFEST).read_text())
        record = manifest["data"][0]
        blob = warm / "blobs" / "sha256" / record["checksum"][:2] / record["checksum"]
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == record["checksum"]
        assert record["mediaType"] == "application/vnd.spack.db.v8+json"

    def test_stored_build_round_trip(self) -> None:
        ref = BlobRef(media_type="m", checksum="a" * 64, size=3, compression="gzip")
        build = StoredBuild(
            hash="h" * 32,
            name="n",
            version="1",
            layout=3,
            metadata_path="v3/x",
            tarball=ref,
            spec_blob=ref,
            mirror="https://m",
            signer="F" * 40,
        )
        assert StoredBuild.from_dict(json.loads(json.dumps(build.to_dict()))) == build


_HOLDER = """
import sys
from cacheclient.store import Store
store = Store(sys.argv[1])
print("pinned" if store.pin(sys.argv[2]) else "absent", flush=True)
sys.stdin.readline()
"""


class TestPinsAndLocks:
    def test_blob_in_use_by_another_process_is_never_removed(self, store: Store) -> None:
        digest = store.put_blob(b"precious")
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(store.root), digest],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "pinned"
            assert store.remove_blob(digest) is False
            report = collect_garbage(store, max_size=0)
            assert report["in_use_kept"] == [digest]
            assert store.has_blob(digest)
        finally:
            holder.communicate("\n", timeout=30)
        assert store.remove_blob(digest) is True
        assert not store.has_blob(digest)

    def test_pin_after_removal_reports_absent(self, store: Store) -> None:
        digest = store.put_blob(b"x")
        assert store.remove_blob(digest)
        assert store.pin(digest) is False


class TestVerify:
    def test_clean_store(self, warm: Path) -> None:
        report = verify_store(Store(warm))
        assert report["corrupt"] == []
        assert report["broken_builds"] == []
        assert report["blobs_checked"] > 18
        assert main(["verify", "--store", str(warm)]) == 0

    def test_corruption_reported_then_repaired(
        self, warm: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        store = Store(warm)
        build = store.builds()[0]
        path = store.blob_path(build.tarball.checksum)
        path.write_bytes(path.read_bytes() + b"!")
        assert main(["verify", "--store", str(warm)]) == 4
        err = capsys.readouterr().err
        assert build.tarball.checksum in err
        assert main(["verify", "--store", str(warm), "--repair", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["removed"] == [build.tarball.checksum]
        assert [b["hash"] for b in report["broken_builds"]] == [build.hash]
        assert not path.exists()
        assert store.load_build(build.hash) is None
        catalog = open_catalog(str(warm), local_reader(warm))
        assert build.hash not in {r.hash for r in catalog if r.installable}
        assert main(["verify", "--store", str(warm)]) == 0


class TestGc:
    @pytest.mark.parametrize(
        ("text", "size"),
        [("2048", 2048), ("1K", 1024), ("1.5k", 1536), ("10MiB", 10 << 20), ("2G", 2 << 30)],
    )
    def test_parse_size(self, text: str, size: int) -> None:
        assert parse_size(text) == size

    @pytest.mark.parametrize(
        ("text", "age"), [("90", 90), ("90m", 5400), ("12h", 43200), ("30d", 2592000)]
    )
    def test_parse_age(self, text: str, age: float) -> None:
        assert parse_age(text) == age  # a unit conversion, not a timing

    @pytest.mark.parametrize("bad", ["", "ten", "5X", "-1"])
    def test_bad_values(self, bad: str) -> None:
        with pytest.raises(UsageError):
            parse_size(bad)
        with pytest.raises(UsageError):
            parse_age(bad)

    def test_max_size_evicts_least_recently_used_first(self, warm: Path) -> None:
        store = Store(warm)
        blobs = sorted(store.iter_blobs())
        for n, (_, path) in enumerate(blobs):
            os.utime(path, (1000.0 + n, 1000.0 + n))
        total = sum(p.stat().st_size for _, p in blobs)
        newest = blobs[-1][1].stat().st_size
        report = collect_garbage(store, max_size=total - 1, now=5000.0)
        assert report["size_after"] <= total - 1
        evicted = [e["digest"] for e in report["evicted"]]
        index_blob = json.loads((warm / INDEX_MANIFEST).read_text())["data"][0]["checksum"]
        expected_order = [c for c, _ in blobs if c != index_blob]
        assert evicted == expected_order[: len(evicted)]
        assert newest > 0
        assert store.has_blob(index_blob)

    def test_older_than_and_forgotten_builds(self, warm: Path) -> None:
        store = Store(warm)
        victim = store.builds()[0]
        for checksum, path in store.iter_blobs():
            stamp = 100.0 if checksum == victim.tarball.checksum else 10_000.0
            os.utime(path, (stamp, stamp))
        report = collect_garbage(store, older_than=3600, now=10_000.0 + 60)
        assert [e["digest"] for e in report["evicted"]] == [victim.tarball.checksum]
        assert report["builds_forgotten"] == [victim.hash]
        catalog = open_catalog(str(warm), local_reader(warm))
        assert victim.hash not in {r.hash for r in catalog if r.installable}

    def test_cli(self, warm: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["gc", "--store", str(warm), "--max-size", "1K", "--dry-run"]) == 0
        assert "would evict" in capsys.readouterr().out
        assert verify_store(Store(warm))["broken_builds"] == []
        assert main(["gc", "--store", str(warm), "--older-than", "0s", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["evicted"]
        assert Store(warm).builds() == []
        assert main(["gc", "--store", str(warm)]) == 2
