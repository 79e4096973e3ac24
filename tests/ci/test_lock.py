from __future__ import annotations

import json

import pytest

from cacheclient.ci.lock import Lock, LockedBuild, LockedProfile, LockedSpec
from cacheclient.ci.manifest import MirrorEntry, Profile
from cacheclient.errors import MetadataError
from cacheclient.model import BlobRef

H1 = "vwaicymp67emhvtu53ght22dv5pm6y2b"
H2 = "ybmvd3uhpbh7s2m74uv3dvqdkpg5obwd"


def _build(h: str, name: str) -> LockedBuild:
    return LockedBuild(
        hash=h,
        name=name,
        version="1.0.0",
        platform="linux",
        os="debian12",
        target="x86_64_v4",
        mirror="http://127.0.0.1:1/m",
        manifest=f"v3/manifests/spec/{name}/{name}-1.0.0-{h}.spec.manifest.json",
        layout=3,
        signer="DB2679D9E5CB03ADB239ACC6789B96D6B931B1D5",
        blobs=(
            BlobRef(
                media_type="application/vnd.spack.install.v2.tar+gzip",
                checksum="75a7904ed8135f3241675040996f7abc6bdba387eb8dd6bfba3d25054d88ebcd",
                size=7635,
                compression="gzip",
            ),
        ),
    )


def _lock(order: tuple[str, ...] = (H1, H2)) -> Lock:
    builds = {h: _build(h, "demo-tool" if h == H1 else "demo-zlib") for h in order}
    return Lock(
        mirrors=(MirrorEntry(url="http://127.0.0.1:1/m"),),
        profiles=(
            LockedProfile(
                profile=Profile(platform="linux", os="debian12", target="x86_64_v4"),
                specs=(LockedSpec(request="demo-tool@1.0.0", root=H1, closure=(H2, H1)),),
            ),
        ),
        builds=builds,
    )


class TestLock:
    def test_round_trip(self) -> None:
        lock = _lock()
        again = Lock.from_json(lock.to_json(), "lock.json")
        assert again == lock
        assert again.to_json() == lock.to_json()

    def test_bytes_do_not_depend_on_insertion_order(self) -> None:
        assert _lock((H1, H2)).to_json() == _lock((H2, H1)).to_json()
        assert _lock((H1, H2)).cache_key() == _lock((H2, H1)).cache_key()

    def test_cache_key_changes_with_content(self) -> None:
        other = _lock()
        changed = Lock(mirrors=(), profiles=other.profiles, builds=other.builds)
        assert changed.cache_key() != other.cache_key()
        assert other.cache_key().startswith("sha256:")

    def test_record_from_lock_needs_no_index(self) -> None:
        record = _lock().builds[H1].to_record()
        assert record.manifest_path is not None
        assert record.stacks == ("http://127.0.0.1:1/m",)
        assert record.blobs[0].path.startswith("blobs/sha256/75/")

    @pytest.mark.parametrize(
        ("mutate", "path"),
        [
            (lambda d: d.pop("builds"), "builds"),
            (lambda d: d.update(lock_version=9), "lock_version"),
            (
                lambda d: d["builds"][H1].update(manifest="../../etc/passwd"),
                f"builds.{H1}.manifest",
            ),
            (
                lambda d: d["builds"][H1]["blobs"][0].update(checksum="zz"),
                f"builds.{H1}.blobs[0].checksum",
            ),
            (lambda d: d["builds"][H1]["blobs"][0].update(size=-1), f"builds.{H1}.blobs[0].size"),
            (lambda d: d["builds"][H1].update(layout="3"), f"builds.{H1}.layout"),
            (lambda d: d["builds"].update(short=d["builds"].pop(H2)), "builds.short"),
            (
                lambda d: d["profiles"][0]["specs"][0].update(root="a" * 32),
                "profiles[0].specs[0].root",
            ),
        ],
    )
    def test_bad_lock_names_the_key(self, mutate: object, path: str) -> None:
        data = json.loads(_lock().to_json())
        assert callable(mutate)
        mutate(data)
        with pytest.raises(MetadataError) as info:
            Lock.from_json(json.dumps(data), "ci.lock")
        assert info.value.source == "ci.lock"
        assert info.value.path == path

    def test_not_json(self) -> None:
        with pytest.raises(MetadataError, match=r"ci\.lock: not a JSON lockfile"):
            Lock.from_json("{", "ci.lock")
