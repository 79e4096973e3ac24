"""Installing one package with its closure: from a cache.spack.io page vs from the mirror index.

A copy of the signed fixture mirror whose v3 index is replaced by a 60,000-record synthetic index
(``index_gen.py``) that also holds the fixture's own 18 records, served over HTTP on 127.0.0.1.
Each run, in fresh processes with cold stores (keys trusted, nothing else):

* page: ``install-from-cache demo-tool@1.0.0 --metadata PAGE --mirror-base URL``: the closure
  comes from the signed specs; no index is downloaded;
* index: ``install-from-cache demo-tool@1.0.0 --mirror URL``: download the ~100 MB index,
  parse it, keep it parsed on disk, resolve, install.

Prints the medians, the ratio, requests and bytes served per path, and Spack's own figure for
listing one package from such an index (README, about a minute on this machine).

Usage: ``python bench/bench_page_flow.py [--records 60000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MIRROR = REPO / "fixtures" / "spack-v3" / "signed"
KEY = REPO / "fixtures" / "spack-v3" / "public-key.asc"
HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
SPACK_SECONDS = 60.0  # README: Spack lists one package from a 60,000-record index in ~1 min


class _Counting(http.server.SimpleHTTPRequestHandler):
    """Serves a directory and counts the GET requests and the body bytes it sends."""

    requests = 0
    sent = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        _Counting.requests += 1
        super().do_GET()

    def copyfile(self, source: Any, outputfile: Any) -> None:
        while chunk := source.read(1 << 20):
            _Counting.sent += len(chunk)
            outputfile.write(chunk)


def _mirror(root: Path, records: int) -> Path:
    """The fixture mirror with a synthetic index around its own records."""
    sys.path.insert(0, str(HERE))
    from index_gen import generate  # type: ignore[import-not-found]

    www = root / "www"
    shutil.copytree(MIRROR, www)
    manifest_path = www / "v3" / "manifests" / "index" / "index.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["data"][0]
    checksum = entry["checksum"]
    real = json.loads((www / "blobs" / "sha256" / checksum[:2] / checksum).read_text())
    db = generate(records, 1, holes=0.0)
    db["database"]["installs"].update(real["database"]["installs"])
    data = json.dumps(db, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    blob = www / "blobs" / "sha256" / digest[:2] / digest
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    entry.update(checksum=digest, contentLength=len(data))
    manifest_path.write_text(json.dumps(manifest))
    return www


def _page(path: Path) -> Path:
    """A cache.spack.io-style page listing the fixture's demo-tool builds in the 'root' stack."""
    sys.path.insert(0, str(REPO / "tests"))
    from cacheclient.mirrors.open import local_reader, open_catalog
    from pages import write_page  # type: ignore[import-not-found]

    catalog = open_catalog(str(MIRROR), local_reader(MIRROR))
    return write_page(path, "demo-tool", catalog.by_name("demo-tool"))  # type: ignore[no-any-return]


def _run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr[-500:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        www = _mirror(root, args.records)
        page = _page(root / "demo-tool.md")
        handler = functools.partial(_Counting, directory=str(www))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        tool = [sys.executable, "-m", "cacheclient"]
        times: dict[str, list[float]] = {"page": [], "index": []}
        served: dict[str, tuple[int, int]] = {}
        for i in range(args.repeat):
            for kind, source in (
                ("page", ["--metadata", str(page), "--mirror-base", url]),
                ("index", ["--mirror", url]),
            ):
                store, target = root / f"s-{kind}-{i}", root / f"r-{kind}-{i}"
                env = {**os.environ, "CACHECLIENT_STORE": str(store)}
                subprocess.run([*tool, "keys", "trust", str(KEY)], env=env, check=True,
                               capture_output=True)  # fmt: skip
                _Counting.requests = _Counting.sent = 0
                cmd = [*tool, "install", "demo-tool@1.0.0", *source, *HOST, "--root", str(target)]
                times[kind].append(_run([*cmd, "--quiet"], env))
                served[kind] = (_Counting.requests, _Counting.sent)
                shutil.rmtree(store)
                shutil.rmtree(target)
        server.shutdown()
    page_s = statistics.median(times["page"])
    index_s = statistics.median(times["index"])
    print(f"mirror index: {args.records} synthetic + 18 real records; {args.repeat} cold runs each")
    print(f"{'path':44} {'median s':>9} {'requests':>9} {'MB served':>10}")
    for label, kind, secs in (
        ("page -> signed specs -> install (closure)", "page", page_s),
        ("mirror index -> resolve -> install", "index", index_s),
    ):
        n, b = served[kind]
        print(f"{label:44} {secs:9.2f} {n:9d} {b / 1e6:10.2f}")
    print(f"{'Spack: list one package from such an index':44} {SPACK_SECONDS:9.0f}")
    print(f"page path is {index_s / page_s:.1f}x faster than the index path")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
