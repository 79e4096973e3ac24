"""The environment that makes installed prefixes usable, as shell code (like ``spack load --sh``).

For each prefix, the directories that exist are put in front of the variables Spack's default
``prefix_inspections`` name on Linux: ``bin`` → ``PATH``; ``man`` and ``share/man`` →
``MANPATH``; ``share/aclocal`` → ``ACLOCAL_PATH``; ``lib/pkgconfig``, ``lib64/pkgconfig`` and
``share/pkgconfig`` → ``PKG_CONFIG_PATH``; the prefix itself → ``CMAKE_PREFIX_PATH``.
``LD_LIBRARY_PATH`` is left alone, as Spack does since 0.18: the installed binaries find their
libraries through their run paths. The current value of each variable is kept after the new
entries (without duplicates), and ``MANPATH`` keeps an empty last entry when it was unset, so
``man`` still searches the system's pages.

:func:`environment` is pure (the filesystem test is a parameter); :func:`render` writes
``sh``, ``csh`` or ``fish`` code for ``eval``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from cacheclient.errors import UsageError

__all__ = ["INSPECTIONS", "SHELLS", "environment", "render"]


def __dir__() -> list[str]:
    return __all__


INSPECTIONS: tuple[tuple[str, str], ...] = (
    ("bin", "PATH"),
    ("man", "MANPATH"),
    ("share/man", "MANPATH"),
    ("share/aclocal", "ACLOCAL_PATH"),
    ("lib/pkgconfig", "PKG_CONFIG_PATH"),
    ("lib64/pkgconfig", "PKG_CONFIG_PATH"),
    ("share/pkgconfig", "PKG_CONFIG_PATH"),
    ("", "CMAKE_PREFIX_PATH"),
)
"""``(subdirectory, variable)`` pairs, in Spack's order."""

SHELLS = ("sh", "csh", "fish")


def environment(
    prefixes: Sequence[str],
    environ: Mapping[str, str],
    *,
    is_dir: Callable[[str], bool] = os.path.isdir,
) -> dict[str, str]:
    """The variables to set so *prefixes* are usable; earlier prefixes come first."""
    added: dict[str, list[str]] = {}
    for prefix in prefixes:
        for sub, var in INSPECTIONS:
            path = os.path.join(prefix, sub) if sub else prefix
            if is_dir(path):
                entries = added.setdefault(var, [])
                if path not in entries:
                    entries.append(path)
    out: dict[str, str] = {}
    for var, entries in added.items():
        current = environ.get(var)
        old = current.split(":") if current else []
        if var == "MANPATH" and current is None:
            old = [""]  # an empty entry: man's default search path
        merged = entries + [p for p in old if p not in entries or p == ""]
        out[var] = ":".join(merged)
    return dict(sorted(out.items()))


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _fish_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render(variables: Mapping[str, str], shell: str) -> str:
    """Shell code setting *variables*, one statement per line."""
    if any("\n" in v or "\0" in v for v in variables.values()):
        raise UsageError("a path holds a newline or NUL: refusing to write it as shell code")
    lines: list[str] = []
    for name, value in variables.items():
        if shell == "sh":
            lines.append(f"export {name}={_sh_quote(value)};")
        elif shell == "csh":
            if "!" in value:
                raise UsageError(f"{name}: a path holds '!', which csh cannot quote")
            lines.append(f"setenv {name} {_sh_quote(value)};")
        elif shell == "fish":
            parts = " ".join(_fish_quote(p) for p in value.split(":"))
            lines.append(f"set -gx {name} {parts};")
        else:
            raise UsageError(f"unknown shell {shell!r} (use {', '.join(SHELLS)})")
    return "".join(line + "\n" for line in lines)
