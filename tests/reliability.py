"""Invariant checks shared by the fault, crash, disk, concurrency and hostile-input suites.

Every reliability test ends the same way: whatever happened, the store holds only verified
blobs in its own layout, the install root holds only complete prefixes and its database
matches them, and a failing command said what went wrong in one line without a traceback.
The checks return lists of problems (empty when all is well) so a test can show all of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cacheclient.mirrors.writer import WrittenMirror

__all__ = [
    "BIG_HOST",
    "STORE_TOP",
    "CliResult",
    "assert_clean",
    "assert_one_line_error",
    "cli_env",
    "root_problems",
    "run_cli",
    "store_builds",
    "store_problems",
    "write_big_mirror",
]

STORE_TOP = frozenset({"blobs", "v3", "build_cache", ".cacheclient"})
"""What may sit at the top of a store (``build_cache`` only after a v2 fetch)."""
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SRC = Path(__file__).resolve().parent.parent / "src"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def store_problems(store: Path, *, allow_partials: bool = True) -> list[str]:
    """Everything wrong with the store at *store* (empty list: healthy).

    * every file under ``blobs/`` is ``blobs/sha256/<c[:2]>/<c>`` and hashes to ``<c>``
      (a temporary or partial file there counts as a problem: it is not a verified blob);
    * nothing sits at the top level outside the store's own layout;
    * every build record names blobs that are present and a metadata file that exists;
    * every manifest under ``v3/manifests`` is complete JSON (or clear-signed JSON);
    * partial downloads and temporary files only live in ``.cacheclient/partial`` and
      ``.cacheclient/tmp`` (and only if *allow_partials*: after a successful run, none).
    """
    problems: list[str] = []
    if not store.exists():
        return problems
    for entry in sorted(store.iterdir()):
        if entry.name not in STORE_TOP:
            problems.append(f"outside the layout: {entry.name}")
    blobs = store / "blobs"
    if blobs.exists():
        for path in sorted(blobs.rglob("*")):
            rel = path.relative_to(store).as_posix()
            if path.is_symlink():
                problems.append(f"symlink under blobs/: {rel}")
                continue
            if path.is_dir():
                parts = path.relative_to(blobs).parts
                ok = (len(parts) == 1 and parts[0] == "sha256") or (
                    len(parts) == 2
                    and parts[0] == "sha256"
                    and re.fullmatch("[0-9a-f]{2}", parts[1])
                )
                if not ok:
                    problems.append(f"unexpected directory: {rel}")
                continue
            name = path.name
            parts = path.relative_to(blobs).parts
            if len(parts) != 3 or parts[0] != "sha256" or not _HEX64.match(name):
                problems.append(f"not a blob: {rel}")
                continue
            if parts[1] != name[:2]:
                problems.append(f"blob in the wrong shard: {rel}")
            actual = _sha256(path)
            if actual != name:
                problems.append(f"corrupt blob: {rel} hashes to {actual}")
    for path in sorted((store / "v3").rglob("*")) if (store / "v3").exists() else []:
        if path.is_file():
            rel = path.relative_to(store).as_posix()
            if path.name.startswith(".tmp-"):
                problems.append(f"temporary file left: {rel}")
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            if "-----BEGIN PGP SIGNED MESSAGE-----" in text:
                if "-----END PGP SIGNATURE-----" not in text:
                    problems.append(f"truncated signed manifest: {rel}")
                continue
            try:
                json.loads(text)
            except ValueError:
                problems.append(f"incomplete JSON: {rel}")
    private = store / ".cacheclient"
    for build in store_builds(store).values():
        for key in ("tarball", "spec_blob"):
            checksum = str(build[key]["checksum"])
            blob = store / "blobs" / "sha256" / checksum[:2] / checksum
            if not blob.is_file():
                problems.append(f"build {build['hash']} lost its {key} {checksum}")
        if not (store / str(build["metadata_path"])).is_file():
            problems.append(f"build {build['hash']} lost its metadata {build['metadata_path']}")
    builds_dir = private / "builds"
    if builds_dir.is_dir():
        for path in builds_dir.iterdir():
            if path.name.startswith(".tmp-"):
                problems.append(f"temporary file left: {path.relative_to(store)}")
    for sub in ("partial", "tmp"):
        folder = private / sub
        if folder.is_dir() and not allow_partials:
            left = sorted(p.name for p in folder.iterdir())
            if left:
                problems.append(f"{sub} files left: {left}")
    return problems


def store_builds(store: Path) -> dict[str, dict[str, Any]]:
    """The build records of a store (``.cacheclient/builds/<hash>.json``) that parse."""
    out: dict[str, dict[str, Any]] = {}
    folder = store / ".cacheclient" / "builds"
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            out[path.stem] = {"hash": path.stem, "broken": True}
            continue
        out[str(data["hash"])] = data
    return out


def _content_hash(path: Path) -> str:
    return base64.b32encode(
        hashlib.sha1(path.read_bytes(), usedforsecurity=False).digest()
    ).decode()


def root_problems(root: Path, *, after_crash: bool = False) -> list[str]:
    """Everything wrong with the install root at *root* (empty list: healthy).

    * the database (``.cacheclient/installed.json``) is complete JSON;
    * every recorded prefix exists under the root and matches its ``install_manifest.json``
      (every listed file present with its size and hash, nothing unlisted);
    * every directory at prefix depth is a recorded prefix (no half-installed prefix);
    * no work directory of an interrupted run is left.

    With *after_crash* (right after a ``kill -9``, before the next run cleans up), work
    directories may remain, and so may a prefix renamed into place just before the kill but
    not yet recorded, provided it is complete by its own ``install_manifest.json``.
    """
    problems: list[str] = []
    if not root.exists():
        return problems
    db_path = root / ".cacheclient" / "installed.json"
    records: dict[str, dict[str, object]] = {}
    if db_path.exists():
        try:
            records = json.loads(db_path.read_text(encoding="utf-8"))["installs"]
        except (ValueError, KeyError, TypeError) as exc:
            return [f"install database unreadable: {exc}"]
    prefixes: set[Path] = set()
    for dag_hash, rec in records.items():
        prefix = Path(str(rec["prefix"]))
        prefixes.add(prefix)
        if not prefix.is_relative_to(root):
            problems.append(f"{dag_hash}: prefix {prefix} outside the root")
            continue
        problems += _prefix_problems(dag_hash, prefix)
    for entry in sorted(root.iterdir()):
        if entry.name in (".cacheclient", "bin"):
            continue
        if not entry.is_dir() or entry.is_symlink():
            problems.append(f"unexpected file in the root: {entry.name}")
            continue
        for sub in sorted(entry.iterdir()):
            if sub.name.startswith("."):
                if not after_crash:
                    problems.append(f"work directory left: {sub.relative_to(root)}")
                continue
            if sub in prefixes:
                continue
            if after_crash:
                problems += _prefix_problems(f"unrecorded {sub.name}", sub)
            else:
                problems.append(f"prefix not in the database: {sub.relative_to(root)}")
    return problems


def _prefix_problems(dag_hash: str, prefix: Path) -> list[str]:
    manifest_path = prefix / ".spack" / "install_manifest.json"
    if not prefix.is_dir():
        return [f"{dag_hash}: recorded prefix {prefix} is missing"]
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{dag_hash}: {manifest_path} unreadable: {exc}"]
    problems: list[str] = []
    listed = set(manifest)
    for name, entry in manifest.items():
        path = Path(name)
        if not path.is_relative_to(prefix):
            problems.append(f"{dag_hash}: manifest lists {name} outside its prefix")
            continue
        if "hash" in entry:
            if path.is_symlink() or not path.is_file():
                problems.append(f"{dag_hash}: {name} missing")
            elif path.stat().st_size != entry["size"] or _content_hash(path) != entry["hash"]:
                problems.append(f"{dag_hash}: {name} differs from its manifest")
        elif "dest" in entry:
            if not path.is_symlink() or os.readlink(path) != entry["dest"]:
                problems.append(f"{dag_hash}: symlink {name} differs from its manifest")
        elif not path.is_dir():
            problems.append(f"{dag_hash}: directory {name} missing")
    for dirpath, dirnames, filenames in os.walk(prefix):
        for name in (*dirnames, *filenames):
            found = os.path.join(dirpath, name)
            if found not in listed and found != str(manifest_path):
                problems.append(f"{dag_hash}: {found} is not in its manifest")
    return problems


@dataclass(frozen=True, kw_only=True)
class CliResult:
    code: int
    out: str
    err: str


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``python -m cacheclient`` child: this checkout first, fast retries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHECLIENT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(_SRC), *sys.path])
    env.setdefault("CACHECLIENT_RETRIES", "3")
    env.setdefault("CACHECLIENT_CONNECT_TIMEOUT", "5")
    env.setdefault("CACHECLIENT_READ_TIMEOUT", "5")
    env.update(extra or {})
    return env


def run_cli(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120
) -> CliResult:
    """Run ``python -m cacheclient ARGS`` in a child process and capture everything."""
    proc = subprocess.run(
        [sys.executable, "-m", "cacheclient", *args],
        env=dict(env) if env is not None else cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(code=proc.returncode, out=proc.stdout, err=proc.stderr)


def assert_one_line_error(err: str, code: int, expected_code: int, *words: str) -> str:
    """The command failed with *expected_code* and one ``error:`` line holding *words*."""
    assert "Traceback" not in err, err
    assert code == expected_code, f"exit {code}, expected {expected_code}: {err[-2000:]}"
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err[-2000:]
    line = lines[0]
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"
    return line


def assert_clean(store: Path | None = None, root: Path | None = None, **kw: bool) -> None:
    """Both invariants hold (a test's last line)."""
    problems = (store_problems(store, **kw) if store is not None else []) + (
        root_problems(root) if root is not None else []
    )
    assert problems == [], problems


BIG_HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v3"]
"""Host flags matching the builds :func:`write_big_mirror` writes."""


def write_big_mirror(
    root: Path,
    *,
    megabytes: int = 24,
    files: int = 400,
    names: Sequence[str] = ("bigpkg",),
    seed: int = 7,
    small: bool = False,
) -> WrittenMirror:
    """An unsigned v3 mirror of independent builds, each with *megabytes* of incompressible
    data spread over *files* files (slow enough to interrupt); with *small*, also
    ``smallpkg``, a build of a few KiB."""
    import random

    from cacheclient.mirrors.writer import MirrorBuild, fake_hash, write_mirror
    from cacheclient.model import BuildRecord

    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    builds = []
    per_file = max(1, (megabytes << 20) // max(files, 1))
    for name in names:
        record = BuildRecord(
            name=name,
            version="1.0",
            hash=fake_hash(f"{name}-{seed}"),
            platform="linux",
            os="debian12",
            target="x86_64_v3",
        )
        content: dict[str, bytes | str] = {
            f"share/{name}/d{i % 17}/f{i}.bin": rng.randbytes(per_file) for i in range(files)
        }
        content["bin/hello"] = "#!/bin/sh\necho hello\n"
        builds.append(
            MirrorBuild(record=record, files=content, executables=frozenset({"bin/hello"}))
        )
    if small:
        record = BuildRecord(
            name="smallpkg",
            version="1.0",
            hash=fake_hash(f"smallpkg-{seed}"),
            platform="linux",
            os="debian12",
            target="x86_64_v3",
        )
        builds.append(MirrorBuild(record=record, files={"share/small.txt": "small\n"}))
    return write_mirror(root, builds)
