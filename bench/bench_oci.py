"""OCI registry benchmark: warm N builds from a local docker-registry beside an nginx v3 mirror.

Run from the repository root::

    python bench/bench_oci.py              # 100 builds of ~64 KiB
    python bench/bench_oci.py --builds 300 --kib 256

The same N builds (random payloads, written with ``cacheclient.mirrors.writer``) are served two
ways on 127.0.0.1: a layout-v3 mirror by Debian's nginx, and an OCI cache in Debian's
docker-registry (pushed there with ``cacheclient push``, as a fleet's first runner would). Each is
fetched into fresh stores with ``--jobs 1`` and ``--jobs 8``, best of ``--repeat`` runs, and the
script prints seconds, builds/s, the OCI/v3 time ratio, and requests per build as the servers
logged them (the index included). A second open of the registry's index within the TTL is shown
to cost zero requests.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from registryserver import RegistryServer  # noqa: E402
from servers import NginxServer  # noqa: E402


def _mirror(folder: Path, count: int, kib: int) -> Path:
    from cacheclient.mirrors.writer import MirrorBuild, fake_hash, write_mirror
    from cacheclient.model import BuildRecord

    builds = [
        MirrorBuild(
            record=BuildRecord(
                name=f"bench-{i:04d}",
                version="1.0",
                hash=fake_hash(f"bench-{i}"),
                platform="linux",
                os="debian12",
                target="x86_64_v3",
            ),
            files={"share/payload.bin": os.urandom(kib * 1024)},
        )
        for i in range(count)
    ]
    write_mirror(folder, builds)
    return folder


def _fetch(url: str, store: Path, jobs: int) -> tuple[float, int]:
    from cacheclient.fetch import fetch_builds
    from cacheclient.mirrors.indexcache import open_mirror
    from cacheclient.store import Store

    with Store(store) as target:
        start = time.perf_counter()
        catalog = open_mirror(url, store=target)
        records = [r for r in catalog if r.installable]
        fetch_builds(records, mirrors=[url], store=target, trust=None, allow_unsigned=True,
                     jobs=jobs)  # fmt: skip
        return time.perf_counter() - start, len(records)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=100)
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from cacheclient.ci.push import push, select_builds
    from cacheclient.fetch import fetch_builds
    from cacheclient.mirrors.indexcache import open_mirror
    from cacheclient.store import Store
    from cacheclient.transport import requests_made

    with tempfile.TemporaryDirectory(prefix="bench-oci-") as tmp:
        work = Path(tmp)
        mirror = _mirror(work / "v3", args.builds, args.kib)
        nginx = NginxServer(mirror, work / "nginx").start()
        registry = RegistryServer(work / "reg", work / "reg" / "storage").start()
        try:
            url = registry.url("bench/cache")
            seed = Store(work / "seed")
            catalog = open_mirror(str(mirror), store=seed)
            fetch_builds([r for r in catalog if r.installable], mirrors=[str(mirror)],
                         store=seed, trust=None, allow_unsigned=True, jobs=8)  # fmt: skip
            start = time.perf_counter()
            push(seed, url, select_builds(seed, everything=True))
            pushed = time.perf_counter() - start
            print(
                f"{args.builds} builds of {args.kib} KiB; push to an empty registry {pushed:.2f} s"
            )

            results: dict[tuple[str, int], float] = {}
            per_build: dict[str, float] = {}
            for name, source, server in (("v3 nginx", nginx.url, nginx), ("oci", url, registry)):
                for jobs in (1, 8):
                    best = float("inf")
                    for attempt in range(args.repeat):
                        server.clear_log()
                        store = work / f"s-{name[:3]}-{jobs}-{attempt}"
                        seconds, count = _fetch(source, store, jobs)
                        best = min(best, seconds)
                        requests = len(server.requests())
                        per_build[name] = requests / count
                    results[(name, jobs)] = best
                    print(
                        f"{name:9s} --jobs {jobs}: {best:6.2f} s  {count / best:7.1f} builds/s  "
                        f"{per_build[name]:.2f} requests/build"
                    )
            for jobs in (1, 8):
                ratio = results[("oci", jobs)] / results[("v3 nginx", jobs)]
                print(f"--jobs {jobs}: oci / v3 time ratio {ratio:.2f}")
            print(
                f"oci --jobs 8 vs --jobs 1: {results[('oci', 1)] / results[('oci', 8)]:.2f}x faster"
            )
            again = Store(work / "s-oci-8-0")
            before = requests_made(url)
            open_mirror(url, store=again)
            print(f"second open of the registry index within the TTL: "
                  f"{requests_made(url) - before} requests")  # fmt: skip
        finally:
            registry.stop()
            nginx.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
