"""fetch_builds against the Spack-written fixture mirrors served by nginx (and the fault server)."""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cacheclient.errors import DownloadError, VerificationError
from cacheclient.events import Reporter
from cacheclient.fetch import FetchResult, fetch_builds, stack_mirror_url
from cacheclient.metadata.layout import spec_manifest_path
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.mirrors.open import local_reader, open_catalog
from cacheclient.model import BuildRecord
from cacheclient.store import Store
from cacheclient.transport import TransportOptions, reader_for, transport_for
from cacheclient.trust import TrustStore
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED, SPACK_V3_UNSIGNED, V2_MIRRORS
from servers import Fault, FaultServer, NginxServer, refused_url

V2_KEY = (
    V2_MIRRORS / "signed" / "build_cache" / "_pgp" / "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E.pub"
)
FAST = TransportOptions(attempts=2, backoff=0.001, not_found_delay=0.0, sleep=lambda s: None)


def records_of(mirror: str) -> list[BuildRecord]:
    catalog = open_catalog(mirror, reader_for(mirror))
    return sorted((r for r in catalog if r.installable), key=lambda r: r.hash)


class Events(Reporter):
    def __init__(self) -> None:
        self.rejected: list[tuple[str, str]] = []
        self.finished_: list[tuple[str, bool]] = []

    def candidate_rejected(self, candidate: object, reason: str) -> None:
        self.rejected.append((str(candidate), reason))

    def download_finished(self, artifact: str, already_present: bool) -> None:
        self.finished_.append((artifact, already_present))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store") as s:
        yield s


@pytest.fixture
def trusted(store: Store) -> TrustStore:
    trust = TrustStore(store.trust_dir)
    trust.trust(str(SPACK_V3_KEY))
    return trust


def blob_files(store: Store) -> list[str]:
    return [c for c, _ in store.iter_blobs()]


def manifest_file(mirror: Path, r: BuildRecord) -> Path:
    return mirror / spec_manifest_path(r.name, r.version, r.hash)


def fetch(
    records: list[BuildRecord], mirrors: list[str], store: Store, **kw: object
) -> FetchResult:
    kw.setdefault("transport_options", FAST)
    return fetch_builds(records, mirrors=mirrors, store=store, trust=None, **kw)  # type: ignore[arg-type]


class TestSignedV3:
    def test_everything_verifies_once_trusted(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        records = records_of(server.url)
        result = fetch(records, [server.url], store, jobs=4)
        assert [i.record.hash for i in result.items] == [r.hash for r in records]
        for item in result.items:
            assert item.signer == "DB2679D9E5CB03ADB239ACC6789B96D6B931B1D5"
            assert item.spec.root.hash == item.record.hash
            data = item.tarball_path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == item.tarball.checksum
            assert len(data) == item.tarball.size
            expected = manifest_file(SPACK_V3_SIGNED, item.record).read_bytes()
            assert item.manifest_path.read_bytes() == expected
            assert not item.already_present
        assert result.unsigned == []
        assert result.downloaded_bytes > 0

    def test_second_run_downloads_nothing(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        records = records_of(server.url)
        fetch(records, [server.url], store)
        before = server.count("/blobs/")
        again = fetch(records, [server.url], store)
        assert server.count("/blobs/") == before
        assert all(i.already_present for i in again.items)
        assert again.downloaded_bytes == 0

    def test_untrusted_key_fails_and_stores_nothing(
        self, nginx_mirror: Callable[..., NginxServer], store: Store
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        records = records_of(server.url)
        server.clear_log()
        with pytest.raises(VerificationError, match="789B96D6B931B1D5") as info:
            fetch(records, [server.url], store)
        assert info.value.exit_code == 4
        assert info.value.mirror == server.url
        assert blob_files(store) == []
        assert server.count("/blobs/") == 0

    def test_store_is_a_valid_mirror_afterwards(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        records = records_of(server.url)
        fetch(records, [server.url], store)
        catalog = open_catalog(str(store.root), local_reader(store.root))
        assert sorted(r.hash for r in catalog if r.installable) == [r.hash for r in records]
        # ... that fetch can use as a mirror (signatures still verify: bytes kept as fetched)
        served = nginx_mirror(store.root)
        with Store(store.root.parent / "second") as other:
            TrustStore(other.trust_dir).trust(str(SPACK_V3_KEY))
            result = fetch(records_of(served.url), [served.url], other)
        assert len(result.items) == len(records)

    def test_root_hash_must_be_the_requested_one(
        self,
        tmp_path: Path,
        nginx_mirror: Callable[..., NginxServer],
        store: Store,
        trusted: TrustStore,
    ) -> None:
        mirror = tmp_path / "mirror"
        shutil.copytree(SPACK_V3_SIGNED, mirror)
        records = records_of(str(mirror))
        victim, imposter = records[0], records[1]
        # a validly signed manifest of another build, placed where the victim's should be
        manifest_file(mirror, victim).write_bytes(manifest_file(mirror, imposter).read_bytes())
        server = nginx_mirror(mirror)
        with pytest.raises(VerificationError, match="was requested") as info:
            fetch([victim], [server.url], store)
        assert info.value.expected == victim.hash
        assert info.value.actual == imposter.hash
        assert store.load_build(victim.hash) is None


class TestUnsigned:
    def test_unsigned_mirror_is_refused_by_default(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        server = nginx_mirror(SPACK_V3_UNSIGNED)
        with pytest.raises(VerificationError, match="not signed"):
            fetch(records_of(server.url), [server.url], store)
        assert blob_files(store) == []

    @pytest.mark.parametrize("how", ["flag", "mirror"])
    def test_allowed_unsigned_is_reported(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, how: str
    ) -> None:
        server = nginx_mirror(SPACK_V3_UNSIGNED)
        records = records_of(server.url)
        if how == "flag":
            result = fetch(records, [server.url], store, allow_unsigned=True)
        else:
            result = fetch(records, [server.url], store, unsigned_mirrors=[server.url + "/"])
        assert len(result.unsigned) == len(records) == len(result.items)
        assert result.to_dict()["not_signature_checked"]

    def test_v2_unsigned(self, nginx_mirror: Callable[..., NginxServer], store: Store) -> None:
        server = nginx_mirror(V2_MIRRORS / "unsigned")
        records = records_of(server.url)
        with pytest.raises(VerificationError, match="no signed metadata"):
            fetch(records, [server.url], store)
        result = fetch(records, [server.url], store, allow_unsigned=True)
        assert {i.layout for i in result.items} == {2}
        assert all(i.signer is None for i in result.items)


class TestSignedV2:
    def test_v2_signed_verifies_with_its_key(
        self, nginx_mirror: Callable[..., NginxServer], store: Store
    ) -> None:
        server = nginx_mirror(V2_MIRRORS / "signed")
        records = records_of(server.url)
        with pytest.raises(VerificationError, match="FA61D50C12CAD37E"):
            fetch(records, [server.url], store)
        TrustStore(store.trust_dir).trust(str(V2_KEY))
        result = fetch(records, [server.url], store)
        assert len(result.items) == len(records) > 0
        for item in result.items:
            assert item.layout == 2
            assert item.signer == "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E"
            assert (
                hashlib.sha256(item.tarball_path.read_bytes()).hexdigest()
                == item.spec.tarball_sha256
            )
        # the store now also answers v2 requests and lists the builds in its v3 index
        catalog = open_catalog(str(store.root), local_reader(store.root))
        assert {r.hash for r in catalog if r.installable} == {r.hash for r in records}
        again = fetch(records, [], store, offline=True)
        assert all(i.already_present and i.signer for i in again.items)


class TestChecksums:
    def test_wrong_bytes_are_refused_with_both_digests(
        self, fault_server: Callable[..., FaultServer], store: Store, trusted: TrustStore
    ) -> None:
        server = fault_server(SPACK_V3_SIGNED)
        record = records_of(server.url)[0]
        manifest = json.loads(
            trusted.verify_clearsigned(manifest_file(SPACK_V3_SIGNED, record).read_bytes())[0]
        )
        tar = next(
            d
            for d in manifest["data"]
            if d["mediaType"].startswith("application/vnd.spack.install")
        )
        blob = f"/blobs/sha256/{tar['checksum'][:2]}/{tar['checksum']}"
        evil = b"\0" * tar["contentLength"]
        server.inject(Fault(kind="replace", path=blob, body=evil))
        with pytest.raises(VerificationError, match="sha256 mismatch") as info:
            fetch([record], [server.url], store)
        err = info.value
        assert err.expected == tar["checksum"]
        assert err.actual == hashlib.sha256(evil).hexdigest()
        assert err.url == server.url + blob
        assert err.mirror == server.url
        assert tar["checksum"] in str(err)
        assert err.actual in str(err)
        assert not store.has_blob(tar["checksum"])
        assert not store.partial_path(tar["checksum"]).exists()
        assert store.load_build(record.hash) is None

    def test_bad_kept_prefix_is_downloaded_again(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        record = records_of(server.url)[0]
        payload = trusted.verify_clearsigned(manifest_file(SPACK_V3_SIGNED, record).read_bytes())
        tar = parse_manifest(payload[0], "m").tarball
        assert tar is not None
        url = f"{server.url}/{tar.path}"
        # a partial download from a crashed run whose bytes went bad on disk
        store.ensure()
        stream = transport_for(url)._open(url, 0, None)
        validator = stream.validator
        stream.close()
        partial = store.partial_path(tar.checksum)
        partial.write_bytes(b"\0" * (tar.size // 2))
        meta = partial.with_name(partial.name + ".meta")
        meta.write_text(json.dumps({"url": url, "validator": validator}))
        server.clear_log()
        result = fetch([record], [server.url], store)
        assert (
            result.items[0].tarball_path.read_bytes() == (SPACK_V3_SIGNED / tar.path).read_bytes()
        )
        tar_requests = [e for e in server.requests() if e.uri == "/" + tar.path]
        assert [e.range for e in tar_requests] == [f"bytes={tar.size // 2}-", ""]

    def test_bad_mirror_does_not_fail_when_another_has_it(
        self,
        fault_server: Callable[..., FaultServer],
        nginx_mirror: Callable[..., NginxServer],
        store: Store,
        trusted: TrustStore,
    ) -> None:
        bad = fault_server(SPACK_V3_SIGNED)
        bad.inject(Fault(kind="replace", prefix="/blobs/", body=b"garbage"))
        good = nginx_mirror(SPACK_V3_SIGNED)
        records = [replace(r, stacks=(bad.url,)) for r in records_of(good.url)[:3]]
        events = Events()
        result = fetch(records, [bad.url, good.url], store, jobs=1, reporter=events)
        assert {i.mirror for i in result.items} == {good.url}
        assert any("mismatch" in reason for _, reason in events.rejected)
        assert result.warnings
        assert all(f"came from {good.url} after" in w for w in result.warnings)


class TestMirrors:
    def test_catalog_mirror_first_then_others(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        first = nginx_mirror(SPACK_V3_SIGNED)
        second = nginx_mirror(SPACK_V3_SIGNED)
        records = records_of(second.url)[:2]  # stacks = (second.url,)
        result = fetch(records, [first.url, second.url], store)
        assert {i.mirror for i in result.items} == {second.url}
        assert first.count("/blobs/") == 0

    def test_mirror_url_with_a_path_prefix(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED.parent)
        mirror = f"{server.url}/{SPACK_V3_SIGNED.name}/"
        records = records_of(mirror)[:2]
        result = fetch(records, [mirror], store)
        assert len(result.items) == 2
        assert {e.uri.split("/")[1] for e in server.requests()} == {SPACK_V3_SIGNED.name}

    def test_dead_mirror_is_skipped_after_n_failures(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        good = nginx_mirror(SPACK_V3_SIGNED)
        dead = refused_url()
        records = [replace(r, stacks=(dead,)) for r in records_of(good.url)[:6]]
        events = Events()
        result = fetch(records, [good.url], store, jobs=1, failure_limit=2, reporter=events)
        assert {i.mirror for i in result.items} == {good.url}
        skipped = [c for c, reason in events.rejected if "repeated failures" in reason]
        assert len(skipped) == 4

    def test_404_is_retried_once_then_next_mirror(
        self,
        fault_server: Callable[..., FaultServer],
        nginx_mirror: Callable[..., NginxServer],
        store: Store,
        trusted: TrustStore,
    ) -> None:
        racing = fault_server(SPACK_V3_SIGNED)
        racing.inject(Fault(kind="not_found", prefix="/v3/manifests/spec/"))
        good = nginx_mirror(SPACK_V3_SIGNED)
        record = replace(records_of(good.url)[0], stacks=(racing.url,))
        result = fetch([record], [good.url], store)
        assert result.items[0].mirror == good.url
        assert racing.count("/v3/manifests/spec/") == 2  # the try and one retry

    def test_no_mirror_has_it(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        empty = nginx_mirror(V2_MIRRORS / "unsigned")
        record = records_of(str(SPACK_V3_SIGNED))[0]
        record = replace(record, stacks=())
        with pytest.raises(DownloadError, match="not found on any mirror") as info:
            fetch([record], [empty.url], store)
        assert record.hash in str(info.value)

    @pytest.mark.parametrize(
        ("stack", "base", "url"),
        [
            ("root", None, "https://binaries.spack.io/develop"),
            ("e4s", None, "https://binaries.spack.io/develop/e4s"),
            (
                "ml-linux-x86_64-cpu",
                "https://m.example/v1/",
                "https://m.example/v1/ml-linux-x86_64-cpu",
            ),
            ("https://other/mirror", "https://m.example", "https://other/mirror"),
        ],
    )
    def test_stack_names_map_under_the_base(self, stack: str, base: str | None, url: str) -> None:
        assert stack_mirror_url(stack, base) == url


class TestOffline:
    def test_offline_names_what_is_missing(self, store: Store) -> None:
        records = records_of(str(SPACK_V3_SIGNED))[:2]
        with pytest.raises(DownloadError, match="offline: 2 build") as info:
            fetch(records, [], store, offline=True)
        for record in records:
            assert record.hash in str(info.value)

    def test_offline_after_fetch_needs_no_server(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        records = records_of(server.url)
        fetch(records, [server.url], store)
        server.stop()
        result = fetch(records, [server.url], store, offline=True)
        assert all(i.already_present for i in result.items)
        # a removed tarball is named precisely
        victim = result.items[0]
        victim.tarball_path.unlink()
        with pytest.raises(DownloadError, match=f"tarball blob {victim.tarball.checksum}"):
            fetch([victim.record], [], store, offline=True)


_WORKER = """
import sys
from pathlib import Path
from cacheclient.fetch import fetch_builds
from cacheclient.mirrors.open import open_catalog
from cacheclient.store import Store
from cacheclient.transport import reader_for
url, root = sys.argv[1], sys.argv[2]
records = [r for r in open_catalog(url, reader_for(url)) if r.installable]
with Store(Path(root)) as store:
    result = fetch_builds(records, mirrors=[url], store=store, trust=None, jobs=4)
print(sum(1 for i in result.items if not i.already_present))
"""


class _Interrupt(Reporter):
    def download_progress(self, artifact: str, done: int, total: int | None) -> None:
        if artifact.endswith("tarball"):
            raise KeyboardInterrupt


class TestInterrupted:
    def test_ctrl_c_keeps_the_partial_file_for_the_next_run(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        record = records_of(server.url)[0]
        with pytest.raises(KeyboardInterrupt):
            fetch([record], [server.url], store, reporter=_Interrupt())
        partials = list((store.private_dir / "partial").glob("*.partial"))
        assert len(partials) == 1
        assert len(blob_files(store)) == 1  # the spec blob; the tarball is not visible
        tarball = partials[0].name.split(".")[0]
        assert not store.has_blob(tarball)
        server.clear_log()
        result = fetch([record], [server.url], store)
        assert result.items[0].tarball.checksum == tarball
        assert server.count(f"/blobs/sha256/{tarball[:2]}/{tarball}") == 0  # already complete


class TestConcurrentProcesses:
    def test_each_blob_is_downloaded_once(
        self, nginx_mirror: Callable[..., NginxServer], store: Store, trusted: TrustStore
    ) -> None:
        server = nginx_mirror(SPACK_V3_SIGNED)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, server.url, str(store.root)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(4)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-500:] for o in outputs]
        index = json.loads((SPACK_V3_SIGNED / "v3/manifests/index/index.manifest.json").read_text())
        index_blob = index["data"][0]["checksum"]  # every worker reads the index itself
        per_blob = collections.Counter(
            e.uri
            for e in server.requests()
            if e.uri.startswith("/blobs/") and e.status == 200 and index_blob not in e.uri
        )
        assert per_blob
        assert set(per_blob.values()) == {1}
        for checksum, path in store.iter_blobs():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == checksum
        assert not list((store.private_dir / "partial").glob("*.partial"))
