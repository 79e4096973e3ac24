"""Benchmark: install the whole demo closure (all of fixtures/spack-v3/signed) end to end.

In one run, for each repetition:

* ``tar -xzf``  - plain extraction of the same 18 tarballs (the floor: no checks, no relocation);
* ``cold``      - resolve every build (``/hash``) from the mirror served over HTTP on 127.0.0.1,
  fetch and verify (signature + sha256) into an empty store, install into an empty root;
* ``warm``      - the same with the store already filled (no download), into an empty root;
* ``install``   - :func:`install_fetched` alone on the fetched items, into an empty root;
* ``no-op``     - re-running the install into the filled root (everything already installed).

Prints the median and best wall time of each, and per-build figures. Then the cost of verifying
at the point of use on a large build (``--big`` MiB of incompressible files, written with the
test-mirror writer): the same archive extracted with and without hashing it in the same pass
(sha256 and the gzip trailer), alternating, with the ratio. Usage::

    python bench/bench_install.py [--repeat N] [--big MIB]
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from cacheclient.api import install
from cacheclient.installation import install_fetched
from cacheclient.resolution.host import HostProfile
from cacheclient.store import Store
from cacheclient.trust import TrustStore

REPO = Path(__file__).resolve().parent.parent
MIRROR = REPO / "fixtures" / "spack-v3" / "signed"
KEY = REPO / "fixtures" / "spack-v3" / "public-key.asc"
HOST = HostProfile(platform="linux", os="debian12", target="x86_64_v4", libc=None)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    handler = partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def all_specs() -> list[str]:
    """``name/hash`` for every build in the mirror."""
    manifests = (MIRROR / "v3" / "manifests" / "spec").rglob("*.spec.manifest.json")
    return sorted(f"{p.parent.name}/{p.name.rsplit('-', 1)[1].split('.')[0]}" for p in manifests)


def tarballs() -> list[Path]:
    import json

    expected = json.loads((MIRROR.parent / "signed.expected.json").read_text())
    return [MIRROR / s["tarball"]["path"] for s in expected["specs"]]


def one_run(
    i: int,
    work: Path,
    url: str,
    *,
    specs: list[str],
    tars: list[Path],
    results: dict[str, list[float]],
) -> None:
    from cacheclient.fetch import fetch_builds
    from cacheclient.mirrors.catalogs import load_catalog
    from cacheclient.resolution.resolve import resolve_or_raise

    out = work / f"tar{i}"
    out.mkdir()
    start = time.perf_counter()
    for t in tars:
        subprocess.run(["tar", "-xzf", str(t), "-C", str(out)], check=True)
    results["tar -xzf"].append(time.perf_counter() - start)

    store_dir = work / f"store{i}"
    TrustStore(Store(store_dir).trust_dir).trust(str(KEY))
    for phase, root in (("cold", "cold"), ("warm", "warm"), ("no-op", "warm")):
        start = time.perf_counter()
        install(specs, mirrors=[url], root=work / f"{root}{i}", store=store_dir, host=HOST)
        results[phase].append(time.perf_counter() - start)

    # install alone, on the verified items of a warm fetch
    store = Store(store_dir)
    catalog = load_catalog([], [url], store=store, offline=False)
    res = resolve_or_raise(specs, catalog, HOST)
    records = list({r.hash: r for x in res for r in x.closure}.values())
    items = fetch_builds(records, mirrors=[url], store=store, trust=None).items
    start = time.perf_counter()
    install_fetched(items, root=work / f"only{i}")
    results["install"].append(time.perf_counter() - start)
    for name in (f"tar{i}", f"cold{i}", f"warm{i}", f"only{i}"):
        shutil.rmtree(work / name, ignore_errors=True)


def _compressible(rng: Any, size: int) -> bytes:
    """About 3:1 under gzip, like typical binaries: slices of a small random dictionary mixed
    with fresh random bytes."""
    base = rng.randbytes(16 << 10)
    parts: list[bytes] = []
    total = 0
    while total < size:
        start = rng.randrange(0, len(base) - 4096)
        piece = base[start : start + rng.randrange(256, 4096)] + rng.randbytes(
            rng.randrange(64, 600)
        )
        parts.append(piece)
        total += len(piece)
    return b"".join(parts)[:size]


def _big_mirror(root: Path, megabytes: int, *, typical: bool) -> Any:
    import random

    from cacheclient.mirrors.writer import MirrorBuild, fake_hash, write_mirror
    from cacheclient.model import BuildRecord

    rng = random.Random(7)
    files = 400
    per_file = (megabytes << 20) // files
    record = BuildRecord(name="bigpkg", version="1.0", hash=fake_hash(f"big-{typical}"),
                         platform="linux", os="debian12", target="x86_64_v3")  # fmt: skip
    make = (lambda: _compressible(rng, per_file)) if typical else (lambda: rng.randbytes(per_file))
    content: dict[str, bytes | str] = {
        f"share/big/d{i % 17}/f{i}.bin": make() for i in range(files)
    }
    return write_mirror(root, [MirrorBuild(record=record, files=content)])


def point_of_use(megabytes: int, repeat: int) -> None:
    """Extraction of one big archive with and without hashing it in the same pass."""
    for typical in (True, False):
        _point_of_use(megabytes, repeat, typical=typical)


def _point_of_use(megabytes: int, repeat: int, *, typical: bool) -> None:
    from cacheclient.installation.extract import extract_prefix

    work = Path(tempfile.mkdtemp(prefix="bench-pou-"))
    try:
        mirror = _big_mirror(work / "mirror", megabytes, typical=typical)
        build = next(iter(mirror.builds.values()))
        tarball = mirror.root / build.tarball.path
        checksum = build.tarball.checksum
        times: dict[str, list[float]] = {"extract": [], "extract+verify": []}
        cpu: dict[str, list[float]] = {"extract": [], "extract+verify": []}
        for i in range(repeat):
            for name, expected in (("extract", None), ("extract+verify", checksum)):
                dest = work / f"{name}-{i}"
                start, start_cpu = time.perf_counter(), time.process_time()
                extract_prefix(tarball, dest, expected_hash=None, expected_sha256=expected)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                shutil.rmtree(dest)
        size = tarball.stat().st_size
        base = statistics.median(times["extract"])
        base_cpu = statistics.median(cpu["extract"])
        kind = "typical (~3:1) content" if typical else "incompressible content (worst case)"
        print(f"\npoint-of-use verification: one build of {megabytes} MiB, {kind}, "
              f"{size / 2**20:.1f} MiB archive, {repeat} runs each (alternating); "
              "wall and CPU time (all threads)")  # fmt: skip
        for name, values in times.items():
            med, med_cpu = statistics.median(values), statistics.median(cpu[name])
            wall = f"wall {med * 1000:8.1f}ms median {min(values) * 1000:8.1f}ms best"
            used = f"CPU {med_cpu * 1000:8.1f}ms {med_cpu / base_cpu:6.3f}x"
            print(f"{name:16} {wall} {med / base:6.3f}x | {used}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--big", type=int, default=128, help="MiB of the large build (0: skip)")
    args = parser.parse_args()
    specs = all_specs()
    tars = tarballs()
    total = sum(p.stat().st_size for p in tars)
    results: dict[str, list[float]] = {
        k: [] for k in ("tar -xzf", "cold", "warm", "install", "no-op")
    }
    work = Path(tempfile.mkdtemp(prefix="bench-install-"))
    try:
        with serve(MIRROR) as url:
            for i in range(args.repeat):
                one_run(i, work, url, specs=specs, tars=tars, results=results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = len(tars)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"demo closure: {n} builds, {total / 1024:.1f} KiB of tarballs, {args.repeat} runs")
    print(f"load average after the runs: {load} (the figures are wall times)")
    print(f"{'':10} {'median':>10} {'best':>10} {'per build':>10}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:10} {med * 1000:8.1f}ms {min(values) * 1000:8.1f}ms "
              f"{med * 1000 / n:8.2f}ms")  # fmt: skip
    if args.big > 0:
        point_of_use(args.big, args.repeat)


if __name__ == "__main__":
    main()
