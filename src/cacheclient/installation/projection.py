"""Where a build goes below the install root: the projection, validated and applied."""

from __future__ import annotations

import string
from pathlib import PurePosixPath

from cacheclient.errors import UsageError
from cacheclient.model import BuildRecord

__all__ = ["DEFAULT_PROJECTION", "format_projection"]


def __dir__() -> list[str]:
    return __all__


DEFAULT_PROJECTION = "{platform}-{target}/{name}-{version}-{hash}"
"""Spack 1.x's default layout below the install root."""

_PROJECTION_FIELDS = frozenset({"platform", "os", "target", "name", "version", "hash"})


def format_projection(projection: str, record: BuildRecord) -> str:
    """The relative install path of *record* under *projection* (validated)."""
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(projection)]
    except ValueError as exc:
        raise UsageError(f"projection {projection!r}: {exc}") from None
    fields = [f for f, _, _ in parsed if f is not None]
    if any(spec or conv for f, spec, conv in parsed if f is not None):
        raise UsageError(
            f"projection {projection!r}: only plain fields such as {{name}} are allowed "
            "(no conversions or format specs)"
        )
    bad = [f for f in fields if f not in _PROJECTION_FIELDS]
    if bad:
        allowed = ", ".join("{" + f + "}" for f in sorted(_PROJECTION_FIELDS))
        raise UsageError(f"projection {projection!r}: unknown field {bad[0]!r} (use {allowed})")
    values = {
        "platform": record.platform,
        "os": record.os,
        "target": record.target,
        "name": record.name,
        "version": record.version,
        "hash": record.hash,
    }
    for key, value in values.items():
        if "/" in value or value in ("", ".", "..") or "\0" in value:
            raise UsageError(
                f"{record.name}/{record.short_hash}: {key} {value!r} unusable in a path"
            )
    try:
        rel = projection.format(**values)
    except (ValueError, IndexError) as exc:
        raise UsageError(f"projection {projection!r}: {exc}") from None
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or any(p in ("..", ".") for p in parts):
        raise UsageError(f"projection {projection!r} gives an unusable path {rel!r}")
    return rel
