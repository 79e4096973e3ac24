"""Safe extraction of real Spack-written archives (spack-v3 fixtures and Spack's v2 mirrors)."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cacheclient.errors import InstallError, UnsafeArchiveError
from cacheclient.installation.extract import ExtractLimits, extract_prefix
from paths import SPACK_V3, SPACK_V3_SIGNED, V2_MIRRORS

EXPECTED = json.loads((SPACK_V3 / "signed.expected.json").read_text())
SPECS: list[dict[str, Any]] = EXPECTED["specs"]
V2_TARBALLS = sorted(V2_MIRRORS.rglob("*.spack"))


def _id(spec: dict[str, Any]) -> str:
    return f"{spec['name']}-{spec['version']}-{spec['dag_hash'][:7]}"


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


class TestSpackV3Archives:
    @pytest.mark.parametrize("spec", SPECS, ids=_id)
    def test_tree_matches_expected(
        self, spec: dict[str, Any], tmp_path: Path, umask_022: None
    ) -> None:
        dest = tmp_path / "prefix"
        result = extract_prefix(
            SPACK_V3_SIGNED / spec["tarball"]["path"], dest, expected_hash=spec["dag_hash"]
        )
        assert result.old_prefix == spec["old_prefix"]
        assert result.path == dest
        assert sorted(os.listdir(tmp_path)) == ["prefix"]  # no work directory left behind
        files = {f["path"]: f for f in spec["files"]}
        assert set(result.entries) == set(files)
        for rel, want in files.items():
            entry = result.entries[rel]
            path = dest / rel
            st = path.lstat()
            if want["type"] == "dir":
                assert entry.kind == "dir"
                assert stat.S_ISDIR(st.st_mode)
                assert stat.S_IMODE(st.st_mode) == 0o755
            elif want["type"] == "symlink":
                assert entry.kind == "symlink"
                assert os.readlink(path) == want["target"] == entry.target
            else:
                assert entry.kind == "file"
                assert stat.S_ISREG(st.st_mode)
                assert st.st_size == want["size"]
                assert stat.S_IMODE(st.st_mode) == int(want["mode"], 8)
        bi = spec["buildinfo"]
        assert result.buildinfo.relocate_textfiles == tuple(bi["relocate_textfiles"])
        assert result.buildinfo.relocate_binaries == tuple(bi["relocate_binaries"])
        assert dict(result.buildinfo.hash_to_prefix) == bi["hash_to_prefix"]
        assert result.buildinfo.sbang_install_path == bi["sbang_install_path"]

    def test_umask_applies_to_modes(self, tmp_path: Path) -> None:
        spec = next(s for s in SPECS if s["name"] == "demo-tool")
        old = os.umask(0o077)
        try:
            extract_prefix(SPACK_V3_SIGNED / spec["tarball"]["path"], tmp_path / "p")
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / "p" / "bin" / "demo-tool").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "p" / "etc" / "demo-tool.conf").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "p" / "bin").stat().st_mode) == 0o700

    def test_wrong_expected_hash_is_refused(self, tmp_path: Path) -> None:
        spec = SPECS[0]
        with pytest.raises(UnsafeArchiveError, match="binary_distribution") as err:
            extract_prefix(
                SPACK_V3_SIGNED / spec["tarball"]["path"],
                tmp_path / "p",
                expected_hash="a" * 32,
            )
        assert err.value.exit_code == 6
        assert os.listdir(tmp_path) == []

    def test_destination_must_not_exist(self, tmp_path: Path) -> None:
        (tmp_path / "p").mkdir()
        with pytest.raises(InstallError, match="already exists"):
            extract_prefix(SPACK_V3_SIGNED / SPECS[0]["tarball"]["path"], tmp_path / "p")

    def test_missing_tarball(self, tmp_path: Path) -> None:
        with pytest.raises(InstallError, match="cannot read archive"):
            extract_prefix(tmp_path / "nope.tar.gz", tmp_path / "p")


class TestV2Archives:
    @pytest.mark.parametrize("tarball", V2_TARBALLS, ids=lambda p: p.name[-40:])
    def test_extracts_with_its_prefix(self, tarball: Path, tmp_path: Path) -> None:
        result = extract_prefix(tarball, tmp_path / "p")
        info = result.buildinfo
        assert info.buildpath is not None
        assert result.old_prefix == f"{info.buildpath}/{info.relative_prefix}"
        assert result.old_prefix in info.hash_to_prefix.values()
        assert (tmp_path / "p" / ".spack" / "binary_distribution").is_file()
        assert ".spack/spec.json" in result.entries


def _repack(src: Path, dest: Path, keep: Any) -> None:
    """Copy a tarball keeping only the members *keep(info)* accepts."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dest, "w:gz") as tout:
        for info in tin.getmembers():
            if keep(info):
                data = tin.extractfile(info) if info.isreg() else None
                tout.addfile(info, io.BytesIO(data.read()) if data else None)


class TestOldAndUnusualArchives:
    def test_archive_without_parent_directory_entries(self, tmp_path: Path) -> None:
        # Layout-1 archives (Spack <= 0.21) have no directory members at all.
        spec = next(s for s in SPECS if s["name"] == "demo-zlib")
        old = tmp_path / "old.tar.gz"
        _repack(SPACK_V3_SIGNED / spec["tarball"]["path"], old, lambda i: not i.isdir())
        result = extract_prefix(old, tmp_path / "p", expected_hash=spec["dag_hash"])
        assert result.old_prefix == spec["old_prefix"]
        assert (tmp_path / "p" / "share" / "demo-zlib" / "nested" / "a" / "b" / "c").is_dir()

    def test_hardlinks_stay_hardlinks(self, tmp_path: Path) -> None:
        prefix = "opt/root/pkg-1.0-" + "a" * 32
        tar_path = tmp_path / "h.tar.gz"
        bi = (
            "{buildpath: /opt/root, relative_prefix: pkg-1.0-" + "a" * 32 + ", "
            "hash_to_prefix: {" + "a" * 32 + ": /" + prefix + "}}"
        ).encode()
        with tarfile.open(tar_path, "w:gz") as tar:
            for name, data in ((f"{prefix}/lib/one", b"content\n"), (f"{prefix}/.spack/x", b"")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            link = tarfile.TarInfo(f"{prefix}/lib/two")
            link.type = tarfile.LNKTYPE
            link.linkname = f"{prefix}/lib/one"
            tar.addfile(link)
            info = tarfile.TarInfo(f"{prefix}/.spack/binary_distribution")
            info.size = len(bi)
            tar.addfile(info, io.BytesIO(bi))
        result = extract_prefix(tar_path, tmp_path / "p")
        one, two = tmp_path / "p" / "lib" / "one", tmp_path / "p" / "lib" / "two"
        assert one.stat().st_ino == two.stat().st_ino
        assert one.stat().st_nlink == 2
        assert result.entries["lib/two"].kind == "hardlink"
        assert result.entries["lib/two"].target == "lib/one"

    @pytest.mark.parametrize(
        ("prefix", "first"),
        [
            ("home/u/.spack/opt/pkg-1.0-" + "a" * 32, None),  # install tree inside ~/.spack
            ("opt/root/pkg-1.0-" + "a" * 32, "bin/early"),  # a file before .spack
            ("opt/root/pkg-1.0-" + "a" * 32, "share/a/b/"),  # directories before .spack
        ],
        ids=["tree-under-dot-spack", "file-first", "dirs-first-deepest-first"],
    )
    def test_unusual_order_and_names_still_extract(
        self, prefix: str, first: str | None, tmp_path: Path
    ) -> None:
        tar_path = tmp_path / "u.tar.gz"
        bi = (
            "{hash_to_prefix: {" + "a" * 32 + ": /" + prefix + "}, relocate_textfiles: []}"
        ).encode()
        members = [(f"{prefix}/{first}", b"early\n")] if first else []
        members += [(f"{prefix}/.spack/binary_distribution", bi), (f"{prefix}/lib/x", b"x")]
        with tarfile.open(tar_path, "w:gz") as tar:
            parts = prefix.split("/")
            dirs = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if first and first.endswith("/"):  # deepest directory first, then its parents
                dirs += [f"{prefix}/share/a/b", f"{prefix}/share/a", f"{prefix}/share"]
                members = members[1:]
            for name in dirs:
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        result = extract_prefix(tar_path, tmp_path / "p", expected_hash="a" * 32)
        assert result.old_prefix == "/" + prefix
        assert (tmp_path / "p" / "lib" / "x").read_bytes() == b"x"
        assert sorted(os.listdir(tmp_path)) == ["p", "u.tar.gz"]
        if first:
            assert (tmp_path / "p" / first).exists()

    def test_corrupt_gzip_is_refused_cleanly(self, tmp_path: Path) -> None:
        data = (SPACK_V3_SIGNED / SPECS[0]["tarball"]["path"]).read_bytes()
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(data[: len(data) // 2])
        (tmp_path / "out").mkdir()
        with pytest.raises(UnsafeArchiveError, match=r"not a valid tar\.gz"):
            extract_prefix(bad, tmp_path / "out" / "p")
        assert os.listdir(tmp_path / "out") == []

    def test_limits_are_configurable(self, tmp_path: Path) -> None:
        spec = next(s for s in SPECS if s["name"] == "demo-zlib")
        with pytest.raises(UnsafeArchiveError, match="deeper than 5"):
            extract_prefix(
                SPACK_V3_SIGNED / spec["tarball"]["path"],
                tmp_path / "p",
                limits=ExtractLimits(max_depth=5),
            )
        assert os.listdir(tmp_path) == []
