"""The ``.spack/binary_distribution`` record ("buildinfo") a Spack tarball carries.

It is a small YAML mapping (FORMATS.md §6.2) that says where the build was installed
(``buildpath``, ``relative_prefix``, ``hash_to_prefix``), where its sbang lived, and which
files need relocation. Parsing is pure: bytes in, :class:`BuildInfo` out, and every
problem is an :class:`~cacheclient.errors.UnsafeArchiveError` naming the member.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from cacheclient.errors import UnsafeArchiveError

__all__ = ["BuildInfo", "parse_buildinfo"]


def __dir__() -> list[str]:
    return __all__


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildInfo:
    """What the builder recorded about its install tree (paths are absolute, no trailing /)."""

    buildpath: str | None
    relative_prefix: str | None
    sbang_install_path: str | None
    hash_to_prefix: Mapping[str, str] = field(default_factory=dict)
    relocate_binaries: tuple[str, ...] = ()
    relocate_textfiles: tuple[str, ...] = ()
    relocate_links: tuple[str, ...] = ()
    hardlinks_deduped: bool = False


def _fail(source: str, member: str, problem: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{source}: {member}: {problem}", archive=source, member=member)


def _abs_path(value: Any, source: str, member: str, key: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise _fail(source, member, f"{key} is not an absolute path: {value!r}")
    text = value.rstrip("/") or "/"
    if ".." in PurePosixPath(text).parts:
        raise _fail(source, member, f"{key} contains '..': {value!r}")
    return text


def _rel_paths(value: Any, source: str, member: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(source, member, f"{key} is not a list")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item or item.startswith("/") or "\0" in item:
            raise _fail(source, member, f"{key} holds a bad path: {item!r}")
        parts = PurePosixPath(item).parts
        if ".." in parts:
            raise _fail(source, member, f"{key} holds a path with '..': {item!r}")
        out.append(str(PurePosixPath(*parts)))
    return tuple(out)


def parse_buildinfo(data: bytes, *, source: str, member: str) -> BuildInfo:
    """Parse a ``binary_distribution`` file; *source*/*member* name it in errors."""
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=_LOADER)  # noqa: S506 - a safe loader
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(source, member, f"not valid YAML: {first}") from None
    if not isinstance(doc, dict):
        raise _fail(source, member, "not a mapping")
    buildpath = doc.get("buildpath")
    buildpath = None if buildpath is None else _abs_path(buildpath, source, member, "buildpath")
    rel = doc.get("relative_prefix")
    if rel is not None:
        if not isinstance(rel, str) or rel.startswith("/") or ".." in PurePosixPath(rel).parts:
            raise _fail(source, member, f"relative_prefix is not a relative path: {rel!r}")
        rel = rel.strip("/")
    sbang = doc.get("sbang_install_path")
    sbang = None if sbang is None else _abs_path(sbang, source, member, "sbang_install_path")
    mapping: dict[str, str] = {}
    h2p = doc.get("hash_to_prefix")
    p2h = doc.get("prefix_to_hash")
    if isinstance(h2p, dict):
        for key, value in h2p.items():
            mapping[str(key)] = _abs_path(value, source, member, f"hash_to_prefix.{key}")
    elif isinstance(p2h, dict):  # Spack <= 0.19 wrote the inverse mapping
        for key, value in p2h.items():
            mapping[str(value)] = _abs_path(key, source, member, f"prefix_to_hash.{value}")
    elif h2p is not None or p2h is not None:
        raise _fail(source, member, "hash_to_prefix is not a mapping")
    return BuildInfo(
        buildpath=buildpath,
        relative_prefix=rel,
        sbang_install_path=sbang,
        hash_to_prefix=mapping,
        relocate_binaries=_rel_paths(doc.get("relocate_binaries"), source, member, "binaries"),
        relocate_textfiles=_rel_paths(doc.get("relocate_textfiles"), source, member, "textfiles"),
        relocate_links=_rel_paths(doc.get("relocate_links"), source, member, "relocate_links"),
        hardlinks_deduped=bool(doc.get("hardlinks_deduped", False)),
    )
