"""Fetch benchmarks: verified download of a large artifact vs curl, and many small artifacts.

Run from the repository root::

    python bench/bench_fetch.py            # 1 GiB + 200 artifacts
    python bench/bench_fetch.py --size-mib 256 --small 50

1. *Large*: one random artifact served by Debian's nginx on 127.0.0.1. ``curl -o FILE`` and
   cacheclient's verified download (stream into the store's ``.partial`` file hashing as it
   goes, check size and sha256, fsync, rename into ``blobs/``) fetch the same file in the same
   run, alternating, best of N each. Reports MiB/s, the ratio to curl, and the peak RSS of the
   cacheclient process (it runs in a child so ``ru_maxrss`` is its own).
2. *Small*: a v3 mirror of 200 builds (~64 KiB random payload each) written with
   ``cacheclient.mirrors.writer``; ``fetch_builds`` with ``jobs=16`` and ``jobs=1`` into fresh
   stores (unsigned mirror, ``allow_unsigned``; signature checks are per manifest and would
   add the same gpgv cost to both).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import NginxServer  # noqa: E402

_CHILD = """
import hashlib, sys, time
from pathlib import Path
from cacheclient.errors import VerificationError
from cacheclient.store import Store
from cacheclient.transport import HttpTransport, TransportOptions
url, root, checksum, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = Store(Path(root))
store.ensure()
transport = HttpTransport(TransportOptions())
start = time.perf_counter()
with store.download_lock(checksum):
    partial = store.partial_path(checksum)
    result = transport.download(url, partial, expected_size=size)
    if result is None or result.sha256 != checksum:
        raise VerificationError("checksum mismatch")
    store.commit_partial(partial, checksum)
print(time.perf_counter() - start)
"""


def _make_artifact(folder: Path, size_mib: int) -> tuple[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data_path = folder / "tmp-artifact"
    digest = hashlib.sha256()
    chunk = os.urandom(1 << 20)
    with open(data_path, "wb") as out:
        for i in range(size_mib):
            block = hashlib.sha256(i.to_bytes(8, "little")).digest() + chunk[32:]
            digest.update(block)
            out.write(block)
    checksum = digest.hexdigest()
    target = folder / "blobs" / "sha256" / checksum[:2] / checksum
    target.parent.mkdir(parents=True, exist_ok=True)
    data_path.rename(target)
    return checksum, target


def _drop(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def bench_large(work: Path, size_mib: int, rounds: int) -> None:
    mirror = work / "mirror"
    checksum, blob = _make_artifact(mirror, size_mib)
    size = blob.stat().st_size
    url_path = f"/blobs/sha256/{checksum[:2]}/{checksum}"
    curl_times: list[float] = []
    ours: list[float] = []
    peak_rss_kib = 0
    with NginxServer(mirror, work / "nginx") as server:
        url = server.url + url_path
        for _ in range(rounds):
            out = work / "curl.out"
            start = time.perf_counter()
            subprocess.run(["curl", "-s", "-f", "-o", str(out), url], check=True)
            curl_times.append(time.perf_counter() - start)
            out.unlink()
            store = work / "store"
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, url, str(store), checksum, str(size)],
                stdout=subprocess.PIPE,
            )
            start = time.perf_counter()
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed_wall = time.perf_counter() - start
            assert proc.stdout is not None
            inner = float(proc.stdout.read().decode().strip() or elapsed_wall)
            if status != 0:
                raise SystemExit(f"cacheclient download failed (status {status})")
            ours.append(inner)
            peak_rss_kib = max(peak_rss_kib, int(usage.ru_maxrss))
            _drop(store)
    mib = size / (1 << 20)
    best_curl, best_ours = min(curl_times), min(ours)
    print(f"large artifact: {mib:.0f} MiB from nginx on 127.0.0.1, best of {rounds}")
    print(f"  curl -o FILE                 {mib / best_curl:8.1f} MiB/s  ({best_curl:.2f} s)")
    print(
        f"  cacheclient verified download {mib / best_ours:8.1f} MiB/s  ({best_ours:.2f} s; "
        "sha256 + size checked, fsync, rename into the store)"
    )
    print(f"  ratio cacheclient/curl       {best_curl / best_ours:8.2f}x")
    print(f"  peak RSS of the cacheclient process: {peak_rss_kib / 1024:.1f} MiB")
    _drop(mirror)


def bench_small(work: Path, count: int) -> None:
    from cacheclient.fetch import fetch_builds
    from cacheclient.mirrors.open import open_catalog
    from cacheclient.mirrors.writer import MirrorBuild, fake_hash, write_mirror
    from cacheclient.model import BuildRecord
    from cacheclient.store import Store
    from cacheclient.transport import reader_for

    builds = [
        MirrorBuild(
            record=BuildRecord(
                name=f"pkg{i:03d}",
                version="1.0",
                hash=fake_hash(f"bench-{i}"),
                platform="linux",
                os="debian12",
                target="x86_64_v3",
            ),
            files={"share/payload.bin": os.urandom(64 * 1024)},
        )
        for i in range(count)
    ]
    mirror = work / "small-mirror"
    write_mirror(mirror, builds)
    total = sum(p.stat().st_size for p in (mirror / "blobs").rglob("*") if p.is_file())
    with NginxServer(mirror, work / "nginx-small") as server:
        records = [r for r in open_catalog(server.url, reader_for(server.url)) if r.installable]
        results: dict[int, float] = {}
        for jobs in (16, 1, 16, 1):
            store_root = work / f"store-{jobs}"
            _drop(store_root)
            with Store(store_root) as store:
                start = time.perf_counter()
                result = fetch_builds(
                    records,
                    mirrors=[server.url],
                    store=store,
                    trust=None,
                    allow_unsigned=True,
                    jobs=jobs,
                )
                elapsed = time.perf_counter() - start
            assert len(result.items) == count
            results[jobs] = min(results.get(jobs, elapsed), elapsed)
            _drop(store_root)
        requests = len(server.requests())
    print(
        f"small artifacts: {count} builds ({2 * count} blobs, {total / (1 << 20):.1f} MiB) "
        f"from nginx on 127.0.0.1, best of 2; {requests} requests in all"
    )
    for jobs in (1, 16):
        rate = count / results[jobs]
        print(f"  --jobs {jobs:<3}  {results[jobs]:6.2f} s  ({rate:6.1f} builds/s)")
    print(f"  speed-up jobs 16 vs 1: {results[1] / results[16]:.2f}x")
    _drop(mirror)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        work = Path(tmp)
        if not args.skip_large:
            bench_large(work, args.size_mib, args.rounds)
        if args.small:
            bench_small(work, args.small)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"(benchmark driver peak RSS {own / 1024:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
