"""The host profile: platform, OS (Spack's naming), microarchitecture and libc.

Everything here is pure except the ``probe_*`` functions and :func:`detect_host` with no
arguments, which read ``/etc/os-release``, ``/proc/cpuinfo`` and the C library of the running
machine. Every other function takes the facts as text, so tests replay recorded hosts.

Target detection follows archspec's rule (FORMATS §9.2) on archspec's own data
(``archspec.cpu.TARGETS``): read the first processor block of ``/proc/cpuinfo``, keep the known
targets of the machine's family that the CPU can run, take the best generic one, then the
deepest vendor target that descends from it (narrowed by ``CPU part`` on AArch64).
"""

from __future__ import annotations

import os
import platform as _platform
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import archspec.cpu

from cacheclient.errors import UsageError
from cacheclient.model import Libc

__all__ = [
    "HostProfile",
    "ProcessorFacts",
    "detect_host",
    "detect_target",
    "format_libc",
    "infer_family",
    "os_from_os_release",
    "parse_cpuinfo",
    "parse_libc",
    "parse_os_release",
    "probe_libc",
    "validate_target",
]


def __dir__() -> list[str]:
    return __all__


@dataclass(frozen=True, kw_only=True, slots=True)
class HostProfile:
    """What a build must be compatible with. ``libc`` is None when unknown (e.g. macOS)."""

    platform: str
    os: str
    target: str
    libc: Libc | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "os": self.os,
            "target": self.target,
            "libc": None
            if self.libc is None
            else {"name": self.libc.name, "version": self.libc.version},
        }

    def __str__(self) -> str:
        libc = f" {format_libc(self.libc)}" if self.libc else ""
        return f"{self.platform}-{self.os}-{self.target}{libc}"


# --------------------------------------------------------------------------- OS naming

_NORMALIZED_ID = {"ol": "oracle", "opensuse-leap": "opensuse"}
_PRETTY_VERSION = re.compile(r"^(?P<name>.*\S)\s+(?P<version>\d[\w.+-]*)\s*(?:\([^)]*\))?\s*$")
_MACOS_NAMES = {
    "10.15": "catalina",
    "11": "bigsur",
    "12": "monterey",
    "13": "ventura",
    "14": "sonoma",
    "15": "sequoia",
    "26": "tahoe",
}


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` pairs of an os-release file (shell quoting honoured, comments skipped)."""
    import shlex  # noqa: PLC0415 - only when the OS is probed or a text is given

    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value, posix=True)
        except ValueError:
            words = [value.strip().strip("\"'")]
        values[key.strip()] = " ".join(words)
    return values


def os_from_os_release(text: str, *, glibc_version: str | None = None) -> str:
    """Spack's OS name for a host whose ``/etc/os-release`` is *text* (MANIFEST §3a).

    *glibc_version* only matters for openSUSE Tumbleweed, whose name embeds it.

    >>> os_from_os_release('ID="ol"\\nVERSION_ID="7.5"\\n')
    'oracle7'
    """
    fields = parse_os_release(text)
    distname = fields.get("ID", "").lower().replace(" ", "_")
    distname = _NORMALIZED_ID.get(distname, distname)
    version = fields.get("VERSION_ID", "")
    if not version:
        m = _PRETTY_VERSION.match(fields.get("PRETTY_NAME", ""))
        version = m.group("version") if m else ""
    parts = re.split(r"[^\w-]", version)
    if "ubuntu" in distname:
        version = ".".join(parts[0:2])
    elif "opensuse-tumbleweed" in distname or "opensusetumbleweed" in distname:
        distname = "opensuse"
        version = "tumbleweed" + (glibc_version or parts[0])
    else:
        version = parts[0]
    return distname.replace("-", "_") + version.replace("-", "_")


def macos_name(release: str) -> str:
    """Spack's name for a macOS release (``14.5`` → ``sonoma``)."""
    major = release.split(".", maxsplit=1)[0]
    key = ".".join(release.split(".")[:2]) if major == "10" else major
    return _MACOS_NAMES.get(key, f"macos{major}")


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessorFacts:
    """What ``/proc/cpuinfo`` says about the first processor, in archspec's terms."""

    family: str
    vendor: str = "generic"
    features: frozenset[str] = frozenset()
    generation: int = 0
    cpu_part: str = ""
    name: str = ""


def _first_block(text: str) -> dict[str, str]:
    data: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if data:
                break
            continue
        data[key.strip()] = value.strip()
    return data


def _riscv_name(data: Mapping[str, str]) -> str:
    family_targets = [t for t in archspec.cpu.TARGETS.values() if t.family.name == "riscv64"]
    uarch = data.get("uarch", "")
    if uarch:
        model = uarch.split(",")[-1].lower()
        squeezed = re.sub(r"[^a-z0-9_]", "", model)
        for candidate in (model, squeezed):
            if any(t.name == candidate for t in family_targets):
                return candidate
        return squeezed or "riscv64"
    # No ``uarch`` line: match "<Vendor>(R) <Model>" against targets of that vendor.
    words = set(re.findall(r"[a-z0-9_]+", data.get("model name", "").lower()))
    for t in sorted(family_targets, key=lambda t: t.name):
        vendor = re.sub(r"[^a-z0-9]", "", t.vendor.lower())
        if t.vendor != "generic" and vendor in words and t.name.lower() in words:
            return str(t.name)
    return "riscv64"


def parse_cpuinfo(text: str, family: str) -> ProcessorFacts:
    """The facts archspec needs from a ``/proc/cpuinfo`` text, for a machine of *family*."""
    data = _first_block(text)
    if family == "x86_64":
        features = set(data.get("flags", "").split())
        if "ssse3" in features:  # Linux does not list sse3; ssse3 implies it
            features.add("sse3")
        return ProcessorFacts(
            family=family, vendor=data.get("vendor_id", "generic"), features=frozenset(features)
        )
    if family == "aarch64":
        vendor = "generic"
        if "CPU implementer" in data:
            code = data["CPU implementer"]
            vendor = _arm_vendors().get(code, code)
        return ProcessorFacts(
            family=family,
            vendor=vendor,
            features=frozenset(data.get("Features", "").split()),
            cpu_part=data.get("CPU part", ""),
        )
    if family in ("ppc64", "ppc64le"):
        m = re.search(r"POWER(\d+)", data.get("cpu", ""))
        return ProcessorFacts(family=family, generation=int(m.group(1)) if m else 0)
    if family == "riscv64":
        return ProcessorFacts(family=family, name=_riscv_name(data))
    return ProcessorFacts(family=family)


def _arm_vendors() -> dict[str, str]:
    from archspec.cpu.schema import TARGETS_JSON  # noqa: PLC0415  (archspec's data table)

    table = TARGETS_JSON["conversions"]["arm_vendors"]
    return {str(k): str(v) for k, v in table.items()}


def _compatible(facts: ProcessorFacts, target: Any) -> bool:
    if target.family.name != facts.family:
        return False
    if facts.family == "x86_64":
        return target.vendor in (facts.vendor, "generic") and target.features <= facts.features
    if facts.family == "aarch64":
        if target.vendor == "generic" and target.name != "aarch64":
            return False
        return target.vendor in (facts.vendor, "generic") and target.features <= facts.features
    if facts.family in ("ppc64", "ppc64le"):
        return bool(target.generation <= facts.generation)
    if facts.family == "riscv64":
        return bool(target.name == facts.name or target.vendor == "generic")
    return bool(target.name == facts.family)


def infer_family(cpuinfo: str) -> str | None:
    """The machine family a ``/proc/cpuinfo`` text comes from, or None when it does not say.

    x86 lists ``vendor_id`` and ``flags``; AArch64 ``CPU implementer`` and ``Features``; RISC-V
    ``isa : rv64...``; POWER ``cpu : POWERn``. The file does not record POWER's byte order:
    POWER8 and later are taken as ``ppc64le`` (every current Linux distribution for them),
    earlier ones as ``ppc64``; pass the family explicitly for a big-endian POWER8+ host.
    """
    keys: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            keys.setdefault(key.strip().lower(), value.strip())
    if "vendor_id" in keys or ("flags" in keys and "model name" in keys):
        return "x86_64"
    if "cpu implementer" in keys or ("features" in keys and "cpu architecture" in keys):
        return "aarch64"
    power = re.match(r"POWER(\d+)", keys.get("cpu", ""), re.IGNORECASE)
    if power:
        return "ppc64le" if int(power.group(1)) >= 8 else "ppc64"
    if keys.get("isa", "").lower().startswith("rv64"):
        return "riscv64"
    return None


def detect_target(cpuinfo: str, family: str) -> str:
    """The archspec target name for a ``/proc/cpuinfo`` text of a *family* machine.

    *family* is the machine type (``x86_64``, ``aarch64``, ``ppc64le``, ``ppc64``, ``riscv64``);
    an unknown family gives the family name itself.
    """
    facts = parse_cpuinfo(cpuinfo, family)
    candidates = [t for t in archspec.cpu.TARGETS.values() if _compatible(facts, t)]
    if not candidates:
        return family

    def depth(t: Any) -> tuple[int, int, str]:
        return (len(t.ancestors), len(t.features), t.name)

    generics = [t for t in candidates if t.vendor == "generic"]
    if not generics:
        return family
    best_generic = max(generics, key=depth)
    if facts.cpu_part and any(t.cpu_part == facts.cpu_part for t in candidates):
        candidates = [t for t in candidates if t.cpu_part == facts.cpu_part]
    better = [t for t in candidates if t > best_generic]
    return str(max(better, key=depth).name if better else best_generic.name)


def validate_target(name: str) -> str:
    """*name* if archspec knows it; :class:`UsageError` listing near names otherwise."""
    if name in archspec.cpu.TARGETS:
        return name
    import difflib  # noqa: PLC0415 - only for the error

    near = difflib.get_close_matches(name, sorted(archspec.cpu.TARGETS), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise UsageError(f"unknown target {name!r} (not an archspec microarchitecture){hint}")


# --------------------------------------------------------------------------- libc


def parse_libc(text: str, *, source: str = "--libc") -> Libc:
    """``glibc@2.39``, ``glibc 2.39``, ``glibc=2.39`` or ``musl@1.2.4`` → :class:`Libc`."""
    m = re.fullmatch(r"\s*([A-Za-z][\w-]*)\s*[@ =]\s*=?(\d[\w.]*)\s*", text)
    if m is None:
        raise UsageError(f"{source}: invalid libc {text!r}; expected NAME@VERSION, e.g. glibc@2.39")
    return Libc(name=m.group(1).lower(), version=m.group(2))


def format_libc(libc: Libc) -> str:
    return f"{libc.name}@{libc.version}"


def probe_libc() -> Libc | None:
    """The running host's C library, or None when it cannot be told (not Linux, no ldd)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        value = None
    if value:
        name, _, version = value.partition(" ")
        if name == "glibc" and version:
            return Libc(name="glibc", version=version)
    try:
        proc = subprocess.run(
            ["ldd", "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = proc.stdout + proc.stderr
    m = re.search(r"ldd \(.*\) (\d+\.\d+)", out)
    if m:
        return Libc(name="glibc", version=m.group(1))
    m = re.search(r"musl libc.*?Version (\d[\w.]*)", out, re.DOTALL)
    if m:
        return Libc(name="musl", version=m.group(1))
    return None


# --------------------------------------------------------------------------- the profile


def _machine_family() -> str:
    machine = _platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def probe_platform() -> str:
    return "darwin" if sys.platform == "darwin" else "linux"


def probe_os() -> str:
    if sys.platform == "darwin":
        return macos_name(_platform.mac_ver()[0])
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        libc = probe_libc()
        return os_from_os_release(text, glibc_version=libc.version if libc else None)
    return "unknown"


def probe_target() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return str(archspec.cpu.host().name)
    return detect_target(text, _machine_family())


def detect_host(
    *,
    cpuinfo: str | None = None,
    os_release: str | None = None,
    family: str | None = None,
    platform: str | None = None,
    libc: Libc | None = None,
    probe: bool = True,
) -> HostProfile:
    """A profile from the given texts; whatever is not given is probed when *probe* is true.

    With ``probe=False`` a missing text gives ``unknown`` OS / the family as target and no libc.
    The family of a *cpuinfo* text is read from the text (:func:`infer_family`) unless given.
    """
    inferred = infer_family(cpuinfo) if cpuinfo is not None and family is None else None
    fam = family or inferred or _machine_family()
    if cpuinfo is not None:
        target = detect_target(cpuinfo, fam)
    else:
        target = probe_target() if probe else fam
    if os_release is not None:
        host_os = os_from_os_release(os_release, glibc_version=libc.version if libc else None)
    else:
        host_os = probe_os() if probe else "unknown"
    if libc is None and probe:
        libc = probe_libc()
    return HostProfile(
        platform=platform or (probe_platform() if probe else "linux"),
        os=host_os,
        target=target,
        libc=libc,
    )
