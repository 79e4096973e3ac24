"""Spack's own mirror configuration (``mirrors.yaml``), read as a list of binary mirrors.

Spack writes ``mirrors:`` as a mapping of names to either a URL or a mapping::

    mirrors:
      develop: https://binaries.spack.io/develop
      local:
        fetch: {url: file:///opt/cache}
        push: s3://bucket/cache
        signed: false
        binary: true

For reading, the ``fetch`` URL counts (a plain string or ``{url: ...}``), else ``url``;
``push`` is never read. ``binary: false`` marks a source-only mirror, which is left out.
``signed: false`` lets the mirror's builds be used without a signature (as in Spack). Keys
Spack knows but that do not matter for reading a cache (credentials, ``autopush``, ``source``,
``view``...) are ignored; anything else is reported, so a typo is never silent.

:func:`parse_spack_mirrors` and :func:`parse_mirror_list` are pure (they take loaded YAML);
:func:`load_spack_mirrors` reads a ``mirrors.yaml`` file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SpackMirror", "load_spack_mirrors", "parse_mirror_list", "parse_spack_mirrors"]


def __dir__() -> list[str]:
    return __all__


_READ_KEYS = frozenset({"url", "fetch", "push", "signed", "binary"})
_IGNORED_KEYS = frozenset(
    {
        "source",
        "autopush",
        "access_pair",
        "access_token",
        "access_token_variable",
        "profile",
        "endpoint_url",
        "view",
        "oci_username",
        "oci_password",
        "oci_username_variable",
        "oci_password_variable",
    }
)
_FETCH_KEYS = frozenset({"url", *_IGNORED_KEYS})


@dataclass(frozen=True, kw_only=True, slots=True)
class SpackMirror:
    """One binary mirror of a Spack configuration."""

    name: str
    url: str
    signed: bool = True


def _url_of(value: Any, where: str, problems: list[str]) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in _FETCH_KEYS)
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(unknown)}")
        url = value.get("url")
        if isinstance(url, str) and url.strip():
            return url.strip()
    problems.append(f"{where}: needs a URL (a string or {{url: ...}})")
    return None


def parse_spack_mirrors(value: Any, where: str = "mirrors") -> tuple[list[SpackMirror], list[str]]:
    """The binary mirrors of a Spack ``mirrors:`` mapping, in order, and the problems found.

    *value* may also be a whole ``mirrors.yaml`` document (``{"mirrors": {...}}``).
    """
    problems: list[str] = []
    if isinstance(value, Mapping) and set(value) == {"mirrors"}:
        value = value["mirrors"]
        where = f"{where}.mirrors" if where != "mirrors" else where
    if not isinstance(value, Mapping):
        return [], [f"{where}: must be a mapping of mirror names to URLs (Spack's mirrors.yaml)"]
    out: list[SpackMirror] = []
    for raw_name, entry in value.items():
        name = str(raw_name)
        here = f"{where}.{name}"
        if isinstance(entry, str):
            url = _url_of(entry, here, problems)
            if url:
                out.append(SpackMirror(name=name, url=url))
            continue
        if not isinstance(entry, Mapping):
            problems.append(f"{here}: must be a URL or a mapping with fetch/url")
            continue
        unknown = sorted(str(k) for k in entry if k not in _READ_KEYS | _IGNORED_KEYS)
        if unknown:
            problems.append(f"{here}: unknown key(s) {', '.join(unknown)}")
        signed = entry.get("signed", True)
        if not isinstance(signed, bool):
            problems.append(f"{here}.signed: must be true or false")
            signed = True
        binary = entry.get("binary", True)
        if not isinstance(binary, bool):
            problems.append(f"{here}.binary: must be true or false")
            binary = True
        if "fetch" in entry:
            url = _url_of(entry["fetch"], f"{here}.fetch", problems)
        elif "url" in entry:
            url = _url_of(entry["url"], f"{here}.url", problems)
        else:
            problems.append(f"{here}: needs 'url' or 'fetch' ('push' is only for uploads)")
            continue
        if url and binary:
            out.append(SpackMirror(name=name, url=url, signed=signed))
    return out, problems


def parse_mirror_list(value: Any, where: str = "mirrors") -> tuple[list[SpackMirror], list[str]]:
    """Any accepted spelling of a mirror list, and the problems found.

    cacheclient's own (one URL, or a list of URLs or of ``{url, signed, name}``), Spack's
    mapping of names, or a whole ``mirrors.yaml`` document.
    """
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        return parse_spack_mirrors(value, where)
    if not isinstance(value, list):
        return [], [f"{where}: must be a list of URLs or Spack's mirrors mapping"]
    out: list[SpackMirror] = []
    problems: list[str] = []
    for i, item in enumerate(value):
        here = f"{where}[{i}]"
        if isinstance(item, str) and item.strip():
            out.append(SpackMirror(name=item.strip(), url=item.strip()))
        elif isinstance(item, Mapping) and isinstance(item.get("url"), str):
            unknown = sorted(str(k) for k in item if k not in ("url", "signed", "name"))
            signed = item.get("signed", True)
            if unknown:
                problems.append(f"{here}: unknown key(s) {', '.join(unknown)}")
            if not isinstance(signed, bool):
                problems.append(f"{here}.signed: must be true or false")
                signed = True
            url = str(item["url"]).strip()
            out.append(SpackMirror(name=str(item.get("name") or url), url=url, signed=signed))
        else:
            problems.append(f"{here}: must be a URL or {{url: URL, signed: BOOL}}")
    return out, problems


def load_spack_mirrors(path: Path) -> tuple[list[SpackMirror], list[str]]:
    """The binary mirrors of a Spack ``mirrors.yaml`` file, and the problems found."""
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [], [f"{where}: cannot read: {exc.strerror or exc}"]
    except UnicodeDecodeError:
        return [], [f"{where}: not UTF-8 text"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        return [], [f"{where}: not valid YAML{line}"]
    # ``mirrors::`` (Spack's "replace, do not merge") loads as the key ``mirrors:``
    key = next(
        (k for k in ("mirrors", "mirrors:") if isinstance(data, Mapping) and k in data), None
    )
    if key is None:
        return [], [f"{where}: not a Spack mirrors.yaml (no top-level 'mirrors:')"]
    return parse_spack_mirrors(data[key], f"{where}: mirrors")
