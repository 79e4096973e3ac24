"""Shared pieces of the security suite (issue 12): a sentinel directory outside the store and
root that must stay byte-for-byte unchanged, a store filled from the signed fixture mirror
served by nginx, and the checks every case ends with.

Threat lines: T1 network and mirrors, T2 the store, T3 the install root, T4 local input.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paths import SPACK_V3_KEY, SPACK_V3_SIGNED
from reliability import CliResult, assert_one_line_error, run_cli, store_problems

__all__ = [
    "HOST",
    "TOOL",
    "Sandbox",
    "build_record",
    "expect_error",
    "snapshot",
    "store_verifies",
]

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
TOOL = "demo-tool@1.0.0"
TOOL_HASH = "vwaicymp67emhvtu53ght22dv5pm6y2b"
EXPECTED = json.loads((SPACK_V3_SIGNED.parent / "signed.expected.json").read_text())


def snapshot(top: Path) -> dict[str, Any]:
    """Every entry below *top*: kind, mode and content (files) or target (symlinks)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted([*dirnames, *filenames]):
            path = Path(dirpath) / name
            info = path.lstat()
            rel = path.relative_to(top).as_posix()
            if stat.S_ISLNK(info.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                out[rel] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
            else:
                out[rel] = ("other", stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode))
    return out


@dataclass
class Sandbox:
    """A store, a root and a sentinel directory (with a victim file) in one temp directory."""

    base: Path
    mirror: str

    def __post_init__(self) -> None:
        self.store = self.base / "store"
        self.root = self.base / "root"
        self.sentinel = self.base / "sentinel"
        (self.sentinel / "deep").mkdir(parents=True)
        (self.sentinel / "victim.txt").write_bytes(b"do not touch\n")
        (self.sentinel / "deep" / "data.bin").write_bytes(bytes(range(256)))
        os.chmod(self.sentinel / "victim.txt", 0o600)
        self.before = snapshot(self.sentinel)

    @property
    def victim(self) -> Path:
        return self.sentinel / "victim.txt"

    def trust(self) -> None:
        result = self.cli("keys", "trust", str(SPACK_V3_KEY), "--store", str(self.store))
        assert result.code == 0, result.err

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
        from reliability import cli_env

        return run_cli(list(args), env=cli_env(env), timeout=timeout)

    def fetch(self, *extra: str, spec: str = TOOL) -> CliResult:
        return self.cli(
            "fetch", spec, "--mirror", self.mirror, *HOST, "--store", str(self.store), *extra
        )

    def install(
        self, *extra: str, spec: str = TOOL, env: dict[str, str] | None = None
    ) -> CliResult:
        return self.cli(
            "install", spec, "--mirror", self.mirror, *HOST, "--store", str(self.store),
            "--root", str(self.root), *extra, env=env,
        )  # fmt: skip

    def sentinel_unchanged(self) -> None:
        assert snapshot(self.sentinel) == self.before, "the sentinel directory changed"

    def blob(self, checksum: str) -> Path:
        return self.store / "blobs" / "sha256" / checksum[:2] / checksum

    def finish(self) -> None:
        """The end of every case: the sentinel is unchanged and the store verifies."""
        self.sentinel_unchanged()
        assert store_verifies(self), store_problems(self.store)


def build_record(store: Path, dag_hash: str = TOOL_HASH) -> dict[str, Any]:
    path = store / ".cacheclient" / "builds" / f"{dag_hash}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def store_verifies(box: Sandbox) -> bool:
    """``cacheclient verify`` exits 0 and the invariant checks find nothing."""
    result = box.cli("verify", "--store", str(box.store))
    return result.code == 0 and not store_problems(box.store)


def expect_error(result: CliResult, code: int, *words: str) -> str:
    """Exit *code*, one ``error:`` line holding *words*, no traceback."""
    return assert_one_line_error(result.err, result.code, code, *words)
