"""cache.spack.io package pages (USERS.md §1.3): YAML front matter with ``meta``/``spec_details``.

::

    ---
    title: "py-pyproject-hooks"
    layout: cache
    categories: [package, develop]
    meta: {"compilers": ["none"], "num_specs": 58, ...}
    spec_details: [{"compiler": "none", "hash": "2lo2...", "os": "ubuntu22.04", ...}, ...]
    ---

Every entry of ``spec_details`` becomes a :class:`~cacheclient.model.BuildRecord` whose
``stacks`` are the page's stack labels. The ``meta`` block is recomputed from the entries; each
field that disagrees becomes a warning (``Catalog.warnings``), not an error.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import yaml

from cacheclient.errors import MetadataError
from cacheclient.metadata.catalog import Catalog
from cacheclient.model import BuildRecord, VariantValue, is_valid_hash

__all__ = ["META_FIELDS", "compute_meta", "parse_variant", "read_page"]


def __dir__() -> list[str]:
    return __all__


META_FIELDS = (
    "compilers",
    "num_specs",
    "num_specs_by_stack",
    "oss",
    "platforms",
    "stacks",
    "targets",
    "versions",
)

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_variant(text: str, source: str, path: str) -> tuple[str, VariantValue]:
    """One Spack variant string: ``+x``, ``~x``, ``k=v`` or ``k=a,b`` (quotes allowed).

    >>> parse_variant("codecs='lz4,bz2'", "p", "v")
    ('codecs', ('bz2', 'lz4'))
    """
    if text[:1] in ("+", "~") and len(text) > 1 and "=" not in text:
        return text[1:], text[0] == "+"
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or any(c in name for c in " +~,"):
        raise MetadataError(source, path, f"not a variant (+x, ~x, k=v, k=a,b): {text!r:.60}")
    value = value.strip().strip("'\"")
    if "," in value:
        return name, tuple(sorted(v.strip() for v in value.split(",")))
    return name, value


def _front_matter(text: str, source: str) -> dict[str, Any]:
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        raise MetadataError(source, "", "no YAML front matter (the page must start with '---')")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise MetadataError(source, "", "front matter is not closed by a '---' line") from None
    body = "\n".join(lines[1:end])
    _check_shape(body, source)
    try:
        data = yaml.load(body, Loader=_Loader)  # noqa: S506 - safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 2}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MetadataError(source, where, f"invalid YAML front matter: {problem}") from None
    except RecursionError:
        raise MetadataError(source, "", "invalid YAML front matter: nested too deeply") from None
    except ValueError:  # int("9" * 5000) refuses to convert
        raise MetadataError(source, "", "invalid YAML front matter: a number is too long") from None
    if not isinstance(data, dict):
        raise MetadataError(source, "", "front matter is not a mapping")
    return data


_MAX_DEPTH = 64
_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _check_shape(text: str, source: str) -> None:
    """Refuse aliases and deep nesting before building anything: pages use neither, and
    expanded aliases are billions of nodes (alias bomb) while deep nesting overflows the C
    stack of libyaml's composer (a segfault, not an exception). The event stream is flat."""
    depth = 0
    try:
        for event in yaml.parse(text, _Loader):
            if isinstance(event, yaml.AliasEvent):
                raise MetadataError(source, "", "YAML aliases are not allowed in a page (bomb?)")
            if isinstance(event, _OPEN):
                depth += 1
                if depth > _MAX_DEPTH:
                    raise MetadataError(source, "", f"nested deeper than {_MAX_DEPTH} levels")
            elif isinstance(event, _CLOSE):
                depth -= 1
    except yaml.YAMLError:
        return  # yaml.load reports it, with its line


_STACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _stacks(entry: dict[str, Any], path: str, source: str) -> tuple[str, ...]:
    """Stack labels only (``e4s``, ``root``): a page must not send the client to a URL or
    a local path of its choosing (they are mapped under the configured mirror base)."""
    stacks = _str_list(entry, "stacks", path, source)
    for i, stack in enumerate(stacks):
        if not _STACK.match(stack):
            raise MetadataError(
                source,
                f"{path}.stacks[{i}]",
                f"not a stack name: {stack!r:.80} (URLs and paths are not allowed)",
            )
    return tuple(stacks)


def _str(entry: dict[str, Any], key: str, path: str, source: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        got = "missing" if key not in entry else type(value).__name__
        raise MetadataError(source, f"{path}.{key}", f"expected a non-empty string, got {got}")
    return value


def _str_list(entry: dict[str, Any], key: str, path: str, source: str) -> list[str]:
    value = entry.get(key)
    if not isinstance(value, list):
        got = "missing" if key not in entry else type(value).__name__
        raise MetadataError(source, f"{path}.{key}", f"expected a list, got {got}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise MetadataError(
                source, f"{path}.{key}[{i}]", f"expected a string, got {type(item).__name__}"
            )
    return value


def _record(name: str, entry: Any, path: str, source: str) -> BuildRecord:
    if not isinstance(entry, dict):
        raise MetadataError(source, path, f"expected an object, got {type(entry).__name__}")
    dag_hash = entry.get("hash")
    if not isinstance(dag_hash, str) or not is_valid_hash(dag_hash):
        raise MetadataError(
            source, f"{path}.hash", f"not a 32-character [a-z0-9] hash: {dag_hash!r:.40}"
        )
    versions = _str_list(entry, "versions", path, source)
    if len(versions) != 1:
        raise MetadataError(
            source, f"{path}.versions", f"expected exactly one version, got {len(versions)}"
        )
    compiler = _str(entry, "compiler", path, source)
    size = entry.get("size", "-")
    if isinstance(size, bool) or not isinstance(size, (str, int)):
        raise MetadataError(source, f"{path}.size", "expected '-' or a number")
    variants: dict[str, VariantValue] = {}
    for i, text in enumerate(_str_list(entry, "variants", path, source)):
        key, value = parse_variant(text, source, f"{path}.variants[{i}]")
        variants[key] = value
    return BuildRecord(
        name=name,
        version=versions[0],
        hash=dag_hash,
        platform=_str(entry, "platform", path, source),
        os=_str(entry, "os", path, source),
        target=_str(entry, "target", path, source),
        compiler=None if compiler == "none" else compiler,
        variants=variants,
        stacks=_stacks(entry, path, source),
        installable=True,
        source=source,
        dependencies_known=False,
    )


def compute_meta(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``meta`` block the generator would write for these ``spec_details`` entries."""
    by_stack: Counter[str] = Counter()
    for entry in entries:
        by_stack.update(set(entry["stacks"]))
    return {
        "compilers": sorted({e["compiler"] for e in entries}),
        "num_specs": len(entries),
        "num_specs_by_stack": dict(sorted(by_stack.items())),
        "oss": sorted({e["os"] for e in entries}),
        "platforms": sorted({e["platform"] for e in entries}),
        "stacks": sorted(by_stack),
        "targets": sorted({e["target"] for e in entries}),
        "versions": sorted({v for e in entries for v in e["versions"]}),
    }


def _check_meta(meta: dict[str, Any], entries: list[dict[str, Any]], source: str) -> list[str]:
    computed = compute_meta(entries)
    warnings = []
    for key in META_FIELDS:
        if key not in meta:
            warnings.append(f"{source}: meta.{key} is missing")
            continue
        stated = meta[key]
        if isinstance(stated, list) and all(isinstance(x, str) for x in stated):
            stated = sorted(stated)
        if stated != computed[key]:
            warnings.append(
                f"{source}: meta.{key} says {_short(meta[key])} but spec_details give "
                f"{_short(computed[key])}"
            )
    return warnings


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_page(text: str, source: str) -> Catalog:
    """Parse a cache.spack.io package page into a :class:`Catalog` (warnings included).

    :raises MetadataError: no front matter, bad YAML, a bad hash or a field of the wrong
        type; the key path looks like ``spec_details[12].hash``.
    """
    data = _front_matter(text, source)
    title = data.get("title")
    if not isinstance(title, str) or not title:
        raise MetadataError(source, "title", "expected the package name")
    details = data.get("spec_details")
    if not isinstance(details, list):
        got = "missing" if "spec_details" not in data else type(details).__name__
        raise MetadataError(source, "spec_details", f"expected a list, got {got}")
    records = [_record(title, e, f"spec_details[{i}]", source) for i, e in enumerate(details)]
    meta = data.get("meta")
    warnings: list[str] = []
    if meta is None:
        warnings.append(f"{source}: meta block is missing")
    elif not isinstance(meta, dict):
        raise MetadataError(source, "meta", f"expected an object, got {type(meta).__name__}")
    else:
        warnings.extend(_check_meta(meta, details, source))
    seen: set[str] = set()
    for record in records:
        if record.hash in seen:
            warnings.append(f"{source}: hash {record.hash} is listed twice in spec_details")
        seen.add(record.hash)
    return Catalog(records, source=source, warnings=warnings)
