"""Resolve one package from a 60,000-record index: cold (parse) and warm (index store).

Run: ``python bench/bench_resolve.py [--records N] [--repeat K]``

Prints, for the same index file:

* ``json.load``: the floor for any reader that parses the whole JSON;
* cold: read + parse into the lazy :class:`~cacheclient.metadata.catalog.Catalog` + resolve
  one package;
* build store: the one-time cost of writing the sqlite index store (after a cold parse);
* warm: open the store by checksum + resolve (and the same plus hashing the file, for
  sources that do not publish the checksum);

and how many :class:`~cacheclient.model.BuildRecord` objects each path built.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cacheclient.errors import MetadataError
from cacheclient.metadata.catalog import Catalog
from cacheclient.metadata.database import parse_database
from cacheclient.mirrors.parsed_index import build_parsed_index, open_parsed_index
from cacheclient.resolution.host import HostProfile
from cacheclient.resolution.resolve import resolve

X86_FEATURES = sorted(
    [
        "mmx",
        "sse",
        "sse2",
        "ssse3",
        "sse4_1",
        "sse4_2",
        "popcnt",
        "aes",
        "pclmulqdq",
        "avx",
        "bmi1",
        "bmi2",
        "f16c",
        "fma",
        "avx2",
        "movbe",
        "rdrand",
        "rdseed",
        "adx",
        "clflushopt",
        "xsavec",
        "xsaveopt",
        "avx512f",
        "avx512cd",
        "avx512bw",
        "avx512dq",
        "avx512vl",
        "avx512vbmi",
        "avx512ifma",
        "avx512_vnni",
        "avx512_bf16",
        "sha",
        "gfni",
        "vaes",
        "vpclmulqdq",
    ]
)
TARGETS: list[Any] = [
    "x86_64_v3",
    "x86_64_v4",
    "aarch64",
    {
        "name": "neoverse_v2",
        "vendor": "ARM",
        "features": ["fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "sve2"],
        "generation": 0,
        "parents": ["neoverse_n1", "armv9.0a"],
        "cpupart": "0xd4f",
    },
    {
        "name": "zen4",
        "vendor": "AuthenticAMD",
        "features": X86_FEATURES,
        "generation": 0,
        "parents": ["zen3", "x86_64_v4"],
        "cpupart": "",
    },
]
OSES = ["ubuntu22.04", "ubuntu24.04", "rhel8", "amzn2"]
B32 = string.ascii_lowercase + "234567"


def generate_index(records: int, seed: int = 7) -> tuple[bytes, str]:
    """A Database v8 index of *records* nodes over ~records/40 packages; returns (bytes, a name)."""
    rng = random.Random(seed)
    n_names = max(1, records // 40)
    names = [f"pkg-{i:05d}" for i in range(n_names)]
    installs: dict[str, Any] = {}
    by_name: dict[str, list[str]] = {}
    for i in range(records):
        name = names[i % n_names]
        dag_hash = "".join(rng.choice(B32) for _ in range(32))
        deps = []
        earlier = [n for n in rng.sample(names, k=min(3, n_names)) if by_name.get(n)]
        for dep_name in earlier:
            deps.append(
                {
                    "name": dep_name,
                    "hash": rng.choice(by_name[dep_name]),
                    "parameters": {"deptypes": ["build", "link"], "virtuals": []},
                }
            )
        installs[dag_hash] = {
            "spec": {
                "name": name,
                "version": f"{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
                "arch": {
                    "platform": "linux",
                    "platform_os": rng.choice(OSES),
                    "target": rng.choice(TARGETS),
                },
                "namespace": "builtin",
                "parameters": {
                    "build_system": "cmake",
                    "shared": rng.random() < 0.5,
                    "cflags": [],
                    "cppflags": [],
                    "cxxflags": [],
                    "fflags": [],
                    "ldflags": [],
                    "ldlibs": [],
                },
                "package_hash": "".join(rng.choice(B32) for _ in range(56)) + "====",
                "dependencies": deps,
                "hash": dag_hash,
            },
            "ref_count": 0,
            "in_buildcache": True,
        }
        by_name.setdefault(name, []).append(dag_hash)
    data = json.dumps({"database": {"version": "8", "installs": installs}}, separators=(",", ":"))
    return data.encode(), names[n_names // 2]


def make_index(records: int) -> tuple[bytes, list[str]]:
    """The index bytes and package names to try, from READERS' ``index_gen`` when present."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import index_gen  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        data, name = generate_index(records)
        return data, [name]
    doc = index_gen.generate(records, 1)
    data = json.dumps(doc, separators=(",", ":")).encode()
    names = sorted({e["spec"]["name"] for e in doc["database"]["installs"].values()})
    return data, ["py-pyproject-hooks", *names[len(names) // 2 :]]


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _resolves(name: str, catalog: Any, host: HostProfile) -> bool:
    """Whether *name* has a build for *host* whose runtime closure is complete."""
    try:
        (res,) = resolve([name], catalog, host)
    except MetadataError:
        return False
    return res.selected is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    host = HostProfile(platform="linux", os="ubuntu24.04", target="zen4")
    with tempfile.TemporaryDirectory(prefix="bench-resolve-") as tmp:
        work = Path(tmp)
        data, candidates = make_index(args.records)
        index = work / "index.json"
        index.write_bytes(data)
        probe = parse_database(data, str(index))
        name = next(n for n in candidates if _resolves(n, probe, host))
        del probe
        print(f"index: {args.records} records, {len(data) / 1e6:.1f} MB; resolving {name}")

        t_json, _ = best_of(args.repeat, lambda: json.loads(index.read_bytes()))

        def cold() -> tuple[Any, int]:
            catalog = parse_database(index.read_bytes(), str(index), stacks=("m",))
            (res,) = resolve([name], catalog, host)
            return res, len(catalog._cache)  # records actually built

        t_cold, (res_cold, built_cold) = best_of(args.repeat, cold)

        checksum = hashlib.sha256(data).hexdigest()
        store_dir = work / "store"

        def build() -> Path:
            for old in store_dir.glob("*.sqlite"):
                old.unlink()
            return build_parsed_index(
                index.read_bytes(), store_dir, checksum, source=str(index), stacks=("m",)
            )

        t_build, store_path = best_of(1, build)

        def warm() -> tuple[Any, int]:
            stored = open_parsed_index(store_dir, checksum, source=str(index), stacks=("m",))
            cat = Catalog.over(stored, source=str(index))
            (res,) = resolve([name], cat, host)
            return res, len(cat._cache)

        t_warm, (res_warm, built_warm) = best_of(args.repeat, warm)

        def warm_hashing() -> Any:
            key = hashlib.sha256(index.read_bytes()).hexdigest()
            stored = open_parsed_index(store_dir, key, source=str(index), stacks=("m",))
            return resolve([name], Catalog.over(stored, source=str(index)), host)

        t_warm_hash, _ = best_of(args.repeat, warm_hashing)

        same = (res_cold.selected and res_cold.selected.hash) == (
            res_warm.selected and res_warm.selected.hash
        )
        rows = [
            ("json.load of the index", t_json, "-"),
            ("cold: parse + resolve", t_cold, str(built_cold)),
            ("build index store (once)", t_build, "-"),
            ("warm: store + resolve", t_warm, str(built_warm)),
            ("warm incl. sha256 of index", t_warm_hash, str(built_warm)),
        ]
        for label, seconds, built in rows:
            print(f"  {label:<28} {seconds * 1000:9.1f} ms   records built: {built}")
        print(f"  store file: {store_path.stat().st_size / 1e6:.1f} MB; same answer: {same}")
        print(f"  selected: {res_warm.selected.format() if res_warm.selected else None}")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
