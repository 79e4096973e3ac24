"""Regenerate ``.spack/install_manifest.json`` after relocation (what ``spack verify`` reads).

The archive's copy describes the files at the *old* prefix with their old checksums, so it
is stale once the prefix is relocated. Spack rewrites it in a post-install hook; this module
writes the same format for the new prefix: one entry per path (the prefix itself included),
keyed by absolute path, with ``mode``, ``owner``, ``group``, and for regular files ``hash``
(base32 of the SHA-1 of the content, as Spack computes it), ``time`` and ``size``, for
symlinks ``dest``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "content_hash", "write_install_manifest"]


def __dir__() -> list[str]:
    return __all__


MANIFEST = ".spack/install_manifest.json"
_CHUNK = 1 << 20


def content_hash(path: str) -> str:
    """Spack's file hash: base32 (upper case) of the SHA-1 of the content."""
    digest = hashlib.sha1(usedforsecurity=False)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return base64.b32encode(digest.digest()).decode()


def _entry(path: str) -> dict[str, Any]:
    st = os.lstat(path)
    data: dict[str, Any] = {"mode": st.st_mode, "owner": st.st_uid, "group": st.st_gid}
    if stat.S_ISLNK(st.st_mode):
        data["dest"] = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        data["hash"] = content_hash(path)
        data["time"] = st.st_mtime
        data["size"] = st.st_size
    return data


def write_install_manifest(staged: Path, final_prefix: str) -> int:
    """Write the manifest of the prefix now at *staged*, which will live at *final_prefix*.

    Returns the number of entries. Symlinks are recorded, never followed.
    """
    manifest: dict[str, dict[str, Any]] = {final_prefix: _entry(str(staged))}
    skip = os.path.join(staged, MANIFEST)
    for dirpath, dirnames, filenames in os.walk(staged):
        rel_dir = os.path.relpath(dirpath, staged)
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            if path == skip:
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            manifest[f"{final_prefix}/{rel}"] = _entry(path)
    target = staged / MANIFEST
    target.parent.mkdir(exist_ok=True)
    target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(manifest, out)
    return len(manifest)
