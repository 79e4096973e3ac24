"""Which profile of a lock a host installs: the best one it can run, chosen before any download.

A lock holds one profile per host the warm run was asked for (``platform-os-target``). A host
that is exactly one of them takes it. Otherwise the profiles the host can run are ranked as the
resolver ranks builds: same platform required; the same OS first, else (with ``--os-compat
libc``) an OS whose C library the host's can run; then the target closest to the host's in its
archspec ancestry (``x86_64_v4`` runs ``x86_64_v3`` before ``x86_64_v2``). ``--profile NAME``
picks one by name instead. When no profile fits, the error says why for each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cacheclient.ci.lock import LockedProfile
from cacheclient.errors import NoMatchError, UsageError
from cacheclient.resolution.compat import compatible_targets, libc_for_os, libc_version_ok
from cacheclient.resolution.host import HostProfile, format_libc, parse_libc

__all__ = ["ProfileChoice", "choose_profile"]


def __dir__() -> list[str]:
    return __all__


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileChoice:
    """The chosen profile and, when it is not the host exactly, why it was taken."""

    locked: LockedProfile
    exact: bool
    reason: str


def _why_not(locked: LockedProfile, host: HostProfile, os_compat: str) -> str | None:
    p = locked.profile
    if p.platform != host.platform:
        return f"platform {p.platform}, host is {host.platform}"
    if p.target not in compatible_targets(host.target):
        return f"target {p.target} does not run on {host.target}"
    if p.os != host.os:
        if os_compat != "libc":
            return f"OS {p.os}, host is {host.os} (--os-compat libc would accept a compatible libc)"
        build = parse_libc(p.libc, source="lock profile libc") if p.libc else libc_for_os(p.os)
        have = host.libc or libc_for_os(host.os)
        if build is None or have is None:
            return f"OS {p.os}: cannot tell whether its libc runs on {host.os}"
        if not libc_version_ok(build, have):
            return f"OS {p.os} needs {format_libc(build)}, host has {format_libc(have)}"
    return None


def choose_profile(
    profiles: Sequence[LockedProfile],
    host: HostProfile,
    *,
    os_compat: str = "exact",
    name: str | None = None,
    source: str = "lock",
) -> ProfileChoice:
    """The profile of *profiles* to install on *host* (see the module docstring).

    :raises UsageError: *name* names no profile.
    :raises NoMatchError: no profile runs on the host (the message says why for each).
    """
    labels = [p.profile.label() for p in profiles]
    if name is not None:
        for locked in profiles:
            if locked.profile.label() == name:
                problem = _why_not(locked, host, os_compat)
                reason = "chosen with --profile"
                if problem is not None:
                    reason += f" (this host may not run it: {problem})"
                return ProfileChoice(locked=locked, exact=False, reason=reason)
        raise UsageError(f"{source}: no profile {name!r} (it has {', '.join(labels) or 'none'})")
    for locked in profiles:
        p = locked.profile
        if (p.platform, p.os, p.target) == (host.platform, host.os, host.target):
            return ProfileChoice(locked=locked, exact=True, reason="the host's own profile")
    ranks = {t: i for i, t in enumerate(compatible_targets(host.target))}
    usable: list[tuple[tuple[int, int, str], LockedProfile]] = []
    rejected: list[str] = []
    for locked in profiles:
        problem = _why_not(locked, host, os_compat)
        if problem is not None:
            rejected.append(f"{locked.profile.label()}: {problem}")
            continue
        p = locked.profile
        usable.append(((0 if p.os == host.os else 1, ranks[p.target], p.label()), locked))
    host_label = f"{host.platform}-{host.os}-{host.target}"
    if not usable:
        raise NoMatchError(
            f"{source}: no profile runs on this host {host_label} ("
            + "; ".join(rejected)
            + "); pass --profile NAME, or --platform/--os/--target"
        )
    usable.sort(key=lambda item: item[0])
    locked = usable[0][1]
    p = locked.profile
    why = [f"the host is {host_label}"]
    if p.target != host.target:
        why.append(f"{p.target} is the closest target it runs")
    if p.os != host.os:
        why.append(f"{p.os}'s libc runs on {host.os}")
    return ProfileChoice(locked=locked, exact=False, reason="; ".join(why))
