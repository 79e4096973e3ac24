"""A minimal ELF reader/patcher: the program interpreter and ``DT_RPATH``/``DT_RUNPATH``.

Supports ELF32 and ELF64, little and big endian. Only what relocation needs is parsed: the
program headers (``PT_LOAD`` to map addresses to file offsets, ``PT_INTERP``,
``PT_DYNAMIC``), the dynamic section and the strings it points to in the dynamic string
table. Strings are rewritten *in place* when the new value is not longer than the old one
(the rest is filled with NUL bytes); growing a string needs ``patchelf``
(see :mod:`cacheclient.installation.relocate`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cacheclient.errors import InstallError, RelocationError

__all__ = [
    "DT_RPATH",
    "DT_RUNPATH",
    "ElfFile",
    "ElfString",
    "is_elf",
    "parse_elf",
    "write_string",
]


def __dir__() -> list[str]:
    return __all__


ELF_MAGIC = b"\x7fELF"
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
_MAX_DYN = 1 << 16


@dataclass(frozen=True, kw_only=True, slots=True)
class ElfString:
    """A NUL-terminated string at file ``offset``; ``value`` excludes the NUL."""

    offset: int
    value: bytes
    tag: int = 0
    """The ``DT_*`` tag of a dynamic string; 0 for the interpreter."""

    @property
    def end(self) -> int:
        return self.offset + len(self.value)


@dataclass(frozen=True, kw_only=True, slots=True)
class ElfFile:
    """What relocation needs to know about one ELF file."""

    bits: int
    little_endian: bool
    machine: int
    interpreter: ElfString | None = None
    rpaths: tuple[ElfString, ...] = ()
    needed: tuple[ElfString, ...] = ()
    soname: ElfString | None = None

    @property
    def runpath(self) -> ElfString | None:
        return next((s for s in self.rpaths if s.tag == DT_RUNPATH), None)

    @property
    def rpath(self) -> ElfString | None:
        return next((s for s in self.rpaths if s.tag == DT_RPATH), None)


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


class _Reader:
    def __init__(self, data: bytes, source: str, little: bool) -> None:
        self.data = data
        self.source = source
        self.end = "<" if little else ">"

    def fail(self, problem: str) -> InstallError:
        return InstallError(f"{self.source}: malformed ELF file: {problem}")

    def unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        size = struct.calcsize(self.end + fmt)
        if offset < 0 or offset + size > len(self.data):
            raise self.fail(f"structure at offset {offset} runs past the end of the file")
        return struct.unpack_from(self.end + fmt, self.data, offset)

    def cstring(self, offset: int, limit: int) -> bytes:
        if offset < 0 or offset >= min(limit, len(self.data)):
            raise self.fail(f"string offset {offset} outside the string table")
        stop = self.data.find(b"\0", offset, min(limit, len(self.data)))
        if stop < 0:
            raise self.fail(f"unterminated string at offset {offset}")
        return self.data[offset:stop]


def parse_elf(data: bytes, source: str) -> ElfFile | None:
    """Parse *data*; ``None`` when it is not ELF, :class:`InstallError` when it is broken."""
    if not is_elf(data):
        return None
    if len(data) < 52:
        raise InstallError(f"{source}: malformed ELF file: truncated header")
    klass, encoding = data[4], data[5]
    if klass not in (1, 2) or encoding not in (1, 2):
        raise InstallError(f"{source}: malformed ELF file: bad class/encoding {klass}/{encoding}")
    r = _Reader(data, source, little=encoding == 1)
    bits = 32 if klass == 1 else 64
    if bits == 64:
        (machine,) = r.unpack("H", 18)
        (phoff,) = r.unpack("Q", 32)
        phentsize, phnum = r.unpack("HH", 54)
        ph_fmt, dyn_fmt = "IIQQQQQQ", "qQ"
    else:
        (machine,) = r.unpack("H", 18)
        (phoff,) = r.unpack("I", 28)
        phentsize, phnum = r.unpack("HH", 42)
        ph_fmt, dyn_fmt = "IIIIIIII", "iI"
    ph_size = struct.calcsize(r.end + ph_fmt)
    if phnum and phentsize < ph_size:
        raise r.fail(f"program header entry size {phentsize} too small")
    loads: list[tuple[int, int, int]] = []  # (vaddr, filesz, offset)
    dynamic: tuple[int, int] | None = None
    interp: ElfString | None = None
    for i in range(phnum):
        fields = r.unpack(ph_fmt, phoff + i * phentsize)
        if bits == 64:
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = fields[:6]
        else:
            p_type, p_offset, p_vaddr, _paddr, p_filesz = fields[:5]
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == PT_INTERP:
            value = r.cstring(p_offset, p_offset + p_filesz)
            interp = ElfString(offset=p_offset, value=value)
    if dynamic is None:
        return ElfFile(bits=bits, little_endian=r.end == "<", machine=machine, interpreter=interp)

    def to_offset(vaddr: int) -> int:
        for start, size, offset in loads:
            if start <= vaddr < start + size:
                return vaddr - start + offset
        raise r.fail(f"address {vaddr:#x} is not in any loaded segment")

    dyn_off, dyn_size = dynamic
    entry = struct.calcsize(r.end + dyn_fmt)
    tags: list[tuple[int, int]] = []
    for i in range(min(dyn_size // entry, _MAX_DYN)):
        tag, val = r.unpack(dyn_fmt, dyn_off + i * entry)
        if tag == DT_NULL:
            break
        tags.append((tag, val))
    strtab = next((v for t, v in tags if t == DT_STRTAB), None)
    strsz = next((v for t, v in tags if t == DT_STRSZ), None)
    wanted = [(t, v) for t, v in tags if t in (DT_RPATH, DT_RUNPATH, DT_NEEDED, DT_SONAME)]
    if strtab is None:
        if wanted:
            raise r.fail("dynamic section has strings but no DT_STRTAB")
        return ElfFile(bits=bits, little_endian=r.end == "<", machine=machine, interpreter=interp)
    str_off = to_offset(strtab)
    limit = str_off + strsz if strsz is not None else len(data)
    strings = [
        ElfString(offset=str_off + v, value=r.cstring(str_off + v, limit), tag=t) for t, v in wanted
    ]
    return ElfFile(
        bits=bits,
        little_endian=r.end == "<",
        machine=machine,
        interpreter=interp,
        rpaths=tuple(s for s in strings if s.tag in (DT_RPATH, DT_RUNPATH)),
        needed=tuple(s for s in strings if s.tag == DT_NEEDED),
        soname=next((s for s in strings if s.tag == DT_SONAME), None),
    )


def write_string(data: bytearray, string: ElfString, new: bytes, source: str) -> None:
    """Overwrite *string* in *data* with *new*, NUL-padded; refuses to grow it."""
    if len(new) > len(string.value):
        raise RelocationError(
            f"{source}: new value {new.decode(errors='replace')!r} is {len(new)} bytes, "
            f"longer than the {len(string.value)} available in place"
        )
    if b"\0" in new:
        raise RelocationError(f"{source}: new value contains a NUL byte")
    data[string.offset : string.end] = new + b"\0" * (len(string.value) - len(new))
