"""``cacheclient host``: print the host profile and the targets it can run, best first."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cacheclient.cli._common import add_host_options, add_output_options, print_json
from cacheclient.errors import UsageError
from cacheclient.resolution.compat import compatible_targets
from cacheclient.resolution.host import detect_target, infer_family, os_from_os_release
from cacheclient.settings import host_from_args

__all__ = ["register"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "host",
        help="show the host profile (platform, OS, target, libc) and the targets it can run",
        description="Show the host profile and the ordered list of targets whose builds run "
        "here (host first, then its archspec ancestors), like `spack arch`.",
    )
    parser.add_argument("--cpuinfo", metavar="FILE", help="detect the target from this file")
    parser.add_argument(
        "--family",
        metavar="ARCH",
        help="machine family of --cpuinfo (x86_64, aarch64, ppc64le, ppc64, riscv64; "
        "default: read from the file)",
    )
    parser.add_argument("--os-release", metavar="FILE", help="name the OS from this file")
    parser.add_argument(
        "--short",
        action="store_true",
        help="print only platform-os-target, e.g. linux-debian12-x86_64_v4 (like `spack arch`)",
    )
    add_host_options(parser)
    add_output_options(parser)
    parser.set_defaults(func=run)


def _read(path: str, option: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot read: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    if args.cpuinfo and not args.target:
        text = _read(args.cpuinfo, "--cpuinfo")
        family = args.family or infer_family(text)
        if family is None:
            raise UsageError(
                f"--cpuinfo {args.cpuinfo}: cannot tell the machine family from the file "
                "(pass --family x86_64, aarch64, ppc64le, ppc64 or riscv64)"
            )
        args.target = detect_target(text, family)
    if args.os_release and not args.host_os:
        args.host_os = os_from_os_release(_read(args.os_release, "--os-release"))
    host = host_from_args(args)
    targets = compatible_targets(host.target)
    if args.short:
        print(f"{host.platform}-{host.os}-{host.target}")
        return 0
    if args.json:
        print_json({**host.to_dict(), "compatible_targets": targets})
        return 0
    libc = f"{host.libc.name}@{host.libc.version}" if host.libc else "unknown"
    print(f"platform  {host.platform}")
    print(f"os        {host.os}")
    print(f"target    {host.target}")
    print(f"libc      {libc}")
    print(f"runs      {', '.join(targets)}")
    return 0
