"""Relocation of an unpacked prefix to its new install root (FORMATS.md §6.4, §10.17-20).

* :func:`build_prefix_map` builds the ordered ``old -> new`` map: the old sbang path, then
  every old prefix in ``hash_to_prefix`` whose new prefix is known, then the old install
  root; identity pairs are dropped.
* :func:`replace_text` rewrites prefixes in text, respecting path boundaries.
* :func:`replace_binary` rewrites prefixes in binary data without changing its length:
  a shorter path is either a C string shortened with a NUL (when a NUL follows within a few
  bytes) or left-padded with ``/``; a longer one is a :class:`RelocationError`.
* :func:`relocate_prefix` applies all of it to an :class:`ExtractedPrefix`: listed text
  files, listed binaries (ELF interpreter and run paths first, in place or with
  ``patchelf`` when a run path must grow and ``patchelf`` is available), absolute symlinks.
  Files are edited in place, so hardlinked files keep sharing their inode, and only regular
  files recorded by the extractor are touched (never a path through a symlink).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cacheclient.errors import RelocationError
from cacheclient.installation.buildinfo import BuildInfo
from cacheclient.installation.elf import DT_RPATH, ElfString, parse_elf, write_string
from cacheclient.installation.extract import ExtractedPrefix
from cacheclient.installation.sbang import uses_sbang

__all__ = [
    "PrefixMap",
    "RelocationReport",
    "build_prefix_map",
    "map_path",
    "relocate_prefix",
    "replace_binary",
    "replace_text",
]


def __dir__() -> list[str]:
    return __all__


PrefixMap = tuple[tuple[str, str], ...]
"""Ordered ``(old, new)`` pairs: earlier (more specific) pairs win."""

_WORD = rb"A-Za-z0-9_\-"
# Right boundary: the old prefix must end a path component: not followed by a word
# character, nor by a dot that continues a name ("/p.d"); a sentence-ending dot is fine.
_RIGHT = rb"(?![" + _WORD + rb"])(?!\.[" + _WORD + rb"])"
_BINARY_WINDOW = 7


def build_prefix_map(
    info: BuildInfo,
    *,
    new_prefixes: Mapping[str, str],
    new_root: str,
    new_sbang: str,
) -> PrefixMap:
    """The ordered old->new map for one archive (FORMATS.md §6.4 step 1).

    *new_prefixes* maps DAG hashes to new prefixes; hashes of ``hash_to_prefix`` missing
    from it (e.g. externals) are left to the install-root fallback.
    """
    pairs: list[tuple[str, str]] = []
    if info.sbang_install_path:
        pairs.append((info.sbang_install_path, new_sbang))
    for dag_hash, old in info.hash_to_prefix.items():
        new = new_prefixes.get(dag_hash)
        if new is not None:
            pairs.append((old, new.rstrip("/") or "/"))
    if info.buildpath:
        pairs.append((info.buildpath, new_root.rstrip("/") or "/"))
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for old, new in pairs:
        if old == new or old in seen or old == "/":
            continue
        seen.add(old)
        out.append((old, new))
    return tuple(out)


def map_path(path: str, mapping: PrefixMap) -> str:
    """*path* with its first matching old prefix (whole components) replaced."""
    for old, new in mapping:
        if path == old or path.startswith(old + "/"):
            return new + path[len(old) :]
    return path


def _alternation(mapping: PrefixMap) -> bytes:
    return b"|".join(re.escape(old.encode()) for old, _ in mapping)


_text_cache: dict[PrefixMap, re.Pattern[bytes]] = {}
_binary_cache: dict[PrefixMap, re.Pattern[bytes]] = {}


def _text_pattern(mapping: PrefixMap) -> re.Pattern[bytes]:
    pattern = _text_cache.get(mapping)
    if pattern is None:
        # Left boundary as Spack's: the prefix may follow a run of word characters (as in
        # "-L/prefix") but that run must not itself continue a path ("/x/prefix").
        pattern = re.compile(
            rb"(?<!["
            + _WORD
            + rb"/])(["
            + _WORD
            + rb"]*?)("
            + _alternation(mapping)
            + rb")"
            + _RIGHT
        )
        _text_cache[mapping] = pattern
    return pattern


def _binary_pattern(mapping: PrefixMap) -> re.Pattern[bytes]:
    pattern = _binary_cache.get(mapping)
    if pattern is None:
        pattern = re.compile(
            rb"("
            + _alternation(mapping)
            + rb")"
            + _RIGHT
            + rb"([^\x00]{0,"
            + str(_BINARY_WINDOW).encode()
            + rb"}\x00)?"
        )
        _binary_cache[mapping] = pattern
    return pattern


def _lookup(mapping: PrefixMap) -> dict[bytes, bytes]:
    return {old.encode(): new.encode() for old, new in mapping}


def replace_text(data: bytes, mapping: PrefixMap) -> bytes:
    """Replace old prefixes in text; lengths may change."""
    if not mapping or not any(old.encode() in data for old, _ in mapping):
        return data
    table = _lookup(mapping)
    return _text_pattern(mapping).sub(lambda m: m.group(1) + table[m.group(2)], data)


def replace_binary(
    data: bytes,
    mapping: PrefixMap,
    *,
    source: str,
    skip: Sequence[tuple[int, int]] = (),
) -> tuple[bytes, int]:
    """Replace old prefixes in binary *data* without changing its length.

    Returns the new data and the number of replacements. Occurrences starting inside a
    ``skip`` range (byte offsets, end exclusive) are left alone.
    """
    if not mapping or not any(old.encode() in data for old, _ in mapping):
        return data, 0
    table = _lookup(mapping)
    count = 0

    def repl(m: re.Match[bytes]) -> bytes:
        nonlocal count
        if any(lo <= m.start() < hi for lo, hi in skip):
            return m.group(0)
        old, tail = m.group(1), m.group(2)
        new = table[old]
        delta = len(old) - len(new)
        if delta < 0:
            raise RelocationError(
                f"{source}: cannot relocate the string {old.decode(errors='replace')!r} at "
                f"offset {m.start()}: the new prefix {new.decode(errors='replace')!r} is "
                f"{-delta} bytes longer; install into a shorter root"
            )
        count += 1
        if tail is not None:  # a C string ending soon: shorten it and pad with NULs
            return new + tail + b"\0" * delta
        return b"/" * delta + new

    return _binary_pattern(mapping).sub(repl, data), count


@dataclass(kw_only=True, slots=True)
class RelocationReport:
    """What :func:`relocate_prefix` changed."""

    text_files: int = 0
    binaries: int = 0
    links: int = 0
    uses_sbang: bool = False
    patchelf: list[str] = field(default_factory=list)
    """Files rewritten with patchelf (their run path or interpreter had to grow)."""
    warnings: list[str] = field(default_factory=list)


def _regular_files(extracted: ExtractedPrefix, paths: Sequence[str]) -> list[str]:
    """The listed paths that are regular files (hardlinks resolved, each inode once)."""
    seen: set[str] = set()
    out: list[str] = []
    for rel in paths:
        entry = extracted.entries.get(rel)
        if entry is None:
            continue
        if entry.kind == "hardlink" and entry.target is not None:
            real = entry.target
        elif entry.kind == "file":
            real = rel
        else:
            continue
        if real not in seen:
            seen.add(real)
            out.append(real)
    return out


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _write_in_place(path: str, data: bytes) -> None:
    """Rewrite a file's content keeping its inode (hardlinks stay shared)."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_TRUNC)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _relocate_elf(
    data: bytearray,
    mapping: PrefixMap,
    source: str,
    patchelf: str | None,
) -> tuple[list[list[str]], list[tuple[int, int]]]:
    """Rewrite interpreter and run paths of an ELF file in *data*.

    Returns patchelf argument lists still to run (for strings that must grow) and the byte
    ranges of those strings, which the binary string pass must leave alone.
    """
    elf = parse_elf(bytes(data), source)
    if elf is None:
        return [], []
    commands: list[list[str]] = []
    skip: list[tuple[int, int]] = []

    def grow(string: ElfString, new: bytes, option: list[str]) -> None:
        if patchelf is None:
            raise RelocationError(
                f"{source}: the new value {new.decode(errors='replace')!r} is longer than "
                f"the {len(string.value)} bytes available in place and patchelf is not on "
                "PATH; install into a shorter root or install patchelf"
            )
        commands.append([*option, new.decode(errors="surrogateescape")])
        skip.append((string.offset, string.end))

    for string in elf.rpaths:
        entries = string.value.split(b":")
        new_entries = [
            map_path(e.decode(errors="surrogateescape"), mapping).encode(errors="surrogateescape")
            for e in entries
        ]
        new = b":".join(new_entries)
        if new == string.value:
            continue
        if len(new) <= len(string.value):
            write_string(data, string, new, source)
        else:
            force = ["--force-rpath"] if string.tag == DT_RPATH else []
            grow(string, new, [*force, "--set-rpath"])
    if elf.interpreter is not None:
        old_interp = elf.interpreter.value.decode(errors="surrogateescape")
        new_interp = map_path(old_interp, mapping).encode(errors="surrogateescape")
        if new_interp != elf.interpreter.value:
            if len(new_interp) <= len(elf.interpreter.value):
                write_string(data, elf.interpreter, new_interp, source)
            else:
                grow(elf.interpreter, new_interp, ["--set-interpreter"])
    return commands, skip


def _run_patchelf(patchelf: str, path: str, commands: list[list[str]]) -> None:
    for args in commands:
        proc = subprocess.run([patchelf, *args, path], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise RelocationError(
                f"{path}: patchelf {' '.join(args[:-1])} failed: "
                f"{detail[-1] if detail else proc.returncode}"
            )


def find_patchelf() -> str | None:
    return shutil.which("patchelf")


def relocate_prefix(
    extracted: ExtractedPrefix,
    mapping: PrefixMap,
    *,
    new_sbang: str | None = None,
    patchelf: str | Callable[[], str | None] | None = find_patchelf,
) -> RelocationReport:
    """Relocate the files of *extracted* (at ``extracted.path``) according to *mapping*.

    Paths written into files are the *new* ones from the map, whatever directory the files
    sit in now. *patchelf* is the patchelf executable, ``None`` to never use it, or a
    callable that finds it (the default looks on PATH, only when needed).
    """
    report = RelocationReport()
    info = extracted.buildinfo
    base = str(extracted.path)
    if not mapping:
        return report
    for rel in _regular_files(extracted, info.relocate_textfiles):
        path = os.path.join(base, rel)
        data = _read(path)
        new = replace_text(data, mapping)
        if new != data:
            _write_in_place(path, new)
            report.text_files += 1
        if new_sbang is not None and new.startswith(b"#!"):
            first = new.split(b"\n", 1)[0]
            if uses_sbang(first, new_sbang):
                report.uses_sbang = True
    tool: str | None = None
    tool_known = False
    for rel in _regular_files(extracted, info.relocate_binaries):
        path = os.path.join(base, rel)
        buf = bytearray(_read(path))
        original = bytes(buf)
        if not tool_known:
            tool = patchelf() if callable(patchelf) else patchelf
            tool_known = True
        commands, skip = _relocate_elf(buf, mapping, path, tool)
        data, _count = replace_binary(bytes(buf), mapping, source=path, skip=skip)
        if data != original:
            _write_in_place(path, data)
        if commands and tool is not None:
            _run_patchelf(tool, path, commands)
            report.patchelf.append(rel)
        if data != original or commands:
            report.binaries += 1
    for rel, entry in extracted.entries.items():
        if entry.kind != "symlink" or entry.target is None or not entry.target.startswith("/"):
            continue
        new_target = map_path(entry.target, mapping)
        if new_target == entry.target:
            continue
        path = os.path.join(base, rel)
        os.unlink(path)
        os.symlink(new_target, path)
        report.links += 1
    return report
