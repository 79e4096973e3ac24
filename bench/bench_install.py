"""Benchmark: install the whole demo closure (all of fixtures/spack-v3/signed) end to end.

In one run, for each repetition:

* ``tar -xzf``  - plain extraction of the same 18 tarballs (the floor: no checks, no relocation);
* ``cold``      - resolve every build (``/hash``) from the mirror served over HTTP on 127.0.0.1,
  fetch and verify (signature + sha256) into an empty store, install into an empty root;
* ``warm``      - the same with the store already filled (no download), into an empty root;
* ``install``   - :func:`install_fetched` alone on the fetched items, into an empty root;
* ``no-op``     - re-running the install into the filled root (everything already installed).

Prints the median and best wall time of each, and per-build figures. Usage::

    python bench/bench_install.py [--repeat N]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
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


if __name__ == "__main__":
    main()
