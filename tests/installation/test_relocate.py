"""Relocation: the prefix map, text and binary replacement, and whole fixture prefixes."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cacheclient.errors import RelocationError
from cacheclient.installation.buildinfo import BuildInfo
from cacheclient.installation.elf import parse_elf
from cacheclient.installation.extract import extract_prefix
from cacheclient.installation.relocate import (
    build_prefix_map,
    map_path,
    relocate_prefix,
    replace_binary,
    replace_text,
)
from paths import SPACK_V3, SPACK_V3_SIGNED

EXPECTED = json.loads((SPACK_V3 / "signed.expected.json").read_text())
SPECS: dict[str, dict[str, Any]] = {s["dag_hash"]: s for s in EXPECTED["specs"]}
PLACEHOLDER = b"__spack_path_placeholder__"

OLD = "/old/root/pkg-1.0-aaaa"
MAP = ((OLD, "/new/pkg"), ("/old/root", "/new"))


class TestPrefixMap:
    def test_order_sbang_deps_root_and_identity_dropped(self) -> None:
        info = BuildInfo(
            buildpath="/b",
            relative_prefix="x/self",
            sbang_install_path="/s/bin/sbang",
            hash_to_prefix={"h1": "/b/x/self", "h2": "/b/x/dep", "h3": "/b/x/external"},
        )
        mapping = build_prefix_map(
            info,
            new_prefixes={"h1": "/n/self", "h2": "/b/x/dep"},
            new_root="/n",
            new_sbang="/n/bin/sbang",
        )
        assert mapping == (("/s/bin/sbang", "/n/bin/sbang"), ("/b/x/self", "/n/self"), ("/b", "/n"))

    def test_same_root_needs_nothing(self) -> None:
        info = BuildInfo(buildpath="/b", relative_prefix="p", sbang_install_path="/b/bin/sbang",
                         hash_to_prefix={"h": "/b/p"})  # fmt: skip
        assert (
            build_prefix_map(
                info, new_prefixes={"h": "/b/p"}, new_root="/b", new_sbang="/b/bin/sbang"
            )
            == ()
        )

    @pytest.mark.parametrize(
        ("path", "want"),
        [
            (OLD, "/new/pkg"),
            (OLD + "/lib", "/new/pkg/lib"),
            (OLD + "x/lib", "/new/pkg-1.0-aaaax/lib"),  # falls back to the root pair
            ("/old/rootx", "/old/rootx"),
            ("/elsewhere/lib", "/elsewhere/lib"),
        ],
    )
    def test_map_path_whole_components(self, path: str, want: str) -> None:
        assert map_path(path, MAP) == want


class TestReplaceText:
    @pytest.mark.parametrize(
        ("text", "want"),
        [
            (f"prefix={OLD}\n", "prefix=/new/pkg\n"),
            (f"-L{OLD}/lib -I{OLD}/include", "-L/new/pkg/lib -I/new/pkg/include"),
            (f"#!{OLD}/bin/python", "#!/new/pkg/bin/python"),
            (f"PATH={OLD}/bin:/old/root/other/bin", "PATH=/new/pkg/bin:/new/other/bin"),
            (f"installed in {OLD}.", "installed in /new/pkg."),
            (f"'{OLD}'", "'/new/pkg'"),
            (f"/x{OLD}/lib", f"/x{OLD}/lib"),  # part of a longer path: left alone
            (f"{OLD}d/lib", "/new/pkg-1.0-aaaad/lib"),  # not this prefix; the root still maps
            (f"{OLD}.d", "/new/pkg-1.0-aaaa.d"),
            ("/old/rootless", "/old/rootless"),
            ("nothing here", "nothing here"),
        ],
    )
    def test_boundaries(self, text: str, want: str) -> None:
        assert replace_text(text.encode(), MAP) == want.encode()

    def test_specific_prefix_beats_root_whatever_the_order_in_text(self) -> None:
        text = f"/old/root/a {OLD}/b".encode()
        assert replace_text(text, MAP) == b"/new/a /new/pkg/b"

    def test_non_utf8_bytes_survive(self) -> None:
        data = b"\xff\xfe" + OLD.encode() + b"\x00\xff"
        assert replace_text(data, MAP) == b"\xff\xfe/new/pkg\x00\xff"


class TestReplaceBinary:
    def test_c_string_is_shortened_with_nuls(self) -> None:
        data = b"\x00" + OLD.encode() + b"/lib\x00tail"
        new, count = replace_binary(data, MAP, source="f")
        assert count == 1
        assert len(new) == len(data)
        assert new == b"\x00/new/pkg/lib" + b"\x00" * (len(OLD) - len("/new/pkg") + 1) + b"tail"

    def test_long_suffix_is_left_padded_with_slashes(self) -> None:
        data = OLD.encode() + b"/share/long/name\x00"
        new, _ = replace_binary(data, MAP, source="f")
        pad = len(OLD) - len("/new/pkg")
        assert new == b"/" * pad + b"/new/pkg/share/long/name\x00"
        assert len(new) == len(data)

    def test_growing_is_an_error(self) -> None:
        mapping = (("/o", "/much/longer"),)
        with pytest.raises(RelocationError, match="install into a shorter root") as err:
            replace_binary(b"x\x00/o/lib\x00", mapping, source="lib/x.so")
        assert err.value.exit_code == 9
        assert "lib/x.so" in str(err.value)

    def test_skip_ranges_are_left_alone(self) -> None:
        data = OLD.encode() + b"\x00" + OLD.encode() + b"\x00"
        new, count = replace_binary(data, MAP, source="f", skip=[(0, len(OLD))])
        assert count == 1
        assert new.startswith(OLD.encode() + b"\x00/new/pkg\x00")

    def test_boundary_respected(self) -> None:
        data = b"/old/rootless\x00"
        assert replace_binary(data, MAP, source="f") == (data, 0)


def _extract(spec: dict[str, Any], dest: Path) -> Any:
    return extract_prefix(
        SPACK_V3_SIGNED / spec["tarball"]["path"], dest, expected_hash=spec["dag_hash"]
    )


def _map_for(spec: dict[str, Any], new_root: str) -> Any:
    bi = spec["buildinfo"]
    new = {
        h: f"{new_root}/{p[len(bi['buildpath']) + 1 :]}" for h, p in bi["hash_to_prefix"].items()
    }
    info = BuildInfo(
        buildpath=bi["buildpath"],
        relative_prefix=bi["relative_prefix"],
        sbang_install_path=bi["sbang_install_path"],
        hash_to_prefix=bi["hash_to_prefix"],
    )
    return build_prefix_map(info, new_prefixes=new, new_root=new_root,
                            new_sbang=f"{new_root}/bin/sbang")  # fmt: skip


class TestFixturePrefixes:
    @pytest.mark.parametrize(
        "dag_hash", sorted(SPECS), ids=lambda h: SPECS[h]["name"] + "-" + h[:7]
    )
    def test_no_placeholder_left_in_relocated_files(self, dag_hash: str, tmp_path: Path) -> None:
        spec = SPECS[dag_hash]
        extracted = _extract(spec, tmp_path / "p")
        report = relocate_prefix(extracted, _map_for(spec, "/n"), new_sbang="/n/bin/sbang")
        bi = spec["buildinfo"]
        for rel in bi["relocate_textfiles"] + bi["relocate_binaries"]:
            assert PLACEHOLDER not in (tmp_path / "p" / rel).read_bytes(), rel
        for rel, entry in extracted.entries.items():
            if entry.kind == "symlink" and entry.target.startswith("/"):
                assert os.readlink(tmp_path / "p" / rel).startswith("/n/")
        assert report.text_files == len(bi["relocate_textfiles"])
        assert report.uses_sbang == any(
            (tmp_path / "p" / rel).read_bytes().startswith(b"#!/bin/sh /n/bin/sbang")
            for rel in bi["relocate_textfiles"]
        )

    def test_runpath_and_c_string_of_libdemoz(self, tmp_path: Path) -> None:
        spec = next(s for s in SPECS.values() if s["name"] == "demo-libfoo" and
                    s["version"] == "2.1.0")  # fmt: skip
        extracted = _extract(spec, tmp_path / "p")
        relocate_prefix(extracted, _map_for(spec, "/n"), patchelf=None)
        zspec = SPECS["4pnfv56zoqkyu4cep6uzu76sb73mlq2w"]
        zlib = _extract(zspec, tmp_path / "z")
        relocate_prefix(zlib, _map_for(zspec, "/n"), patchelf=None)
        new_prefix = "/n/" + zspec["buildinfo"]["relative_prefix"]
        data = (tmp_path / "z" / "lib" / "libdemoz.so.1").read_bytes()
        assert b"\0" + new_prefix.encode() + b"\0\0" in data  # shortened C string, NUL padded
        for rel in spec["buildinfo"]["relocate_binaries"]:
            path = tmp_path / "p" / rel
            elf = parse_elf(path.read_bytes(), rel)
            assert elf is not None
            for string in elf.rpaths:
                assert all(e.startswith(b"/n/linux-") for e in string.value.split(b":"))
            out = subprocess.run(
                ["readelf", "-d", str(path)], capture_output=True, text=True, check=True
            )
            assert "/n/linux-" in out.stdout

    def test_growing_runpath_without_patchelf_fails(self, tmp_path: Path) -> None:
        spec = next(s for s in SPECS.values() if s["name"] == "demo-tool")
        extracted = _extract(spec, tmp_path / "p")
        long_root = "/" + "x" * 300
        with pytest.raises(RelocationError, match="patchelf is not on PATH"):
            relocate_prefix(extracted, _map_for(spec, long_root), patchelf=None)

    def test_growing_runpath_with_patchelf(self, tmp_path: Path) -> None:
        patchelf = shutil.which("patchelf")
        assert patchelf is not None, "patchelf is a documented test dependency"
        spec = next(s for s in SPECS.values() if s["name"] == "demo-tool")
        extracted = _extract(spec, tmp_path / "p")
        long_root = "/" + "x" * 300
        report = relocate_prefix(extracted, _map_for(spec, long_root), patchelf=patchelf)
        assert report.patchelf == ["bin/demo-tool"]
        elf = parse_elf((tmp_path / "p" / "bin" / "demo-tool").read_bytes(), "demo-tool")
        assert elf is not None
        assert elf.runpath is not None
        assert elf.runpath.value.startswith(long_root.encode() + b"/linux-")
        assert PLACEHOLDER not in (tmp_path / "p" / "bin" / "demo-tool").read_bytes()


class TestElfInterpreter:
    def _archive(self, tmp_path: Path, interp: bytes) -> Path:
        from test_elf import make_elf

        prefix = OLD.lstrip("/")
        elf = make_elf(bits=64, little=True, rpath=f"{OLD}/lib".encode(), interp=interp)
        bi = (
            "{buildpath: /old/root, relative_prefix: pkg-1.0-aaaa, hash_to_prefix: "
            "{" + "a" * 32 + f": {OLD}" + "}, relocate_binaries: [bin/tool]}"
        ).encode()
        tar_path = tmp_path / "e.tar.gz"
        with tarfile.open(tar_path, "w:gz") as tar:
            members = ((f"{prefix}/bin/tool", elf, 0o755),
                       (f"{prefix}/.spack/binary_distribution", bi, 0o644))  # fmt: skip
            for name, data, mode in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = mode
                tar.addfile(info, io.BytesIO(data))
        return tar_path

    def test_interpreter_and_runpath_rewritten_in_place(self, tmp_path: Path) -> None:
        tar_path = self._archive(tmp_path, f"{OLD}/lib/ld.so".encode())
        extracted = extract_prefix(tar_path, tmp_path / "p")
        report = relocate_prefix(extracted, MAP, patchelf=None)
        elf = parse_elf((tmp_path / "p" / "bin" / "tool").read_bytes(), "tool")
        assert elf is not None
        assert elf.interpreter is not None
        assert elf.interpreter.value == b"/new/pkg/lib/ld.so"
        assert [s.value for s in elf.rpaths] == [b"/new/pkg/lib"]
        assert report.binaries == 1

    def test_growing_interpreter_without_patchelf_fails(self, tmp_path: Path) -> None:
        tar_path = self._archive(tmp_path, f"{OLD}/ld.so".encode())
        extracted = extract_prefix(tar_path, tmp_path / "p")
        mapping = ((OLD, "/a/much/longer/new/prefix/than/before"),)
        with pytest.raises(RelocationError, match="patchelf is not on PATH"):
            relocate_prefix(extracted, mapping, patchelf=None)


class TestHardlinkedText:
    def test_edit_in_place_keeps_inode_shared(self, tmp_path: Path) -> None:
        prefix = OLD.lstrip("/")
        bi = (
            "{buildpath: /old/root, relative_prefix: pkg-1.0-aaaa, hash_to_prefix: "
            "{" + "a" * 32 + f": {OLD}" + "}, relocate_textfiles: [etc/a.conf]}"
        ).encode()
        tar_path = tmp_path / "h.tar.gz"
        with tarfile.open(tar_path, "w:gz") as tar:
            text = f"root={OLD}\n".encode()
            info = tarfile.TarInfo(f"{prefix}/etc/a.conf")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
            link = tarfile.TarInfo(f"{prefix}/etc/b.conf")
            link.type = tarfile.LNKTYPE
            link.linkname = f"{prefix}/etc/a.conf"
            tar.addfile(link)
            info = tarfile.TarInfo(f"{prefix}/.spack/binary_distribution")
            info.size = len(bi)
            tar.addfile(info, io.BytesIO(bi))
        extracted = extract_prefix(tar_path, tmp_path / "p")
        report = relocate_prefix(extracted, MAP)
        a, b = tmp_path / "p" / "etc" / "a.conf", tmp_path / "p" / "etc" / "b.conf"
        assert report.text_files == 1
        assert a.read_text() == b.read_text() == "root=/new/pkg\n"
        assert a.stat().st_ino == b.stat().st_ino


_PIECES = st.sampled_from(
    [OLD, "/old/root", "/old/rootx", "/x", "-L", ":", "\0", "/", "a", ".", " "]
)


class TestProperties:
    @given(st.lists(_PIECES, max_size=12).map("".join))
    def test_binary_replacement_keeps_length_and_removes_old_prefixes(self, text: str) -> None:
        data = text.encode()
        new, _count = replace_binary(data, MAP, source="f")
        assert len(new) == len(data)
        assert replace_binary(new, MAP, source="f")[1] == 0  # idempotent: nothing left to map

    @given(st.text(alphabet="abc/-_.:= \n", max_size=40))
    def test_text_without_old_prefixes_is_unchanged(self, text: str) -> None:
        assert replace_text(text.encode(), MAP) == text.encode()

    @given(st.lists(_PIECES, max_size=12).map("".join))
    def test_text_replacement_is_idempotent(self, text: str) -> None:
        once = replace_text(text.encode(), MAP)
        assert replace_text(once, MAP) == once
