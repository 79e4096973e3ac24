"""Reliability figures: the whole fault/hostile-input matrix, then a randomized soak.

    python bench/reliability.py                 # matrix + 200 soak runs (about 10 minutes)
    python bench/reliability.py --runs 20 --no-matrix

1. The matrix is the pytest suites of issue 7 (network/server faults, kill -9 recovery, disk
   faults, concurrency, hostile metadata and archives), run with ``pytest -n 2``.
2. The soak: N runs; each starts ``--workers`` concurrent ``cacheclient warm``/``fetch``/
   ``install`` processes sharing one store and one root (a fresh pair every 10 runs) against
   the fault-injecting server on 127.0.0.1 serving Spack's signed fixture mirror, with 0-3
   random faults injected (resets, truncations with and without Content-Length, stalls past
   the read timeout, 5xx/429 with and without Retry-After, 404s, redirect loops, wrong and
   over-long bodies), and in one run out of ten a ``kill -9`` of one process. After every
   run: every process exited 0 or with one clean error line (and 0 whenever the faults were
   transient), every blob hashes to its name, every build a process reported is still there,
   the root holds only complete recorded prefixes. After every tenth run the faults are
   cleared and every job must then succeed, leaving no partial or temporary file.

It prints a table: cases run, cases passed, corrupt blobs found afterwards (must be 0) and
data lost (must be 0), with the command that reproduces it. Exit status 1 if any is off.
Everything listens on 127.0.0.1 only; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from paths import SPACK_V3_KEY, SPACK_V3_SIGNED  # noqa: E402


def _helpers() -> Any:
    """tests/reliability.py (this script has the same name, so load it by path)."""
    spec = importlib.util.spec_from_file_location("reliability", ROOT / "tests" / "reliability.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["reliability"] = module
    spec.loader.exec_module(module)
    return module


MATRIX = [
    "tests/test_faults.py",
    "tests/test_crash_recovery.py",
    "tests/test_disk_faults.py",
    "tests/test_concurrency.py",
    "tests/test_hostile_metadata.py",
    "tests/test_hostile_archives.py",
    "tests/test_hostile_archives_extra.py",
    "tests/test_readers_property.py",
]


def run_matrix(workdir: Path) -> tuple[int, int, int, int, float]:
    """(cases run, cases passed, corrupt blobs reported, data lost reported, seconds)."""
    report = workdir / "matrix.xml"
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
         f"--junitxml={report}", *MATRIX],
        cwd=ROOT,
        check=False,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.monotonic() - started
    run = passed = corrupt = lost = 0
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - our own file
        run += 1
        bad = [c for c in case if c.tag in ("failure", "error")]
        if any(c.tag == "skipped" for c in case):
            continue
        if not bad:
            passed += 1
        text = " ".join((c.get("message") or "") + (c.text or "") for c in bad)
        corrupt += text.count("corrupt blob")
        lost += text.count(" lost its ")
    return run, passed, corrupt, lost, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="soak runs (default 200)")
    parser.add_argument("--workers", type=int, default=3, help="processes per soak run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per soak run")
    parser.add_argument("--no-matrix", action="store_true", help="only the soak")
    parser.add_argument("--no-install", action="store_true", help="soak with fetch/warm only")
    args = parser.parse_args(argv)

    command = "python bench/reliability.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    rows: list[tuple[str, int, int, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="cc-reliability-") as tmp:
        work = Path(tmp)
        if not args.no_matrix:
            print("running the fault/hostile-input matrix (pytest -n 2) ...", flush=True)
            run, passed, corrupt, lost, seconds = run_matrix(work)
            print(f"  matrix: {passed}/{run} passed in {seconds:.0f}s", flush=True)
            rows.append(("fault + hostile-input matrix (pytest)", run, passed, corrupt, lost))
        print(f"running the soak: {args.runs} runs x {args.workers} processes ...", flush=True)
        started = time.monotonic()
        helpers = _helpers()
        config = helpers.SoakConfig(
            runs=args.runs,
            workers=args.workers,
            seed=args.seed,
            timeout=args.timeout,
            install=not args.no_install,
        )
        totals = helpers.soak(config, work, SPACK_V3_SIGNED, SPACK_V3_KEY)
        seconds = time.monotonic() - started
        rows.append(
            (
                f"randomized soak ({args.workers} concurrent processes per run)",
                totals.runs,
                totals.passed,
                totals.corrupt_blobs,
                totals.data_lost,
            )
        )
        rows.append(
            ("recovery after faults cleared (every 10th run)", totals.recoveries,
             totals.recoveries_passed, 0, 0)
        )  # fmt: skip

    width = max(len(r[0]) for r in rows)
    head = f"| {'suite'.ljust(width)} | cases run | cases passed | corrupt blobs | data lost |"
    print()
    print(head)
    print("|" + "-" * (width + 2) + "|----------:|-------------:|--------------:|----------:|")
    for name, run, passed, corrupt, lost in rows:
        print(f"| {name.ljust(width)} | {run:9d} | {passed:12d} | {corrupt:13d} | {lost:9d} |")
    print()
    print(
        f"soak: {totals.processes} processes, {totals.succeeded} succeeded, "
        f"{totals.clean_errors} clean one-line errors, {totals.killed} killed with SIGKILL; "
        f"{totals.faults_injected} faults injected, {totals.faults_fired} fired; {seconds:.0f}s"
    )
    print(f"command: {command.strip()}")
    for failure in (totals.failures or [])[:20]:
        print(f"FAILED {failure}")
    ok = all(run == passed and corrupt == 0 and lost == 0 for _, run, passed, corrupt, lost in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
