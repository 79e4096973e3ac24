"""Host compatibility: which targets and OSes a host can run, and a ranking selector.

All functions are pure: they take the host's target, OS and libc as arguments.

* Targets: a host runs builds for its own target and for its archspec ancestors, never for a
  descendant or another vendor's line (FORMATS §8.3). :func:`compatible_targets` gives them best
  first, in archspec's ancestor order, as Spack weighs them.
* OS under ``--os-compat libc``: a build is usable when its libc is the host's and not newer.
  The build's own libc node decides when the metadata has one; otherwise :data:`OS_GLIBC`.
* :func:`create_compatible_targets_selector` has the shape of ``packaging.tags``'
  ``create_compatible_tags_selector``: rank by first occurrence, drop what matches nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import archspec.cpu

from cacheclient.model import Libc
from cacheclient.resolution.versions import Version

__all__ = [
    "OS_GLIBC",
    "compatible_targets",
    "create_compatible_targets_selector",
    "libc_for_os",
    "libc_version_ok",
    "target_ranks",
    "why_not_target",
]


def __dir__() -> list[str]:
    return __all__


T = TypeVar("T")

OS_GLIBC: dict[str, str] = {
    # Ubuntu LTS
    "ubuntu20.04": "2.31",
    "ubuntu22.04": "2.35",
    "ubuntu24.04": "2.39",
    # Debian
    "debian10": "2.28",
    "debian11": "2.31",
    "debian12": "2.36",
    "debian13": "2.41",
    # Enterprise Linux and rebuilds
    **{f"{d}7": "2.17" for d in ("rhel", "centos", "rocky", "almalinux", "oracle")},
    **{f"{d}8": "2.28" for d in ("rhel", "centos", "rocky", "almalinux", "oracle")},
    **{f"{d}9": "2.34" for d in ("rhel", "centos", "rocky", "almalinux", "oracle")},
    **{f"{d}10": "2.39" for d in ("rhel", "centos", "rocky", "almalinux", "oracle")},
    # Amazon Linux
    "amzn2": "2.26",
    "amzn2023": "2.34",
    # SUSE (15 SP3 to SP5 / Leap 15.3 to 15.5 ship 2.31)
    "sles15": "2.31",
    "opensuse15": "2.31",
    # Fedora
    "fedora38": "2.37",
    "fedora39": "2.38",
    "fedora40": "2.39",
    "fedora41": "2.40",
    "fedora42": "2.41",
}
"""The glibc version each distribution release ships (used when a build has no libc node)."""


def libc_for_os(os_name: str) -> Libc | None:
    """The libc *os_name* ships, or None if the table does not know it."""
    version = OS_GLIBC.get(os_name)
    return None if version is None else Libc(name="glibc", version=version)


def libc_version_ok(build: Libc, host: Libc) -> bool:
    """Whether a build linked against *build* runs with *host*'s libc (same name, not newer)."""
    if build.name != host.name:
        return False
    try:
        return Version.parse(build.version) <= Version.parse(host.version)
    except ValueError:
        return False


def compatible_targets(host_target: str) -> list[str]:
    """``[host] + ancestors`` in archspec order (best first); just ``[host]`` if unknown.

    >>> compatible_targets("x86_64_v3")
    ['x86_64_v3', 'x86_64_v2', 'x86_64']
    """
    uarch = archspec.cpu.TARGETS.get(host_target)
    if uarch is None:
        return [host_target]
    return [host_target, *(str(a.name) for a in uarch.ancestors)]


def target_ranks(targets: Sequence[str]) -> dict[str, int]:
    """Rank of each target: its first position in *targets* (0 is best)."""
    ranks: dict[str, int] = {}
    for i, name in enumerate(targets):
        ranks.setdefault(name, i)
    return ranks


def create_compatible_targets_selector(
    targets: Sequence[str],
) -> Callable[[Iterable[tuple[T, str]]], Iterator[T]]:
    """A function that orders ``(item, target)`` pairs best first and drops incompatible ones.

    Ties keep their input order (the sort is stable); callers that need an order independent of
    the input break ties themselves.

    >>> select = create_compatible_targets_selector(["haswell", "x86_64_v3", "x86_64"])
    >>> list(select([("a", "x86_64"), ("b", "zen2"), ("c", "haswell")]))
    ['c', 'a']
    """
    ranks = target_ranks(targets)

    def selector(candidates: Iterable[tuple[T, str]]) -> Iterator[T]:
        ranked = [(ranks[t], i, item) for i, (item, t) in enumerate(candidates) if t in ranks]
        ranked.sort(key=lambda entry: (entry[0], entry[1]))
        return (item for _, _, item in ranked)

    return selector


def _family(uarch: Any) -> str:
    return str(uarch.family.name)


def why_not_target(build_target: str, host_target: str) -> str | None:
    """None if *host_target* runs *build_target* builds, else a sentence saying why not.

    >>> why_not_target("x86_64_v4", "x86_64_v3").startswith("target x86_64_v4 needs avx512bw")
    True
    """
    if build_target in compatible_targets(host_target):
        return None
    targets = archspec.cpu.TARGETS
    build = targets.get(build_target)
    host = targets.get(host_target)
    if build is None:
        return f"target {build_target} is unknown to archspec, so no host is known to run it"
    if host is None:
        return f"host target {host_target} is unknown to archspec; only exact matches run"
    if _family(build) != _family(host):
        return (
            f"target {build_target} is for {_family(build)} machines; "
            f"host {host_target} is {_family(host)}"
        )
    if build.vendor not in ("generic", host.vendor):
        return (
            f"target {build_target} belongs to the {build.vendor} line; host {host_target} "
            f"({host.vendor}) can only run its own line and generic targets"
        )
    missing = sorted(build.features - host.features)
    if missing:
        shown = ", ".join(missing[:12]) + (
            f" and {len(missing) - 12} more" if len(missing) > 12 else ""
        )
        return f"target {build_target} needs {shown}; host {host_target} lacks them"
    return (
        f"target {build_target} is not {host_target} or one of its ancestors "
        f"({', '.join(compatible_targets(host_target)[1:]) or 'none'})"
    )
