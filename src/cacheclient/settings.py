"""The user configuration file (YAML): host overrides, mirrors, store, mirror base, jobs.

Location: ``CACHECLIENT_CONFIG`` if set, else ``<user config dir>/cacheclient/config.yaml``
(platformdirs). A missing file is an empty configuration. Example::

    platform: linux
    os: ubuntu24.04
    target: x86_64_v3
    libc: glibc@2.39
    os_compat: libc
    mirrors: [https://binaries.spack.io/develop]
    store: ~/spack-store
    mirror_base: https://binaries.spack.io/develop
    jobs: 8

Unknown keys and wrong types are reported together in one :class:`ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from cacheclient.errors import ConfigError
from cacheclient.model import Libc
from cacheclient.resolution.compat import libc_for_os
from cacheclient.resolution.host import (
    HostProfile,
    parse_libc,
    probe_libc,
    probe_os,
    probe_platform,
    probe_target,
    validate_target,
)
from cacheclient.store import Store

__all__ = [
    "Config",
    "config_path",
    "host_from_args",
    "load_config",
    "parse_config",
    "store_from_option",
]


def __dir__() -> list[str]:
    return __all__


_STRING_KEYS = ("platform", "os", "target", "libc", "os_compat", "store", "mirror_base")
_KEYS = frozenset({*_STRING_KEYS, "mirrors", "jobs"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """The parsed configuration; every field is optional."""

    source: str = "(no config file)"
    platform: str | None = None
    os: str | None = None
    target: str | None = None
    libc: str | None = None
    os_compat: str | None = None
    mirrors: tuple[str, ...] = ()
    store: str | None = None
    mirror_base: str | None = None
    jobs: int | None = None


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("CACHECLIENT_CONFIG"):
        return Path(env["CACHECLIENT_CONFIG"])
    return Path(platformdirs.user_config_dir("cacheclient")) / "config.yaml"


def parse_config(text: str, source: str) -> Config:
    """Parse the YAML *text* of a configuration file named *source*."""
    import yaml  # noqa: PLC0415 - only when there is a configuration file (fast startup)

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(source, [f"{where}not valid YAML"]) from None
    if data is None:
        return Config(source=source)
    if not isinstance(data, dict):
        raise ConfigError(source, ["the top level must be a mapping of keys to values"])
    problems: list[str] = []
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        problems.append(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_KEYS))})"
        )
    values: dict[str, Any] = {}
    for key in _STRING_KEYS:
        if key in data and data[key] is not None:
            if not isinstance(data[key], str):
                problems.append(f"{key}: must be a string")
            else:
                values[key] = data[key]
    if values.get("os_compat") not in (None, "exact", "libc"):
        problems.append(f"os_compat: must be 'exact' or 'libc', not {values['os_compat']!r}")
    mirrors = data.get("mirrors")
    if mirrors is not None:
        if isinstance(mirrors, str):
            mirrors = [mirrors]
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            problems.append("mirrors: must be a list of URLs")
        else:
            values["mirrors"] = tuple(mirrors)
    jobs = data.get("jobs")
    if jobs is not None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            problems.append("jobs: must be a positive integer")
        else:
            values["jobs"] = jobs
    if problems:
        raise ConfigError(source, problems)
    return Config(source=source, **values)


def load_config(path: Path | None = None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read the configuration file; a missing file gives an empty :class:`Config`."""
    target = path if path is not None else config_path(environ)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(str(target), [f"cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(target), ["not UTF-8 text"]) from None
    return parse_config(text, str(target))


def host_from_args(args: Any, *, environ: Mapping[str, str] | None = None) -> HostProfile:
    """The profile for a command: CLI flags > ``CACHECLIENT_*`` env > config file > probe.

    *args* is an argparse namespace with ``platform``, ``host_os``, ``target`` and ``libc``
    (any may be missing or None). Probing happens only for fields nobody set.
    """
    env = os.environ if environ is None else environ
    config = load_config(environ=env)

    def pick(arg: str, var: str, key: str) -> tuple[str, str] | None:
        value = getattr(args, arg, None)
        if value:
            return str(value), f"--{key}"
        if env.get(var):
            return env[var], var
        cfg = getattr(config, key)
        if cfg:
            return str(cfg), f"{config.source}: {key}"
        return None

    plat = pick("platform", "CACHECLIENT_PLATFORM", "platform")
    host_os = pick("host_os", "CACHECLIENT_OS", "os")
    target = pick("target", "CACHECLIENT_TARGET", "target")
    libc_given = pick("libc", "CACHECLIENT_LIBC", "libc")
    if target is not None:
        validate_target(target[0])
    if libc_given:
        libc: Libc | None = parse_libc(libc_given[0], source=libc_given[1])
    elif host_os is not None:
        # A host described by name: its libc is the one that OS ships, not ours.
        libc = libc_for_os(host_os[0])
    else:
        libc = probe_libc()
    return HostProfile(
        platform=plat[0] if plat else probe_platform(),
        os=host_os[0] if host_os else probe_os(),
        target=target[0] if target else probe_target(),
        libc=libc,
    )


def store_from_option(value: str | None) -> Store:
    """The store named by ``--store``, else ``CACHECLIENT_STORE``, else config ``store``, else
    the user cache directory."""
    if value:
        return Store(Path(value))
    if not os.environ.get("CACHECLIENT_STORE"):
        configured = load_config().store
        if configured:
            return Store(Path(configured))
    return Store()
