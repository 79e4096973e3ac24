"""Item 1 (T2): every blob is verified where it is used, not only when it was downloaded."""

from __future__ import annotations

import gzip
import json
import shutil

from paths import SPACK_V3_SIGNED
from security.sectools import (
    EXPECTED,
    TOOL_HASH,
    Sandbox,
    build_record,
    expect_error,
    snapshot,
)


def _tarball(box: Sandbox) -> str:
    return str(build_record(box.store)["tarball"]["checksum"])


class TestTarballChangedInTheStore:
    def test_another_valid_tarball_is_refused_removed_and_fetched_again(self, box: Sandbox) -> None:
        assert box.fetch().code == 0
        checksum = _tarball(box)
        other = next(s for s in EXPECTED["specs"] if s["dag_hash"] != TOOL_HASH)
        blob = box.blob(checksum)
        blob.chmod(0o644)
        shutil.copyfile(SPACK_V3_SIGNED / other["tarball"]["path"], blob)  # real, valid
        line = expect_error(box.install(), 4, "tarball blob", str(blob), str(box.store), "removed")
        assert "demo-tool" in line
        assert not blob.exists()
        assert not (box.root / "linux-x86_64_v4").exists() or not any(
            (box.root / "linux-x86_64_v4").iterdir()
        )
        assert box.install().code == 0  # fetched again, installed
        box.finish()

    def test_one_flipped_bit_in_the_gzip_trailer_is_refused(self, box: Sandbox) -> None:
        assert box.fetch().code == 0
        blob = box.blob(_tarball(box))
        data = bytearray(blob.read_bytes())
        data[-5] ^= 0x01  # ISIZE: only a reader going to the end of the stream sees it
        blob.chmod(0o644)
        blob.write_bytes(bytes(data))
        expect_error(box.install(), 4, "not the verified archive", str(box.store))
        assert not blob.exists()
        assert box.install().code == 0
        box.finish()

    def test_a_planted_symlink_in_place_of_the_blob_is_not_followed(self, box: Sandbox) -> None:
        assert box.fetch().code == 0
        blob = box.blob(_tarball(box))
        good = blob.read_bytes()
        box.victim.chmod(0o644)
        blob.unlink()
        (box.sentinel / "copy.tar.gz").write_bytes(good)
        box.before = snapshot(box.sentinel)
        blob.symlink_to(box.sentinel / "copy.tar.gz")
        result = box.install()
        # the symlink is not a blob: the build is fetched again (no traceback, no follow)
        assert result.code == 0, result.err
        assert not blob.is_symlink()
        box.finish()

    def test_the_install_database_records_what_was_verified(self, box: Sandbox) -> None:
        assert box.install().code == 0
        db = json.loads((box.root / ".cacheclient" / "installed.json").read_text())
        rec = db["installs"][TOOL_HASH]
        assert rec["verified"]["tarball_sha256"] == rec["tarball_sha256"]
        assert rec["verified"]["tarball_bytes"] > 0
        assert "gzip" in rec["verified"]["checked"]
        assert rec["verified"]["signer"]
        box.finish()


class TestSpecBlobChangedInTheStore:
    def _tamper(self, box: Sandbox) -> str:
        checksum = str(build_record(box.store)["spec_blob"]["checksum"])
        blob = box.blob(checksum)
        blob.chmod(0o644)
        spec = json.loads(gzip.decompress(blob.read_bytes()) if blob.read_bytes()[:2] == b"\x1f\x8b"
                          else blob.read_bytes())  # fmt: skip
        spec["spec"]["nodes"][0]["version"] = "6.6.6"
        blob.write_bytes(json.dumps(spec).encode())
        return checksum

    def test_offline_it_is_exit_4_naming_the_blob_and_removed(self, box: Sandbox) -> None:
        assert box.fetch().code == 0
        checksum = self._tamper(box)
        expect_error(box.install("--offline"), 4, checksum, str(box.store))
        assert not box.blob(checksum).exists()
        assert box.install().code == 0  # online: fetched again
        box.finish()

    def test_online_it_is_fetched_again(self, box: Sandbox) -> None:
        assert box.fetch().code == 0
        checksum = self._tamper(box)
        result = box.install()
        assert result.code == 0, result.err
        assert box.blob(checksum).is_file()
        box.finish()
