"""The ELF reader/patcher: real binaries from the fixtures and synthesised ELF32/64, LE/BE."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cacheclient.errors import InstallError, RelocationError
from cacheclient.installation.elf import DT_RPATH, DT_RUNPATH, is_elf, parse_elf, write_string
from paths import SPACK_V3, SPACK_V3_SIGNED

EXPECTED = json.loads((SPACK_V3 / "signed.expected.json").read_text())
ELF_MEMBERS: list[tuple[dict[str, Any], str]] = [
    (spec, f["path"]) for spec in EXPECTED["specs"] for f in spec["files"] if f.get("elf")
]


def _member_bytes(spec: dict[str, Any], rel: str) -> bytes:
    with tarfile.open(SPACK_V3_SIGNED / spec["tarball"]["path"]) as tar:
        f = tar.extractfile(spec["old_prefix"].lstrip("/") + "/" + rel)
        assert f is not None
        return f.read()


def _readelf(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["readelf", "-d", "-W", str(path)], capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for kind in ("runpath", "rpath"):
        m = re.search(rf"Library {kind}: \[(.*)\]", out)
        if m:
            found[kind] = m.group(1)
    return found


def make_elf(
    *,
    bits: int,
    little: bool,
    rpath: bytes | None,
    tag: int = DT_RUNPATH,
    interp: bytes | None = b"/lib/ld.so",
    needed: tuple[bytes, ...] = (b"libc.so.6",),
) -> bytes:
    """A minimal, well-formed ELF shared object with one PT_LOAD covering the whole file."""
    e = "<" if little else ">"
    word = "Q" if bits == 64 else "I"
    ehsize, phentsize, phnum = (64, 56, 3) if bits == 64 else (52, 32, 3)
    base = 0x400000
    off = ehsize + phnum * phentsize
    interp_off = off
    interp_blob = (interp + b"\0") if interp is not None else b""
    off += len(interp_blob)
    strings = [*needed, *([rpath] if rpath is not None else [])]
    dynstr = b"\0"
    offsets = []
    for s in strings:
        offsets.append(len(dynstr))
        dynstr += s + b"\0"
    strtab_off = off
    off += len(dynstr)
    pad = (-off) % 8
    off += pad
    dyn_off = off
    entries = [(1, o) for o in offsets[: len(needed)]]
    if rpath is not None:
        entries.append((tag, offsets[-1]))
    entries += [(5, base + strtab_off), (10, len(dynstr)), (0, 0)]
    dyn_fmt = e + ("qQ" if bits == 64 else "iI")
    dynamic = b"".join(struct.pack(dyn_fmt, t, v) for t, v in entries)
    total = dyn_off + len(dynamic)
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if little else 2, 1]) + bytes(9)
    ehdr = ident + struct.pack(
        e + f"HHI{word}{word}{word}IHHHHHH", 3, 62, 1, 0, ehsize, 0, 0, ehsize, phentsize,
        phnum, 0, 0, 0,
    )  # fmt: skip

    def phdr(p_type: int, offset: int, size: int, flags: int = 4) -> bytes:
        if bits == 64:
            return struct.pack(e + "IIQQQQQQ", p_type, flags, offset, base + offset,
                               base + offset, size, size, 8)  # fmt: skip
        return struct.pack(e + "IIIIIIII", p_type, offset, base + offset, base + offset,
                           size, size, flags, 8)  # fmt: skip

    phdrs = phdr(1, 0, total, 5) + phdr(2, dyn_off, len(dynamic), 6)
    phdrs += phdr(3, interp_off, len(interp_blob)) if interp is not None else phdr(4, 0, 0)
    data = ehdr + phdrs + interp_blob + dynstr + bytes(pad) + dynamic
    assert len(data) == total
    return data


class TestFixtureBinaries:
    @pytest.mark.parametrize(
        ("spec", "rel"), ELF_MEMBERS, ids=lambda v: v if isinstance(v, str) else v["dag_hash"][:7]
    )
    def test_matches_readelf(self, spec: dict[str, Any], rel: str, tmp_path: Path) -> None:
        data = _member_bytes(spec, rel)
        path = tmp_path / "bin"
        path.write_bytes(data)
        elf = parse_elf(data, str(path))
        assert elf is not None
        assert elf.bits == 64
        assert elf.little_endian
        assert elf.machine == 62
        want = _readelf(path)
        got_runpath = elf.runpath.value.decode() if elf.runpath else None
        assert got_runpath == want.get("runpath")
        assert elf.rpath is None
        assert "rpath" not in want
        if rel.startswith("bin/"):
            assert elf.interpreter is not None
            assert elf.interpreter.value == b"/lib64/ld-linux-x86-64.so.2"
        else:
            assert elf.soname is not None

    def test_in_place_rewrite_is_seen_by_readelf(self, tmp_path: Path) -> None:
        spec = next(s for s in EXPECTED["specs"] if s["dag_hash"].startswith("vwaicym"))
        data = bytearray(_member_bytes(spec, "bin/demo-tool"))
        elf = parse_elf(bytes(data), "demo-tool")
        assert elf is not None
        assert elf.runpath is not None
        write_string(data, elf.runpath, b"/short/lib:$ORIGIN/../lib", "demo-tool")
        path = tmp_path / "demo-tool"
        path.write_bytes(bytes(data))
        assert len(data) == len(_member_bytes(spec, "bin/demo-tool"))
        assert _readelf(path) == {"runpath": "/short/lib:$ORIGIN/../lib"}


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("little", [True, False], ids=["le", "be"])
class TestSynthesised:
    @pytest.mark.parametrize("tag", [DT_RPATH, DT_RUNPATH], ids=["rpath", "runpath"])
    def test_parse_and_rewrite(self, bits: int, little: bool, tag: int, tmp_path: Path) -> None:
        old = b"/very/long/old/prefix/lib:/other/lib"
        data = make_elf(bits=bits, little=little, rpath=old, tag=tag)
        elf = parse_elf(data, "x")
        assert elf is not None
        assert (elf.bits, elf.little_endian) == (bits, little)
        assert [s.value for s in elf.rpaths] == [old]
        assert elf.rpaths[0].tag == tag
        assert [n.value for n in elf.needed] == [b"libc.so.6"]
        assert elf.interpreter is not None
        assert elf.interpreter.value == b"/lib/ld.so"
        buf = bytearray(data)
        write_string(buf, elf.rpaths[0], b"/new/lib", "x")
        again = parse_elf(bytes(buf), "x")
        assert again is not None
        assert [s.value for s in again.rpaths] == [b"/new/lib"]
        assert len(buf) == len(data)
        path = tmp_path / "lib.so"
        path.write_bytes(bytes(buf))
        assert _readelf(path) == {"runpath" if tag == DT_RUNPATH else "rpath": "/new/lib"}

    def test_growing_is_refused(self, bits: int, little: bool) -> None:
        data = make_elf(bits=bits, little=little, rpath=b"/a/lib")
        elf = parse_elf(data, "x")
        assert elf is not None
        with pytest.raises(RelocationError, match="longer than the 6 available"):
            write_string(bytearray(data), elf.rpaths[0], b"/abc/lib", "x")

    def test_no_rpath_no_interp(self, bits: int, little: bool) -> None:
        elf = parse_elf(make_elf(bits=bits, little=little, rpath=None, interp=None), "x")
        assert elf is not None
        assert elf.rpaths == ()
        assert elf.interpreter is None


class TestMalformed:
    def test_not_elf(self) -> None:
        assert parse_elf(b"#!/bin/sh\n", "script") is None
        assert not is_elf(b"\x7fEL")

    @pytest.mark.parametrize(
        ("mutate", "words"),
        [
            (lambda d: d[:40], "truncated"),
            (lambda d: d[:4] + b"\x07" + d[5:], "bad class"),
            (lambda d: d[:300], "past the end"),
        ],
        ids=["truncated-header", "bad-class", "truncated-body"],
    )
    def test_broken_files_raise_install_error(self, mutate: Any, words: str) -> None:
        data = make_elf(bits=64, little=True, rpath=b"/x" * 200)
        with pytest.raises(InstallError, match=words) as err:
            parse_elf(mutate(data), "lib/broken.so")
        assert "lib/broken.so" in str(err.value)

    def test_string_offset_outside_table(self) -> None:
        data = bytearray(make_elf(bits=64, little=True, rpath=b"/r"))
        elf = parse_elf(bytes(data), "x")
        assert elf is not None
        # point DT_RUNPATH's value (an offset into the string table) far past DT_STRSZ
        idx = bytes(data).find(struct.pack("<q", DT_RUNPATH))
        struct.pack_into("<Q", data, idx + 8, 10_000)
        with pytest.raises(InstallError, match="outside the string table"):
            parse_elf(bytes(data), "x")
