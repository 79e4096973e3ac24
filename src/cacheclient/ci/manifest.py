"""The CI warm manifest: a YAML file naming mirrors, host profiles and specs to pre-fetch.

Validation reports every problem at once, each with its line number, in one
:class:`~cacheclient.errors.ConfigError`::

    mirrors:
      - url: https://binaries.spack.io/develop
        signed: true
    metadata: [pages/py-pyproject-hooks.md]
    profiles:
      - {platform: linux, os: ubuntu24.04, target: x86_64_v3}
    specs: [py-pyproject-hooks@1.2]
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from cacheclient.errors import CacheClientError, ConfigError

__all__ = ["KNOWN_OSES", "MirrorEntry", "Profile", "WarmManifest", "parse_manifest_text"]


def __dir__() -> list[str]:
    return __all__


KNOWN_OSES = frozenset(
    {
        *(f"ubuntu{v}" for v in ("18.04", "20.04", "22.04", "24.04", "24.10", "25.04", "25.10")),
        *(f"debian{v}" for v in range(9, 14)),
        *(
            f"{d}{v}"
            for d in ("rhel", "rocky", "almalinux", "centos", "oracle")
            for v in range(6, 11)
        ),
        "amzn2",
        "amzn2023",
        *(f"sles{v}" for v in (12, 15)),
        *(f"opensuse{v}" for v in (15, 42)),
        *(f"fedora{v}" for v in range(30, 44)),
        "alpine3",
        *(f"macos{v}" for v in ("10.15", "11", "12", "13", "14", "15", "26")),
        "monterey",
        "ventura",
        "sonoma",
        "sequoia",
        "tahoe",
        "windows10",
        "windows11",
        "debian6",  # Spack's own test mirrors
    }
)
"""Spack OS names a profile may name (a typo such as ``ubunut22.04`` is an error)."""

_TOP_KEYS = ("mirrors", "spack_mirrors", "metadata", "mirror_base", "profiles", "specs")
_MIRROR_KEYS = ("url", "signed", "name")
_PROFILE_KEYS = ("platform", "os", "target", "os_compat", "libc")
_PLATFORMS = ("linux", "darwin", "windows", "freebsd", "test")


@dataclass(frozen=True, kw_only=True, slots=True)
class MirrorEntry:
    url: str
    signed: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    platform: str
    os: str
    target: str
    os_compat: str = "exact"
    libc: str | None = None

    def label(self) -> str:
        return f"{self.platform}-{self.os}-{self.target}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "platform": self.platform,
            "os": self.os,
            "target": self.target,
            "os_compat": self.os_compat,
        }
        if self.libc:
            out["libc"] = self.libc
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class WarmManifest:
    source: str
    mirrors: tuple[MirrorEntry, ...]
    metadata: tuple[str, ...]
    mirror_base: str | None
    profiles: tuple[Profile, ...]
    specs: tuple[str, ...]


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Collector:
    """Collects ``line N: problem`` strings so the user sees every problem at once."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, node: yaml.Node | None, message: str) -> None:
        where = f"line {node.start_mark.line + 1}: " if node is not None else ""
        self.problems.append(where + message)


def _scalar(node: yaml.Node) -> Any:
    # Construct a plain Python value for one scalar/sequence/mapping node.
    return yaml.safe_load(yaml.serialize(node))


def _mapping_items(
    node: yaml.Node, where: str, allowed: Sequence[str], errors: _Collector
) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        errors.add(node, f"{where} must be a mapping")
        return {}
    items: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str) or key not in allowed:
            errors.add(
                key_node,
                f"unknown key {key!r} in {where}{_suggest(str(key), allowed)}; "
                f"allowed: {', '.join(allowed)}",
            )
            continue
        if key in items:
            errors.add(key_node, f"duplicate key {key!r} in {where}")
        items[key] = value_node
    return items


def _string(node: yaml.Node, where: str, errors: _Collector) -> str | None:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith((":str", ":int", ":float")):
        text = str(node.value).strip()
        if text:
            return text
    errors.add(node, f"{where} must be a non-empty string")
    return None


def _string_list(node: yaml.Node, where: str, errors: _Collector) -> list[tuple[str, yaml.Node]]:
    if isinstance(node, yaml.ScalarNode):
        value = _string(node, where, errors)
        return [(value, node)] if value else []
    if not isinstance(node, yaml.SequenceNode):
        errors.add(node, f"{where} must be a list of strings")
        return []
    out = []
    for i, item in enumerate(node.value):
        value = _string(item, f"{where}[{i}]", errors)
        if value:
            out.append((value, item))
    return out


def _parse_mirror(node: yaml.Node, where: str, errors: _Collector) -> MirrorEntry | None:
    if isinstance(node, yaml.ScalarNode):
        url = _string(node, where, errors)
        return MirrorEntry(url=url) if url else None
    items = _mapping_items(node, where, _MIRROR_KEYS, errors)
    if "url" not in items:
        if isinstance(node, yaml.MappingNode):
            errors.add(node, f"{where} needs a 'url'")
        return None
    url = _string(items["url"], f"{where}.url", errors)
    signed = True
    if "signed" in items:
        value = _scalar(items["signed"])
        if not isinstance(value, bool):
            errors.add(items["signed"], f"{where}.signed must be true or false")
        else:
            signed = value
    return MirrorEntry(url=url, signed=signed) if url else None


def _spack_mirrors(node: yaml.Node, errors: _Collector) -> list[MirrorEntry]:
    """``mirrors:`` written as in Spack's ``mirrors.yaml`` (``name: url | {fetch:, signed:}``)."""
    from cacheclient.mirrors.spackconfig import parse_spack_mirrors  # noqa: PLC0415

    found, problems = parse_spack_mirrors(_scalar(node), "mirrors")
    for problem in problems:
        errors.add(node, problem)
    return [MirrorEntry(url=m.url, signed=m.signed) for m in found]


def _spack_mirrors_file(
    path: str, source: str, node: yaml.Node, errors: _Collector
) -> list[MirrorEntry]:
    """The mirrors of a Spack ``mirrors.yaml`` (relative paths: from the manifest's folder)."""
    from pathlib import Path  # noqa: PLC0415

    from cacheclient.mirrors.spackconfig import load_spack_mirrors  # noqa: PLC0415

    found, problems = load_spack_mirrors(Path(source).parent / Path(path).expanduser())
    for problem in problems:
        errors.add(node, f"spack_mirrors: {problem}")
    return [MirrorEntry(url=m.url, signed=m.signed) for m in found]


def _parse_profile(
    node: yaml.Node,
    where: str,
    errors: _Collector,
    target_ok: Callable[[str], str | None],
) -> Profile | None:
    items = _mapping_items(node, where, _PROFILE_KEYS, errors)
    if not items:
        return None
    values: dict[str, str] = {}
    for key, value_node in items.items():
        value = _string(value_node, f"{where}.{key}", errors)
        if value is not None:
            values[key] = value
    for required in ("platform", "os", "target"):
        if required not in items:
            errors.add(node, f"{where} needs {required!r}")
    ok = True
    if "platform" in values and values["platform"] not in _PLATFORMS:
        errors.add(
            items["platform"],
            f"unknown platform {values['platform']!r}{_suggest(values['platform'], _PLATFORMS)}",
        )
        ok = False
    if "os" in values and values["os"] not in KNOWN_OSES:
        errors.add(
            items["os"],
            f"unknown OS {values['os']!r}{_suggest(values['os'], sorted(KNOWN_OSES))}",
        )
        ok = False
    if "target" in values:
        problem = target_ok(values["target"])
        if problem:
            errors.add(items["target"], problem)
            ok = False
    if "os_compat" in values and values["os_compat"] not in ("exact", "libc"):
        errors.add(items["os_compat"], f"{where}.os_compat must be 'exact' or 'libc'")
        ok = False
    if not ok or not all(k in values for k in ("platform", "os", "target")):
        return None
    return Profile(
        platform=values["platform"],
        os=values["os"],
        target=values["target"],
        os_compat=values.get("os_compat", "exact"),
        libc=values.get("libc"),
    )


def _archspec_target_problem(name: str) -> str | None:
    import archspec.cpu  # noqa: PLC0415 - archspec loads its JSON lazily; keep import cheap

    targets = archspec.cpu.TARGETS
    if name in targets:
        return None
    return f"unknown target {name!r}{_suggest(name, sorted(targets))}"


def _spec_problem(text: str) -> str | None:
    from cacheclient.resolution.spec import parse_request  # noqa: PLC0415 - avoid an import cycle

    try:
        parse_request(text)
    except CacheClientError as exc:
        return str(exc)
    return None


def parse_manifest_text(
    text: str,
    source: str,
    *,
    target_ok: Callable[[str], str | None] = _archspec_target_problem,
    spec_ok: Callable[[str], str | None] = _spec_problem,
) -> WarmManifest:
    """Parse and validate a warm manifest; raise ConfigError listing every problem."""
    errors = _Collector()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, [f"{line}invalid YAML: {problem}"]) from None
    if root is None:
        raise ConfigError(source, ["the manifest is empty"])
    top = _mapping_items(root, "the manifest", _TOP_KEYS, errors)

    mirrors: list[MirrorEntry] = []
    if "mirrors" in top:
        node = top["mirrors"]
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                entry = _parse_mirror(item, f"mirrors[{i}]", errors)
                if entry:
                    mirrors.append(entry)
        elif isinstance(node, yaml.MappingNode):  # Spack's mirrors.yaml shape
            mirrors += _spack_mirrors(node, errors)
        else:
            errors.add(node, "mirrors must be a list, or Spack's mapping of names to URLs")
    if "spack_mirrors" in top:
        path = _string(top["spack_mirrors"], "spack_mirrors", errors)
        if path:
            mirrors += _spack_mirrors_file(path, source, top["spack_mirrors"], errors)
    metadata = (
        [v for v, _ in _string_list(top["metadata"], "metadata", errors)]
        if ("metadata" in top)
        else []
    )
    if not mirrors and not metadata and isinstance(root, yaml.MappingNode):
        errors.add(root, "name at least one mirror (mirrors:) or page (metadata:)")
    mirror_base = (
        _string(top["mirror_base"], "mirror_base", errors) if "mirror_base" in top else None
    )

    profiles: list[Profile] = []
    if "profiles" in top:
        node = top["profiles"]
        if isinstance(node, yaml.SequenceNode) and node.value:
            for i, item in enumerate(node.value):
                profile = _parse_profile(item, f"profiles[{i}]", errors, target_ok)
                if profile:
                    profiles.append(profile)
        else:
            errors.add(node, "profiles must be a non-empty list")

    specs: list[str] = []
    if "specs" in top:
        for i, (text_spec, node) in enumerate(_string_list(top["specs"], "specs", errors)):
            problem = spec_ok(text_spec)
            if problem:
                errors.add(node, f"specs[{i}]: {problem}")
            else:
                specs.append(text_spec)
    elif isinstance(root, yaml.MappingNode):
        errors.add(root, "the manifest needs 'specs'")
    if errors.problems:
        raise ConfigError(source, errors.problems)
    return WarmManifest(
        source=source,
        mirrors=tuple(mirrors),
        metadata=tuple(metadata),
        mirror_base=mirror_base,
        profiles=tuple(profiles),
        specs=tuple(specs),
    )
