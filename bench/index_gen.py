"""Generate a realistic synthetic Spack buildcache index (Database v8) for benchmarks.

Real develop indexes hold 60,000+ records and 80-200 MB of JSON (FORMATS §3.2). Each record
here has the same shape as real ones: a full archspec target dict with its feature list (or a
generic target string), variants plus the six compiler-flag lists, patches, and 3-12 dependency
edges with deptypes and virtuals (compiler, libc), ``annotations``, ``package_hash``. Records are
1-3 KB each. Output is minified like Spack writes it.

Usage: ``python bench/index_gen.py OUT.json [--records 60000] [--seed 1]``
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
from pathlib import Path
from typing import Any


def _words(text: str) -> list[str]:
    return text.split()


X86_FEATURES = _words(
    "adx aes avx avx2 avx512bw avx512cd avx512dq avx512f avx512vl avx512_vnni bmi1 bmi2 "
    "clflushopt clwb f16c fma mmx movbe pclmulqdq popcnt rdrand rdseed sha sse sse2 sse4_1 "
    "sse4_2 ssse3 xsavec xsaveopt vaes vpclmulqdq gfni abm clzero cx16 lahf_lm mwaitx "
    "sse4a xop fma4 tbm avx512ifma avx512vbmi avx512_bitalg avx512_vpopcntdq avx512_bf16"
)
ARM_FEATURES = _words(
    "aes asimd asimddp asimdfhm asimdhp asimdrdm atomics bf16 cpuid crc32 dcpodp dcpop dit "
    "evtstrm fcma flagm fp fphp frint i8mm ilrcpc jscvt lrcpc paca pacg pmull rng sb sha1 sha2 "
    "sha3 sha512 sm3 sm4 ssbs sve sve2 svebf16 svei8mm uscat"
)
TARGETS: list[Any] = [
    "x86_64_v3",
    "x86_64_v4",
    "aarch64",
    {"name": "zen4", "vendor": "AuthenticAMD", "features": X86_FEATURES,
     "generation": 0, "parents": ["zen3", "x86_64_v4"], "cpupart": ""},
    {"name": "sapphirerapids", "vendor": "GenuineIntel", "features": X86_FEATURES[:44],
     "generation": 0, "parents": ["icelake"], "cpupart": ""},
    {"name": "neoverse_v2", "vendor": "ARM", "features": ARM_FEATURES,
     "generation": 0, "parents": ["neoverse_n2"], "cpupart": "0xd4f"},
    {"name": "neoverse_v1", "vendor": "ARM", "features": ARM_FEATURES[:34],
     "generation": 0, "parents": ["neoverse_n1"], "cpupart": "0xd40"},
]  # fmt: skip
OSES = ["ubuntu22.04", "ubuntu24.04", "rhel8", "rocky9", "amzn2023"]
FLAGS = ("cflags", "cppflags", "cxxflags", "fflags", "ldflags", "ldlibs")
BUILD_SYSTEMS = ("cmake", "autotools", "python_pip", "meson", "generic", "makefile")


def dag_hash(rng: random.Random) -> str:
    return base64.b32encode(rng.randbytes(20)).decode().lower()


def _node(
    rng: random.Random, name: str, version: str, h: str, deps: list[dict[str, Any]]
) -> dict[str, Any]:
    params: dict[str, Any] = {"build_system": rng.choice(BUILD_SYSTEMS)}
    for i in range(rng.randint(2, 9)):
        kind = rng.random()
        key = f"{name.rsplit('-', maxsplit=1)[-1][:6]}opt{i}"
        if kind < 0.5:
            params[key] = rng.random() < 0.5
        elif kind < 0.8:
            params[key] = rng.choice(["none", "default", "Release", "RelWithDebInfo", "auto"])
        else:
            params[key] = sorted(rng.sample(["a", "b", "c", "cuda", "rocm", "sycl", "x"], 2))
    if rng.random() < 0.2:
        params["patches"] = [hashlib.sha256(rng.randbytes(8)).hexdigest()]
    for flag in FLAGS:
        params[flag] = []
    return {
        "name": name,
        "version": version,
        "arch": {
            "platform": "linux",
            "platform_os": rng.choice(OSES),
            "target": rng.choice(TARGETS),
        },
        "namespace": "builtin",
        "parameters": params,
        "package_hash": base64.b32encode(rng.randbytes(32)).decode().lower(),
        "dependencies": deps,
        "annotations": {"original_specfile_version": 5},
        "hash": h,
    }


def generate(records: int, seed: int, holes: float = 0.03) -> dict[str, Any]:
    """A Database v8 document with *records* records (deterministic for a *seed*).

    A fraction *holes* of the records are dependency-only (``in_buildcache: false``), as in
    real indexes that also list build dependencies without binaries."""
    rng = random.Random(seed)
    names = [f"pkg-{i:04d}" for i in range(max(1, records // 20))] + ["py-pyproject-hooks"]
    installs: dict[str, Any] = {}
    hashes: list[str] = []
    glibc = dag_hash(rng)
    gcc = dag_hash(rng)
    for special, name, version in ((glibc, "glibc", "2.35"), (gcc, "gcc", "13.2.0")):
        node = _node(rng, name, version, special, [])
        node["external"] = {"path": "/usr", "module": None, "extra_attributes": {}}
        installs[special] = {"spec": node, "ref_count": 1, "in_buildcache": False}
    while len(installs) < records:
        name = rng.choice(names)
        h = dag_hash(rng)
        deps = [
            {"name": "gcc", "hash": gcc,
             "parameters": {"deptypes": ["build"], "virtuals": ["c", "cxx"], "direct": True}},
            {"name": "glibc", "hash": glibc,
             "parameters": {"deptypes": ["link"], "virtuals": ["libc"]}},
        ]  # fmt: skip
        for dep in rng.sample(hashes, min(len(hashes), rng.randint(1, 10))):
            deps.append(
                {
                    "name": installs[dep]["spec"]["name"],
                    "hash": dep,
                    "parameters": {
                        "deptypes": rng.choice([["build"], ["link"], ["build", "link"], ["run"]]),
                        "virtuals": [],
                    },
                }
            )
        version = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
        installs[h] = {
            "spec": _node(rng, name, version, h, deps),
            "ref_count": rng.randint(0, 5),
            "in_buildcache": rng.random() >= holes,
        }
        hashes.append(h)
    return {"database": {"version": "8", "installs": installs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--holes", type=float, default=0.03, help="dependency-only fraction")
    args = parser.parse_args()
    doc = generate(args.records, args.seed, args.holes)
    args.out.write_text(json.dumps(doc, separators=(",", ":")))
    size = args.out.stat().st_size
    print(
        f"{args.out}: {args.records} records, {size / 1e6:.1f} MB, "
        f"{size / args.records:.0f} B/record"
    )


if __name__ == "__main__":
    main()
