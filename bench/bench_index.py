"""Benchmark reading a large buildcache index into a Catalog, beside ``json.load``.

Each measurement runs in a fresh interpreter so peak memory (ru_maxrss) is its own. Printed:
time of ``json.load`` of the file, time to read it into a :class:`Catalog` (with the stdlib
``json`` and with ``orjson`` when installed), time to find all records of one package (first
call builds them, second is cached), the time relative to ``json.load``, and peak RSS.

Usage: ``python bench/bench_index.py [--repeat N] [INDEX.json]`` (best of N runs, default 3;
generates a 60,000-record index in a
temporary directory with ``bench/index_gen.py`` when no file is given).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "py-pyproject-hooks"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(kind: str, path: str) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    if kind == "json.load":
        with open(path, "rb") as fh:
            json.load(fh)
    elif kind == "orjson.loads":
        import orjson

        orjson.loads(Path(path).read_bytes())
    else:
        from cacheclient.metadata import database

        catalog = database.parse_database(Path(path).read_bytes(), path)
        out["read"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        records = catalog.by_name(PACKAGE)
        out["find_first"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        again = catalog.by_name(PACKAGE)
        out["find_again"] = time.perf_counter() - t2
        assert len(records) == len(again) > 0
        out["found"] = len(records)
        out["records"] = len(catalog)
        t3 = time.perf_counter()
        prefix = catalog.find_prefix(records[0].hash[:7])
        out["find_prefix"] = time.perf_counter() - t3
        assert prefix
    out.setdefault("read", time.perf_counter() - t0)
    out["peak_mb"] = _peak_mb()
    return out


def _run(kind: str, path: str, repeat: int) -> dict[str, float] | None:
    best: dict[str, float] | None = None
    for _ in range(repeat):
        result = _run_once(kind, path)
        if result is None:
            return None
        # keep the fastest time of each step (memory is the same every run)
        best = result if best is None else {k: min(v, result[k]) for k, v in best.items()}
    return best


def _run_once(kind: str, path: str) -> dict[str, float] | None:
    proc = subprocess.run(
        [sys.executable, __file__, "--one", kind, path],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")},
    )
    if proc.returncode != 0:
        print(f"{kind}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(_measure(sys.argv[2], sys.argv[3])))
        return
    args = sys.argv[1:]
    repeat = 3
    if args[:1] == ["--repeat"]:
        repeat = int(args[1])
        args = args[2:]
    with tempfile.TemporaryDirectory() as tmp:
        if args:
            path = args[0]
        else:
            path = str(Path(tmp) / "index.json")
            subprocess.run([sys.executable, str(HERE / "index_gen.py"), path], check=True)
        size = Path(path).stat().st_size / 1e6
        base = _run("json.load", path, repeat)
        assert base is not None
        rows = [("json.load (stdlib)", base)]
        for kind, label in (
            ("orjson.loads", "orjson.loads"),
            ("catalog", "parse_database -> Catalog (msgspec)"),
        ):
            result = _run(kind, path, repeat)
            if result is not None:
                rows.append((label, result))
        print(f"\nindex: {path} ({size:.1f} MB), best of {repeat} runs, each in a fresh process")
        print(f"{'step':<48} {'time s':>8} {'x json.load':>12} {'peak MB':>9}")
        for label, r in rows:
            ratio = r["read"] / base["read"]
            print(f"{label:<48} {r['read']:>8.2f} {ratio:>12.2f} {r['peak_mb']:>9.0f}")
        for label, r in rows:
            if "find_first" in r:
                print(
                    f"  {label}: {int(r['records'])} records; by_name({PACKAGE!r}) -> "
                    f"{int(r['found'])} records: first {r['find_first'] * 1e3:.1f} ms, "
                    f"again {r['find_again'] * 1e3:.2f} ms; find_prefix "
                    f"{r['find_prefix'] * 1e3:.1f} ms"
                )


if __name__ == "__main__":
    main()
