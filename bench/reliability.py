"""Reliability figures: the whole fault/hostile-input matrix, then a randomized soak.

    python bench/reliability.py                 # matrix + 200 soak runs (about 7 minutes)
    python bench/reliability.py --runs 20 --no-matrix

1. The matrix is the pytest suites of issue 7 (network/server faults, kill -9 recovery, disk
   faults, concurrency, hostile metadata and archives), run with ``pytest -n 2``.
2. The soak: N runs; each starts ``--workers`` concurrent ``cacheclient warm``/``fetch``/
   ``install`` processes sharing one store (fresh in 7 runs out of 10, so the faults meet
   downloads; otherwise the previous run's) and one root (fresh every 10 runs) against the
   fault-injecting server on 127.0.0.1 serving Spack's signed fixture mirror, with 0-3
   random faults on the files those jobs need (resets, truncations with and without
   Content-Length, stalls past the read timeout, 5xx/429 with and without Retry-After, 404s,
   redirect loops, wrong and over-long bodies), and in one run out of ten a ``kill -9`` of
   one process at a random moment. After every
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
import contextlib
import importlib.util
import io
import json
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SoakConfig", "SoakTotals", "main", "run_matrix", "soak"]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from paths import SPACK_V3_KEY, SPACK_V3_SIGNED  # noqa: E402


def _helpers() -> Any:
    """tests/reliability.py (this script has the same name, so load it by path)."""
    loaded = sys.modules.get("reliability")
    if loaded is not None and hasattr(loaded, "store_problems"):
        return loaded  # already imported (under pytest)
    spec = importlib.util.spec_from_file_location("reliability", ROOT / "tests" / "reliability.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["reliability"] = module
    spec.loader.exec_module(module)
    return module


H = _helpers()


# The randomized soak: concurrent warm/fetch/install runs against the fault server, with
# random faults (and now and then a kill -9), checking every invariant after every run.


SOAK_FAULT_KINDS = (
    "reset",
    "truncate",
    "truncate_no_length",
    "stall",
    "status",
    "not_found",
    "redirect_loop",
    "replace",
    "overlong",
)
_RETRYABLE = frozenset({"reset", "truncate", "truncate_no_length", "stall", "status"})
_CLEAN_ERROR_CODES = frozenset({4, 5, 7})
_JOBS: tuple[tuple[str, str, str], ...] = (
    ("warm", "", ""),
    ("fetch", "demo-tool@1.0.0", "x86_64_v4"),
    ("fetch", "demo-libfoo", "x86_64_v3"),
    ("fetch", "demo-pyhooks", "x86_64_v2"),
    ("install", "demo-tool@1.0.0", "x86_64_v4"),
    ("install", "demo-zlib@1.2.13", "x86_64_v2"),
)
_WARM_SPECS = ("demo-tool@1.0.0", "demo-zlib")
_WARM_TARGETS = ("x86_64_v3", "x86_64_v4")


@dataclass(kw_only=True)
class SoakConfig:
    runs: int = 200
    workers: int = 3
    seed: int = 1
    runs_per_store: int = 10
    timeout: float = 90.0
    kill_probability: float = 0.1
    install: bool = True


@dataclass(kw_only=True)
class SoakTotals:
    runs: int = 0
    passed: int = 0
    processes: int = 0
    succeeded: int = 0
    clean_errors: int = 0
    killed: int = 0
    faults_injected: int = 0
    faults_fired: int = 0
    recoveries: int = 0
    recoveries_passed: int = 0
    corrupt_blobs: int = 0
    data_lost: int = 0
    failures: list[str] | None = None


def _alternatives(mirror: Path, spec: str, target: str) -> list[set[str]]:
    """The closure of every build that could satisfy *spec* on *target*, best first: when
    the best build's files are missing from the mirror (a 404), the next one is selected
    (closure-aware selection), so a success may have fetched any of them."""
    from cacheclient.metadata.catalog import Catalog
    from cacheclient.mirrors.open import local_reader, open_catalog
    from cacheclient.resolution.host import HostProfile
    from cacheclient.resolution.resolve import resolve, runtime_closure

    catalog: Catalog = open_catalog(str(mirror), local_reader(mirror))
    host = HostProfile(platform="linux", os="debian12", target=target, libc=None)
    (res,) = resolve([spec], catalog, host)
    assert res.selected is not None, f"cannot resolve {spec} for {target}"
    ranked = sorted((c for c in res.candidates if c.accepted), key=lambda c: c.rank or 0)
    return [{r.hash for r in runtime_closure(c.record, catalog)[0]} for c in ranked]


def _fetched(groups: Sequence[list[set[str]]], store: Path) -> set[str]:
    """What a successful job fetched: per request, the first alternative the store holds."""
    present = set(H.store_builds(store))
    out: set[str] = set()
    for alternatives in groups:
        out |= next((a for a in alternatives if a <= present), alternatives[0])
    return out


def _fault_paths(mirror: Path) -> dict[str, list[str]]:
    """URL paths of each build's manifest and blobs, by DAG hash ("" : the index's)."""
    from cacheclient.metadata.manifest import parse_manifest

    index = "v3/manifests/index/index.manifest.json"
    index_blob = parse_manifest((mirror / index).read_bytes(), index).index_blob
    out = {"": ["/" + index] + ([f"/{index_blob.path}"] if index_blob else [])}
    for path in sorted((mirror / "v3" / "manifests" / "spec").rglob("*.spec.manifest.json")):
        dag_hash = path.name[: -len(".spec.manifest.json")].rsplit("-", 1)[-1]
        manifest = parse_manifest(path.read_bytes(), str(path))
        rel = "/" + path.relative_to(mirror).as_posix()
        out[dag_hash] = [rel] + [f"/{b.path}" for b in manifest.blobs]
    return out


def soak(
    config: SoakConfig,
    workdir: Path,
    mirror: Path,
    key: Path,
    log: Callable[[str], None] = print,
) -> SoakTotals:
    """Run *config.runs* soak runs against *mirror* (a signed v3 mirror, *key* its public key)."""
    from cacheclient.cli.main import main
    from faultserver import Fault, FaultServer

    rng = random.Random(config.seed)
    totals = SoakTotals(failures=[])
    failures = totals.failures
    assert failures is not None
    groups: dict[tuple[str, str, str], list[list[set[str]]]] = {}
    for job in _JOBS:
        command, spec, target = job
        if command == "warm":
            groups[job] = [_alternatives(mirror, s, t) for s in _WARM_SPECS for t in _WARM_TARGETS]
        else:
            groups[job] = [_alternatives(mirror, spec, target)]
    closures = {job: set().union(*(g[0] for g in group)) for job, group in groups.items()}
    jobs = [j for j in _JOBS if config.install or j[0] != "install"]
    paths = _fault_paths(mirror)
    whole = set(paths[""]) | {p for v in paths.values() for p in v if p.startswith("/v3/")}
    env = H.cli_env({"CACHECLIENT_READ_TIMEOUT": "1", "CACHECLIENT_RETRIES": "3"})
    server = FaultServer(mirror).start()
    try:
        manifest = workdir / "warm.yaml"
        profiles = "".join(
            f"  - {{platform: linux, os: debian12, target: {t}}}\n" for t in _WARM_TARGETS
        )
        manifest.write_text(
            f"mirrors:\n  - url: {server.url}\n    signed: true\nprofiles:\n{profiles}"
            f"specs: [{', '.join(_WARM_SPECS)}]\n"
        )

        def args_for(job: tuple[str, str, str], store: Path, root: Path) -> list[str]:
            command, spec, target = job
            if command == "warm":
                return ["warm", str(manifest), "--store", str(store), "--quiet", "--jobs", "4"]
            host = ["--platform", "linux", "--os", "debian12", "--target", target]
            out = [command, spec, *host, "--mirror", server.url, "--store", str(store)]
            out += ["--quiet", "--jobs", "4"]
            return out + (["--root", str(root)] if command == "install" else [])

        store = root = workdir
        expected: set[str] = set()
        installed: set[str] = set()
        for run in range(config.runs):
            if run % config.runs_per_store == 0:
                root = workdir / f"root{run}"
                installed = set()
            # Mostly a fresh store (so the faults meet downloads), sometimes a warm one.
            if run % config.runs_per_store == 0 or rng.random() < 0.7:
                store = workdir / f"store{run}"
                quiet = io.StringIO()
                with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                    assert main(["keys", "trust", str(key), "--store", str(store)]) == 0
                expected = set()
            server.clear_faults()
            chosen = [rng.choice(jobs) for _ in range(config.workers)]
            targets = sorted({p for job in chosen for h in closures[job] for p in paths[h]})
            targets += paths[""]
            faults = []
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
                kind = rng.choice(SOAK_FAULT_KINDS)
                times = rng.choice((1, 1, 2, 2, None)) if rng.random() < 0.3 else rng.choice((1, 2))
                fault = Fault(
                    kind=kind,  # type: ignore[arg-type]
                    path=rng.choice(targets),
                    times=times,
                    status=rng.choice((500, 502, 503, 429)),
                    retry_after=rng.choice((None, "0", "1")),
                    after_bytes=rng.choice((None, 0, 10, 300)),
                    stall_seconds=2.0,
                    body=b"not what the manifest says",
                )
                faults.append(server.inject(fault))
            totals.faults_injected += len(faults)
            # Transient: each faulted path has one fault, retried away within 3 attempts
            # (a 404 is retried once, and not for the index manifest: "not a mirror"; a
            # metadata body cut short without Content-Length looks complete: read once more).
            per_path = Counter(f.path for f in faults)
            recoverable = all(
                per_path[f.path] == 1
                and (
                    (f.kind in _RETRYABLE and f.times is not None and f.times <= 2)
                    or (f.kind == "not_found" and f.times == 1 and "index" not in (f.path or ""))
                )
                and not (f.kind == "truncate_no_length" and f.path in whole and f.times != 1)
                for f in faults
            )
            started = time.monotonic()
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "cacheclient", *args_for(job, store, root)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for job in chosen
            ]
            victim = rng.randrange(len(procs)) if rng.random() < config.kill_probability else None
            if victim is not None:
                time.sleep(rng.uniform(0.05, 1.0))
                if procs[victim].poll() is None:
                    procs[victim].send_signal(signal.SIGKILL)
                else:
                    victim = None
            problems: list[str] = []
            for i, (proc, job) in enumerate(zip(procs, chosen, strict=True)):
                left = max(1.0, config.timeout - (time.monotonic() - started))
                try:
                    _, err = proc.communicate(timeout=left)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _, err = proc.communicate()
                    problems.append(f"{job[0]} {job[1]} hung for {config.timeout:.0f}s")
                    continue
                totals.processes += 1
                if i == victim:
                    totals.killed += 1
                    continue
                if proc.returncode == 0:
                    totals.succeeded += 1
                    fetched = _fetched(groups[job], store)
                    expected |= fetched
                    if job[0] == "install":
                        installed |= fetched
                    continue
                lines = [line for line in err.splitlines() if ": error: " in line]
                if "Traceback" in err or len(lines) != 1:
                    problems.append(f"{job[0]} {job[1]}: exit {proc.returncode}, {err[-300:]!r}")
                elif proc.returncode not in _CLEAN_ERROR_CODES:
                    problems.append(
                        f"{job[0]} {job[1]}: unexpected exit {proc.returncode}: {lines[0]}"
                    )
                elif recoverable and victim is None:
                    problems.append(
                        f"{job[0]} {job[1]}: transient faults not recovered: {lines[0]}"
                    )
                else:
                    totals.clean_errors += 1
            totals.faults_fired += sum(1 for f in faults if f.hits)
            corrupt, lost, other = _judge(
                store, root, expected, installed, crashed=victim is not None
            )
            totals.corrupt_blobs += corrupt
            totals.data_lost += lost
            problems += other
            totals.runs += 1
            if problems:
                fault_text = ", ".join(f"{f.kind}x{f.times}@{f.path}" for f in faults)
                failures.append(f"run {run} (faults: {fault_text or 'none'}): {problems}")
            else:
                totals.passed += 1
            last_of_store = run % config.runs_per_store == config.runs_per_store - 1
            if last_of_store or run == config.runs - 1:
                server.clear_faults()
                totals.recoveries += 1
                trouble = _recover(jobs, args_for, store, root, env)
                corrupt, lost, other = _judge(store, root, expected, installed, crashed=False)
                totals.corrupt_blobs += corrupt
                totals.data_lost += lost
                trouble += other
                trouble += H.store_problems(store, allow_partials=False)
                trouble += H.root_problems(root)
                if trouble:
                    failures.append(f"recovery after run {run}: {trouble}")
                else:
                    totals.recoveries_passed += 1
            if (run + 1) % 10 == 0:
                log(f"  soak: {run + 1}/{config.runs} runs, {totals.passed} passed")
    finally:
        server.stop()
    return totals


def _recover(
    jobs: Sequence[tuple[str, str, str]],
    args_for: Callable[[tuple[str, str, str], Path, Path], list[str]],
    store: Path,
    root: Path,
    env: Mapping[str, str],
) -> list[str]:
    """With the faults gone, every job must now succeed in this store and root."""
    trouble = []
    for job in jobs:
        result = H.run_cli(args_for(job, store, root), env=env)
        if result.code != 0:
            trouble.append(f"recovery {job[0]} {job[1]}: exit {result.code}: {result.err[-300:]}")
    return trouble


def _judge(
    store: Path, root: Path, expected: set[str], installed: set[str], *, crashed: bool
) -> tuple[int, int, list[str]]:
    """(corrupt blobs, lost builds, other problems) of a store and root after a run."""
    corrupt = lost = 0
    other: list[str] = []
    for problem in H.store_problems(store):
        if problem.startswith(("corrupt blob", "not a blob", "blob in the wrong shard")):
            corrupt += 1
            other.append(problem)
        elif " lost its " in problem:
            lost += 1
            other.append(problem)
        else:
            other.append(problem)
    present = H.store_builds(store)
    missing = sorted(expected - set(present))
    lost += len(missing)
    other += [f"build {h} reported fetched but not in the store" for h in missing]
    db_path = root / ".cacheclient" / "installed.json"
    recorded: set[str] = set()
    if db_path.exists():
        recorded = set(json.loads(db_path.read_text(encoding="utf-8"))["installs"])
    gone = sorted(installed - recorded)
    lost += len(gone)
    other += [f"build {h} reported installed but not in the root" for h in gone]
    other += H.root_problems(root, after_crash=crashed)
    return corrupt, lost, other


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
        config = SoakConfig(
            runs=args.runs,
            workers=args.workers,
            seed=args.seed,
            timeout=args.timeout,
            install=not args.no_install,
        )
        totals = soak(config, work, SPACK_V3_SIGNED, SPACK_V3_KEY)
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
