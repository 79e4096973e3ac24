"""Item 5 (T1/T2): bytes written are bounded like bytes read; a sparse member is refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from cacheclient.errors import UnsafeArchiveError
from cacheclient.installation import LocalBuild, install_fetched
from cacheclient.metadata.specfile import read_specfile
from cacheclient.model import BlobRef
from paths import SPACK_V3_SIGNED
from security.sectools import EXPECTED, TOOL_HASH, snapshot

TOOL_SPEC = next(s for s in EXPECTED["specs"] if s["dag_hash"] == TOOL_HASH)


def _with_sparse_member(source: Path, target: Path) -> None:
    """The real archive plus one GNU sparse member inside the prefix."""
    out = io.BytesIO()
    with (
        tarfile.open(source, "r:gz") as tar,
        tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as new,
    ):
        prefix = ""
        for info in tar:
            data = tar.extractfile(info) if info.isreg() else None
            new.addfile(info, data)
            if info.name.endswith(".spack/binary_distribution"):
                prefix = info.name.rsplit("/.spack/", 1)[0]
        sparse = tarfile.TarInfo(f"{prefix}/share/holes.bin")
        sparse.type = tarfile.GNUTYPE_SPARSE
        sparse.size = 0
        new.addfile(sparse)
    target.write_bytes(gzip.compress(out.getvalue()))


def test_a_sparse_member_is_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "victim.txt").write_text("do not touch\n")
    before = snapshot(sentinel)
    archive = tmp_path / "sparse.tar.gz"
    _with_sparse_member(SPACK_V3_SIGNED / TOOL_SPEC["tarball"]["path"], archive)
    blob = SPACK_V3_SIGNED / TOOL_SPEC["spec_blob"]["path"]
    record = read_specfile(blob.read_bytes(), str(blob)).root
    ref = BlobRef(
        media_type=TOOL_SPEC["tarball"]["mediaType"],
        checksum=hashlib.sha256(archive.read_bytes()).hexdigest(),
        size=archive.stat().st_size,
    )
    item = LocalBuild(record=record, tarball_path=archive, tarball=ref)
    root = tmp_path / "root"
    with pytest.raises(UnsafeArchiveError) as err:
        install_fetched([item], root=root, patchelf=None)
    assert err.value.exit_code == 6
    message = str(err.value)
    assert "\n" not in message
    assert "holes.bin" in message
    assert "sparse member refused" in message
    assert not any(p.name.startswith("demo-tool") for p in root.rglob("*"))
    assert snapshot(sentinel) == before


def test_a_large_archive_is_hashed_on_its_own_thread_and_checked(tmp_path: Path) -> None:
    from cacheclient.installation.extract import TarballMismatch, extract_prefix
    from reliability import write_big_mirror

    mirror = write_big_mirror(tmp_path / "mirror", megabytes=12, files=40)
    build = next(iter(mirror.builds.values()))
    tarball = mirror.root / build.tarball.path
    good = extract_prefix(tarball, tmp_path / "good", expected_sha256=build.tarball.checksum)
    assert good.sha256 == build.tarball.checksum
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    changed = tmp_path / "changed.tar.gz"
    changed.write_bytes(bytes(data))
    with pytest.raises(TarballMismatch) as err:
        extract_prefix(changed, tmp_path / "bad", expected_sha256=build.tarball.checksum)
    assert err.value.exit_code == 4
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if ".extract-" in p.name]
