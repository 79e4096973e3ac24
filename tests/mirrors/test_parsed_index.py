"""The on-disk index store: same answers as the parsed index, built once, rebuilt if corrupt."""

from __future__ import annotations

from pathlib import Path

import pytest

from cacheclient.errors import MetadataError
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.layout import spec_manifest_path
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.mirrors.parsed_index import build_index_store, index_checksum, open_index_store
from cacheclient.resolution.host import HostProfile
from cacheclient.resolution.resolve import resolve
from paths import SPACK_V3_SIGNED, V2_MIRRORS

HOST = HostProfile(platform="linux", os="debian12", target="x86_64_v4")


def v3_index() -> tuple[bytes, str]:
    raw = (SPACK_V3_SIGNED / "v3/manifests/index/index.manifest.json").read_bytes()
    blob = parse_manifest(raw, "index manifest").index_blob
    assert blob is not None
    return (SPACK_V3_SIGNED / blob.path).read_bytes(), blob.checksum


class TestIndexStore:
    def test_same_records_and_answer_as_parsed_index(self, tmp_path: Path) -> None:
        data, checksum = v3_index()
        assert index_checksum(data) == checksum
        parsed = parse_database(data, "idx", stacks=("m",), manifest_path_for=spec_manifest_path)
        with open_index_store(
            tmp_path,
            checksum,
            source="idx",
            data=lambda: data,
            stacks=("m",),
            manifest_path_for=spec_manifest_path,
        ) as stored:
            assert len(stored) == len(parsed)
            assert stored.names() == parsed.names()
            for name in parsed.names():
                assert sorted(stored.by_name(name), key=lambda r: r.hash) == sorted(
                    parsed.by_name(name), key=lambda r: r.hash
                )
            (a,) = resolve(["demo-tool@1.0.0"], stored, HOST)
            (b,) = resolve(["demo-tool@1.0.0"], parsed, HOST)
            assert a.to_dict() == b.to_dict()
            assert a.selected is not None
            assert a.selected.hash == "vwaicymp67emhvtu53ght22dv5pm6y2b"
            assert [r.hash for r in stored.find_prefix("vwaicym")] == [a.selected.hash]

    def test_warm_open_builds_only_what_it_needs(self, tmp_path: Path) -> None:
        data, checksum = v3_index()
        build_index_store(data, tmp_path, checksum, "idx")
        with open_index_store(tmp_path, checksum, source="idx") as stored:
            (res,) = resolve(["demo-zlib"], stored, HOST)
            assert res.selected is not None
            assert len(stored._cache) == 6  # the six demo-zlib builds; nothing else

    def test_missing_without_data(self, tmp_path: Path) -> None:
        with pytest.raises(MetadataError, match="no usable index cache"):
            open_index_store(tmp_path, "0" * 64, source="idx")

    def test_corrupt_store_is_rebuilt(self, tmp_path: Path) -> None:
        data, checksum = v3_index()
        (tmp_path / f"{checksum}.sqlite").write_bytes(b"not a database at all" * 100)
        with open_index_store(tmp_path, checksum, source="idx", data=lambda: data) as stored:
            assert len(stored) == 18
        assert not list(tmp_path.glob(".partial-*"))

    def test_v2_index_with_externals(self, tmp_path: Path) -> None:
        data = (V2_MIRRORS / "signed/build_cache/index.json").read_bytes()
        key = index_checksum(data)
        with open_index_store(tmp_path, key, source="v2", data=lambda: data) as stored:
            (gcc,) = stored.by_name("gcc")
            assert not gcc.installable
            assert gcc.is_external

    def test_malformed_index_leaves_nothing(self, tmp_path: Path) -> None:
        with pytest.raises(MetadataError):
            build_index_store(b'{"database": {"version": "8"}}', tmp_path, "k", "bad")
        assert list(tmp_path.iterdir()) == []
