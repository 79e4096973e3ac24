"""Settings, resolved once per command: flags > ``CACHECLIENT_*`` environment > config file >
defaults (:func:`settings_from_args`, :func:`host_from_args`, :func:`store_from_option`).

The user configuration file (YAML): host overrides, mirrors, store, mirror base, jobs.

Location: ``CACHECLIENT_CONFIG`` if set, else ``<user config dir>/cacheclient/config.yaml``
(platformdirs). A missing file is an empty configuration. Example::

    platform: linux
    os: ubuntu24.04
    target: x86_64_v3
    libc: glibc@2.39
    os_compat: libc
    mirrors: [https://binaries.spack.io/develop]   # or Spack's {name: url | {fetch:, signed:}}
    spack_mirrors: ~/.spack/mirrors.yaml            # and/or Spack's own file, read as is
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

from cacheclient.errors import ConfigError, UsageError
from cacheclient.fetch import DEFAULT_MIRROR_BASE
from cacheclient.model import Libc
from cacheclient.pipeline import Settings
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
    "Setting",
    "Settings",
    "config_path",
    "effective_settings",
    "host_from_args",
    "load_config",
    "normalise_mirror",
    "parse_config",
    "settings_from_args",
    "store_from_option",
]


def __dir__() -> list[str]:
    return __all__


_STRING_KEYS = ("platform", "os", "target", "libc", "os_compat", "store", "mirror_base")
_KEYS = frozenset({*_STRING_KEYS, "mirrors", "spack_mirrors", "jobs"})


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
    unsigned_mirrors: tuple[str, ...] = ()
    """Mirrors configured ``signed: false`` (their builds need no signature)."""
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
    values.update(_mirrors(data, source, problems))
    jobs = data.get("jobs")
    if jobs is not None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            problems.append("jobs: must be a positive integer")
        else:
            values["jobs"] = jobs
    if problems:
        raise ConfigError(source, problems)
    return Config(source=source, **values)


def _mirrors(data: Mapping[str, Any], source: str, problems: list[str]) -> dict[str, Any]:
    """``mirrors:`` in any accepted spelling, then the mirrors of ``spack_mirrors: FILE``
    (a path relative to the configuration file's folder)."""
    from cacheclient.mirrors.spackconfig import (  # noqa: PLC0415
        load_spack_mirrors,
        parse_mirror_list,
    )

    entries = []
    if data.get("mirrors") is not None:
        found, bad = parse_mirror_list(data["mirrors"], "mirrors")
        entries += found
        problems += bad
    spack_file = data.get("spack_mirrors")
    if spack_file is not None:
        if not isinstance(spack_file, str):
            problems.append("spack_mirrors: must be the path of a Spack mirrors.yaml")
        else:
            path = Path(spack_file).expanduser()
            found, bad = load_spack_mirrors(Path(source).parent / path)
            entries += found
            problems += [f"spack_mirrors: {p}" for p in bad]
    if not entries:
        return {}
    urls = tuple(dict.fromkeys(e.url for e in entries))
    unsigned = tuple(dict.fromkeys(e.url for e in entries if not e.signed))
    return {"mirrors": urls, "unsigned_mirrors": unsigned}


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


def normalise_mirror(url: str) -> str:
    """Absolute path for a local directory given as a relative path; URLs unchanged."""
    if "://" in url:
        return url.rstrip("/")
    return str(Path(url).expanduser().absolute())


def _jobs(value: Any, source: str) -> int:
    try:
        jobs = int(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{source} must be a positive integer, not {value!r}") from None
    if jobs < 1:
        raise UsageError(f"{source} must be a positive integer, not {jobs}")
    return jobs


def settings_from_args(
    args: Any, *, environ: Mapping[str, str] | None = None, config: Config | None = None
) -> Settings:
    """The :class:`~cacheclient.pipeline.Settings` for a command's parsed options.

    Each value: the flag, else its ``CACHECLIENT_*`` variable, else the config file, else the
    default (README, "Configuration"). Mirrors come from ``--mirror`` (or the config file when
    no ``--mirror`` and no ``--metadata`` is given).
    """
    env = os.environ if environ is None else environ
    cfg = config if config is not None else load_config(environ=env)

    def pick(flag: str, var: str | None, key: str) -> Any:
        value = getattr(args, flag, None)
        if value not in (None, "", [], ()):
            return value
        if var is not None and env.get(var):
            return env[var]
        return getattr(cfg, key, None)

    metadata = tuple(getattr(args, "metadata", None) or ())
    mirrors = tuple(normalise_mirror(m) for m in (getattr(args, "mirror", None) or ()))
    unsigned: tuple[str, ...] = ()
    if not mirrors and not metadata:
        mirrors = tuple(normalise_mirror(m) for m in cfg.mirrors)
        unsigned = tuple(normalise_mirror(m) for m in cfg.unsigned_mirrors)
    jobs_flag = getattr(args, "jobs", None)
    jobs_value = pick("jobs", "CACHECLIENT_JOBS", "jobs")
    jobs_source = "--jobs" if jobs_flag is not None else "jobs"
    os_compat = pick("os_compat", "CACHECLIENT_OS_COMPAT", "os_compat") or "exact"
    if os_compat not in ("exact", "libc"):
        raise UsageError(f"os_compat must be 'exact' or 'libc', not {os_compat!r}")
    store = pick("store", "CACHECLIENT_STORE", "store")
    root = getattr(args, "root", None) or env.get("CACHECLIENT_ROOT")
    return Settings(
        mirrors=mirrors,
        metadata=metadata,
        store=Path(store).expanduser() if store else None,
        root=Path(os.path.abspath(Path(root).expanduser())) if root else None,
        mirror_base=str(pick("mirror_base", "CACHECLIENT_MIRROR_BASE", "mirror_base") or "")
        or DEFAULT_MIRROR_BASE,
        jobs=_jobs(jobs_value, jobs_source) if jobs_value is not None else 8,
        os_compat=os_compat,
        allow_unsigned=bool(getattr(args, "allow_unsigned", False)),
        offline=bool(getattr(args, "offline", False)),
        unsigned_mirrors=unsigned,
        projection=getattr(args, "projection", None) or Settings().projection,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Setting:
    """One effective setting: its value and where it came from (``cacheclient config``)."""

    key: str
    value: Any
    source: str
    """``--flag``, ``env NAME``, ``config PATH``, ``default`` or ``probed``."""
    env: str | None = None
    """The environment variable that sets it, if any."""

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "source": self.source, "env": self.env}


def effective_settings(
    args: Any = None, *, environ: Mapping[str, str] | None = None
) -> list[Setting]:
    """Every setting a command would use, with its source: flag > env > config file > default.

    *args* is an argparse namespace (any attribute may be missing). Host fields nobody set are
    probed, as every command does.
    """
    from cacheclient.installation import default_root  # noqa: PLC0415
    from cacheclient.transport import TransportOptions  # noqa: PLC0415

    env = os.environ if environ is None else environ
    path = config_path(env)
    config = load_config(path, environ=env)
    where = f"config {path}"
    out: list[Setting] = [
        Setting(
            key="config",
            value=str(path),
            source="env CACHECLIENT_CONFIG" if env.get("CACHECLIENT_CONFIG") else "default",
            env="CACHECLIENT_CONFIG",
        )
    ]

    def pick(key: str, flag: str | None, var: str | None, default: Any, attr: str = "") -> None:
        given = getattr(args, attr or key, None) if args is not None and flag else None
        if given not in (None, "", [], ()):
            out.append(Setting(key=key, value=given, source=flag or "", env=var))
        elif var and env.get(var):
            out.append(Setting(key=key, value=env[var], source=f"env {var}", env=var))
        elif getattr(config, key, None) not in (None, (), ""):
            value = getattr(config, key)
            value = list(value) if isinstance(value, tuple) else value
            out.append(Setting(key=key, value=value, source=where, env=var))
        else:
            out.append(Setting(key=key, value=default, source="default", env=var))

    probed = probe_host_fields()
    for key, attr, var in (
        ("platform", "platform", "CACHECLIENT_PLATFORM"),
        ("os", "host_os", "CACHECLIENT_OS"),
        ("target", "target", "CACHECLIENT_TARGET"),
        ("libc", "libc", "CACHECLIENT_LIBC"),
    ):
        pick(key, f"--{key}", var, probed.get(key), attr)
        if out[-1].source == "default":
            out[-1] = Setting(key=key, value=probed.get(key), source="probed", env=var)
    pick("os_compat", "--os-compat", "CACHECLIENT_OS_COMPAT", "exact")
    pick("mirrors", "--mirror", None, [], "mirror")
    pick("mirror_base", "--mirror-base", "CACHECLIENT_MIRROR_BASE", DEFAULT_MIRROR_BASE)
    store_default = str(Path(platformdirs.user_cache_dir("cacheclient")) / "store")
    pick("store", "--store", "CACHECLIENT_STORE", store_default)
    root_default = str(default_root()) if not env.get("CACHECLIENT_ROOT") else None
    pick("root", "--root", "CACHECLIENT_ROOT", root_default)
    pick("jobs", "--jobs", "CACHECLIENT_JOBS", 8)
    pick("projection", "--projection", None, Settings().projection)
    defaults = TransportOptions()
    for key, var, default in (
        ("connect_timeout", "CACHECLIENT_CONNECT_TIMEOUT", defaults.connect_timeout),
        ("read_timeout", "CACHECLIENT_READ_TIMEOUT", defaults.read_timeout),
        ("retries", "CACHECLIENT_RETRIES", defaults.attempts),
    ):
        pick(key, None, var, default)
    pick("debug", None, "CACHECLIENT_DEBUG", False)
    return out


def probe_host_fields() -> dict[str, str]:
    """This machine's platform, OS, target and libc as strings (probed, no overrides)."""
    libc = probe_libc()
    return {
        "platform": probe_platform(),
        "os": probe_os(),
        "target": probe_target(),
        "libc": f"{libc.name}@{libc.version}" if libc is not None else "unknown",
    }
