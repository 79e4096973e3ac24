"""Drive the real Spack 1.1 of ``../shared/tools/spack-kit`` against a mirror directory.

:class:`SpackKit` is one isolated Spack (``setup.sh DIR``, made once per test session). Each
:meth:`SpackKit.client` is a fresh Spack *user* of it: an empty GnuPG keyring, an empty install
tree and exactly one configured mirror, through a configuration scope of its own (``spack -C``),
so the scenarios of a session never see each other's keys, installs or mirrors.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from paths import REPO_ROOT

__all__ = ["KIT_ENV", "SpackClient", "SpackKit", "find_kit", "mock_recipes"]

KIT_ENV = "SPACK_KIT"
"""Environment variable naming the spack-kit folder (default ``../shared/tools/spack-kit``)."""


def find_kit() -> Path:
    """The spack-kit folder: ``$SPACK_KIT``, else ``../shared/tools/spack-kit`` beside the repo."""
    configured = os.environ.get(KIT_ENV)
    return Path(configured) if configured else REPO_ROOT.parent / "shared/tools/spack-kit"


# Spack's v2 test mirrors were built from the ``builtin_mock`` test repository, which the kit does
# not ship (and whose recipes inside the tarballs use the repo API v1 layout Spack 1.1 cannot load
# from the kit). Spack installs a binary only when its package has a recipe, so the suite writes
# these minimal stand-ins (a name, the version, the declared edges): enough to install the
# prebuilt binaries, never to build anything.
_MOCK_PACKAGES = {
    "libelf": ("Libelf", "0.8.13", ""),
    "libdwarf": ("Libdwarf", "20130729", '    depends_on("libelf", type=("build", "link"))\n'),
    "compiler_wrapper": ("CompilerWrapper", "1.0", ""),
    "gcc_runtime": ("GccRuntime", "10.2.1", ""),
    "gcc": (
        "Gcc",
        "10.2.1",
        '    variant("languages", default="c", values=("c", "c++", "fortran"), multi=True,'
        ' description="languages")\n',
    ),
}


def mock_recipes(root: Path) -> Path:
    """Write the ``builtin_mock`` stand-in repository under *root*; returns its directory."""
    repo = root / "spack_repo" / "builtin_mock"
    (repo / "packages").mkdir(parents=True, exist_ok=True)
    (repo / "repo.yaml").write_text("repo:\n  namespace: builtin_mock\n  api: v2.0\n")
    for pkg, (cls, version, body) in _MOCK_PACKAGES.items():
        folder = repo / "packages" / pkg
        folder.mkdir(exist_ok=True)
        (folder / "package.py").write_text(
            "from spack.package import *\n\n\n"
            f"class {cls}(Package):\n"
            '    """Stand-in: installs the prebuilt binary of Spack\'s v2 test mirror."""\n\n'
            "    has_code = False\n"
            f'    version("{version}")\n{body}'
        )
    return repo


@dataclass(frozen=True, kw_only=True, slots=True)
class SpackKit:
    """An isolated Spack 1.1 made by the kit's ``setup.sh`` in *directory*."""

    kit: Path
    directory: Path
    repos: tuple[Path, ...] = ()

    @property
    def spack(self) -> Path:
        return self.directory / "spack" / "bin" / "spack"

    def environment(self, gnupg: Path) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SPACK_") and k not in ("GNUPGHOME", "PYTHONPATH")
        }
        env.update(
            SPACK_ROOT=str(self.directory / "spack"),
            SPACK_PYTHON=str(self.directory / "venv" / "bin" / "python"),
            SPACK_DISABLE_LOCAL_CONFIG="1",
            SPACK_USER_CACHE_PATH=str(self.directory / "cache"),
            SPACK_GNUPGHOME=str(gnupg),
        )
        return env

    def client(self, home: Path, mirror: Path, *, signed: bool = True) -> SpackClient:
        """A fresh Spack user of this kit reading only *mirror* (a local directory)."""
        config = home / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "mirrors.yaml").write_text(
            "mirrors::\n  store:\n"
            f"    url: {mirror.resolve().as_uri()}\n"
            "    binary: true\n    source: false\n"
            f"    signed: {'true' if signed else 'false'}\n"
        )
        tree = home / "tree"
        (config / "config.yaml").write_text(f"config:\n  install_tree:\n    root: {tree}\n")
        repos = "".join(f"  {p.name}: {p}\n" for p in self.repos)
        (config / "repos.yaml").write_text(f"repos:\n{repos}" if repos else "repos: {}\n")
        (home / "gnupg").mkdir(mode=0o700, exist_ok=True)
        return SpackClient(kit=self, home=home, mirror=mirror)


@dataclass(frozen=True, kw_only=True, slots=True)
class SpackClient:
    """One Spack user: its own keyring (``home/gnupg``), install tree and mirror ``store``."""

    kit: SpackKit
    home: Path
    mirror: Path

    @property
    def tree(self) -> Path:
        return self.home / "tree"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``spack -C <home>/config ARGS``; output captured; a failure shows Spack's output."""
        cmd = [str(self.kit.spack), "-C", str(self.home / "config"), *args]
        proc = subprocess.run(
            cmd,
            env=self.kit.environment(self.home / "gnupg"),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
            )
        return proc

    def stop_agent(self) -> None:
        """Stop the gpg-agent Spack's gpg started for this keyring."""
        subprocess.run(
            ["gpgconf", "--kill", "all"],
            env={**os.environ, "GNUPGHOME": str(self.home / "gnupg")},
            capture_output=True,
            check=False,
            timeout=60,
        )
