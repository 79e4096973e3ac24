"""End to end: `cacheclient resolve` against a 60,000-record mirror index over HTTP.

Serves a generated Database v8 index as a v2 mirror (``build_cache/index.json`` + ``.hash``) on
127.0.0.1 and times, each in a fresh process, beside ``json.load`` of the same file:

* cold: empty store: download the index, parse it, keep it parsed on disk, resolve;
* warm: same store within the index TTL: no request, open the on-disk index, resolve;
* refresh: TTL expired (``CACHECLIENT_INDEX_TTL=0`` is not offered, so the cached state is aged
  by rewriting its timestamp): one small request for ``index.json.hash``, then as warm.

Usage: ``python bench/bench_resolve_cli.py [--records 60000]``
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return elapsed, proc.stdout


def _clean_package(installs: dict[str, dict]) -> tuple[str, int]:  # type: ignore[type-arg]
    """The package with most records whose runtime closures all have binaries."""

    @functools.cache
    def clean(dag_hash: str) -> bool:
        rec = installs.get(dag_hash)
        if rec is None or (not rec.get("in_buildcache") and "external" not in rec["spec"]):
            return False
        for dep in rec["spec"].get("dependencies", []):
            types = dep.get("parameters", {}).get("deptypes", [])
            if ("link" in types or "run" in types) and not clean(dep["hash"]):
                return False
        return True

    names: dict[str, list[str]] = {}
    for dag_hash, rec in installs.items():
        names.setdefault(rec["spec"]["name"], []).append(dag_hash)
    ok = {n: len(h) for n, h in names.items() if all(clean(x) for x in h)}
    best = max(sorted(ok), key=lambda n: ok[n])
    return best, ok[best]


def _age_index_state(store: Path) -> None:
    for meta in store.rglob(".cacheclient/indices/*/meta.json"):
        data = json.loads(meta.read_text())
        data["checked_at"] = 0
        meta.write_text(json.dumps(data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mirror = root / "mirror" / "build_cache"
        mirror.mkdir(parents=True)
        index = mirror / "index.json"
        subprocess.run(
            [
                sys.executable,
                str(HERE / "index_gen.py"),
                str(index),
                "--records",
                str(args.records),
                "--holes",
                "0",
            ],
            check=True,
            capture_output=True,
        )
        digest = hashlib.sha256(index.read_bytes()).hexdigest()
        (mirror / "index.json.hash").write_text(digest + "\n")
        package, count = _clean_package(json.loads(index.read_text())["database"]["installs"])

        handler = functools.partial(
            http.server.SimpleHTTPRequestHandler, directory=str(root / "mirror")
        )
        handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        store = root / "store"
        env = {**os.environ, "CACHECLIENT_STORE": str(store)}
        resolve = [
            sys.executable,
            "-m",
            "cacheclient",
            "resolve",
            package,
            "--mirror",
            url,
            "--platform",
            "linux",
            "--os",
            "ubuntu22.04",
            "--target",
            "x86_64_v3",
            "--json",
        ]
        baseline, _ = _timed(
            [sys.executable, "-c", f"import json; json.load(open({str(index)!r}))"], env
        )
        cold, out_cold = _timed(resolve, env)
        warm, out_warm = _timed(resolve, env)
        _age_index_state(store)
        refresh, out_refresh = _timed(resolve, env)
        server.shutdown()
        same = (
            json.loads(out_cold)["requests"]
            == json.loads(out_warm)["requests"]
            == json.loads(out_refresh)["requests"]
        )
        size = index.stat().st_size / 1e6
        print(f"index: {args.records} records, {size:.0f} MB; {package}: {count} records")
        print(f"{'step':44} {'seconds':>8} {'vs json.load':>13}")
        for label, secs in (
            ("python -c 'json.load(index)' (baseline)", baseline),
            ("resolve, cold (download + parse + keep)", cold),
            ("resolve, warm (within TTL, no request)", warm),
            ("resolve, TTL expired (index.json.hash)", refresh),
        ):
            print(f"{label:44} {secs:8.2f} {secs / baseline:12.2f}x")
        print(f"same answer every time: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
