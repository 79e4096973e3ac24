"""Invariant checks shared by the fault, crash, disk, concurrency and hostile-input suites.

Every reliability test ends the same way: whatever happened, the store holds only verified
blobs in its own layout, the install root holds only complete prefixes and its database
matches them, and a failing command said what went wrong in one line without a traceback.
The checks return lists of problems (empty when all is well) so a test can show all of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cacheclient.mirrors.writer import WrittenMirror

__all__ = [
    "BIG_HOST",
    "STORE_TOP",
    "CliResult",
    "SoakConfig",
    "SoakTotals",
    "assert_clean",
    "assert_one_line_error",
    "cli_env",
    "root_problems",
    "run_cli",
    "soak",
    "store_builds",
    "store_problems",
    "write_big_mirror",
]

STORE_TOP = frozenset({"blobs", "v3", "build_cache", ".cacheclient"})
"""What may sit at the top of a store (``build_cache`` only after a v2 fetch)."""
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SRC = Path(__file__).resolve().parent.parent / "src"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def store_problems(store: Path, *, allow_partials: bool = True) -> list[str]:
    """Everything wrong with the store at *store* (empty list: healthy).

    * every file under ``blobs/`` is ``blobs/sha256/<c[:2]>/<c>`` and hashes to ``<c>``
      (a temporary or partial file there counts as a problem: it is not a verified blob);
    * nothing sits at the top level outside the store's own layout;
    * every build record names blobs that are present and a metadata file that exists;
    * every manifest under ``v3/manifests`` is complete JSON (or clear-signed JSON);
    * partial downloads and temporary files only live in ``.cacheclient/partial`` and
      ``.cacheclient/tmp`` (and only if *allow_partials*: after a successful run, none).
    """
    problems: list[str] = []
    if not store.exists():
        return problems
    for entry in sorted(store.iterdir()):
        if entry.name not in STORE_TOP:
            problems.append(f"outside the layout: {entry.name}")
    blobs = store / "blobs"
    if blobs.exists():
        for path in sorted(blobs.rglob("*")):
            rel = path.relative_to(store).as_posix()
            if path.is_symlink():
                problems.append(f"symlink under blobs/: {rel}")
                continue
            if path.is_dir():
                parts = path.relative_to(blobs).parts
                ok = (len(parts) == 1 and parts[0] == "sha256") or (
                    len(parts) == 2
                    and parts[0] == "sha256"
                    and re.fullmatch("[0-9a-f]{2}", parts[1])
                )
                if not ok:
                    problems.append(f"unexpected directory: {rel}")
                continue
            name = path.name
            parts = path.relative_to(blobs).parts
            if len(parts) != 3 or parts[0] != "sha256" or not _HEX64.match(name):
                problems.append(f"not a blob: {rel}")
                continue
            if parts[1] != name[:2]:
                problems.append(f"blob in the wrong shard: {rel}")
            actual = _sha256(path)
            if actual != name:
                problems.append(f"corrupt blob: {rel} hashes to {actual}")
    for path in sorted((store / "v3").rglob("*")) if (store / "v3").exists() else []:
        if path.is_file():
            rel = path.relative_to(store).as_posix()
            if path.name.startswith(".tmp-"):
                problems.append(f"temporary file left: {rel}")
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            if "-----BEGIN PGP SIGNED MESSAGE-----" in text:
                if "-----END PGP SIGNATURE-----" not in text:
                    problems.append(f"truncated signed manifest: {rel}")
                continue
            try:
                json.loads(text)
            except ValueError:
                problems.append(f"incomplete JSON: {rel}")
    private = store / ".cacheclient"
    for build in store_builds(store).values():
        for key in ("tarball", "spec_blob"):
            checksum = str(build[key]["checksum"])
            blob = store / "blobs" / "sha256" / checksum[:2] / checksum
            if not blob.is_file():
                problems.append(f"build {build['hash']} lost its {key} {checksum}")
        if not (store / str(build["metadata_path"])).is_file():
            problems.append(f"build {build['hash']} lost its metadata {build['metadata_path']}")
    builds_dir = private / "builds"
    if builds_dir.is_dir():
        for path in builds_dir.iterdir():
            if path.name.startswith(".tmp-"):
                problems.append(f"temporary file left: {path.relative_to(store)}")
    for sub in ("partial", "tmp"):
        folder = private / sub
        if folder.is_dir() and not allow_partials:
            left = sorted(p.name for p in folder.iterdir())
            if left:
                problems.append(f"{sub} files left: {left}")
    return problems


def store_builds(store: Path) -> dict[str, dict[str, Any]]:
    """The build records of a store (``.cacheclient/builds/<hash>.json``) that parse."""
    out: dict[str, dict[str, Any]] = {}
    folder = store / ".cacheclient" / "builds"
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            out[path.stem] = {"hash": path.stem, "broken": True}
            continue
        out[str(data["hash"])] = data
    return out


def _content_hash(path: Path) -> str:
    return base64.b32encode(
        hashlib.sha1(path.read_bytes(), usedforsecurity=False).digest()
    ).decode()


def root_problems(root: Path, *, after_crash: bool = False) -> list[str]:
    """Everything wrong with the install root at *root* (empty list: healthy).

    * the database (``.cacheclient/installed.json``) is complete JSON;
    * every recorded prefix exists under the root and matches its ``install_manifest.json``
      (every listed file present with its size and hash, nothing unlisted);
    * every directory at prefix depth is a recorded prefix (no half-installed prefix);
    * no work directory of an interrupted run is left.

    With *after_crash* (right after a ``kill -9``, before the next run cleans up), work
    directories may remain, and so may a prefix renamed into place just before the kill but
    not yet recorded, provided it is complete by its own ``install_manifest.json``.
    """
    problems: list[str] = []
    if not root.exists():
        return problems
    db_path = root / ".cacheclient" / "installed.json"
    records: dict[str, dict[str, object]] = {}
    if db_path.exists():
        try:
            records = json.loads(db_path.read_text(encoding="utf-8"))["installs"]
        except (ValueError, KeyError, TypeError) as exc:
            return [f"install database unreadable: {exc}"]
    prefixes: set[Path] = set()
    for dag_hash, rec in records.items():
        prefix = Path(str(rec["prefix"]))
        prefixes.add(prefix)
        if not prefix.is_relative_to(root):
            problems.append(f"{dag_hash}: prefix {prefix} outside the root")
            continue
        problems += _prefix_problems(dag_hash, prefix)
    for entry in sorted(root.iterdir()):
        if entry.name in (".cacheclient", "bin"):
            continue
        if not entry.is_dir() or entry.is_symlink():
            problems.append(f"unexpected file in the root: {entry.name}")
            continue
        for sub in sorted(entry.iterdir()):
            if sub.name.startswith("."):
                if not after_crash:
                    problems.append(f"work directory left: {sub.relative_to(root)}")
                continue
            if sub in prefixes:
                continue
            if after_crash:
                problems += _prefix_problems(f"unrecorded {sub.name}", sub)
            else:
                problems.append(f"prefix not in the database: {sub.relative_to(root)}")
    return problems


def _prefix_problems(dag_hash: str, prefix: Path) -> list[str]:
    manifest_path = prefix / ".spack" / "install_manifest.json"
    if not prefix.is_dir():
        return [f"{dag_hash}: recorded prefix {prefix} is missing"]
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{dag_hash}: {manifest_path} unreadable: {exc}"]
    problems: list[str] = []
    listed = set(manifest)
    for name, entry in manifest.items():
        path = Path(name)
        if not path.is_relative_to(prefix):
            problems.append(f"{dag_hash}: manifest lists {name} outside its prefix")
            continue
        if "hash" in entry:
            if path.is_symlink() or not path.is_file():
                problems.append(f"{dag_hash}: {name} missing")
            elif path.stat().st_size != entry["size"] or _content_hash(path) != entry["hash"]:
                problems.append(f"{dag_hash}: {name} differs from its manifest")
        elif "dest" in entry:
            if not path.is_symlink() or os.readlink(path) != entry["dest"]:
                problems.append(f"{dag_hash}: symlink {name} differs from its manifest")
        elif not path.is_dir():
            problems.append(f"{dag_hash}: directory {name} missing")
    for dirpath, dirnames, filenames in os.walk(prefix):
        for name in (*dirnames, *filenames):
            found = os.path.join(dirpath, name)
            if found not in listed and found != str(manifest_path):
                problems.append(f"{dag_hash}: {found} is not in its manifest")
    return problems


@dataclass(frozen=True, kw_only=True)
class CliResult:
    code: int
    out: str
    err: str


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``python -m cacheclient`` child: this checkout first, fast retries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHECLIENT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(_SRC), *sys.path])
    env.setdefault("CACHECLIENT_RETRIES", "3")
    env.setdefault("CACHECLIENT_CONNECT_TIMEOUT", "5")
    env.setdefault("CACHECLIENT_READ_TIMEOUT", "5")
    env.update(extra or {})
    return env


def run_cli(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120
) -> CliResult:
    """Run ``python -m cacheclient ARGS`` in a child process and capture everything."""
    proc = subprocess.run(
        [sys.executable, "-m", "cacheclient", *args],
        env=dict(env) if env is not None else cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(code=proc.returncode, out=proc.stdout, err=proc.stderr)


def assert_one_line_error(err: str, code: int, expected_code: int, *words: str) -> str:
    """The command failed with *expected_code* and one ``error:`` line holding *words*."""
    assert "Traceback" not in err, err
    assert code == expected_code, f"exit {code}, expected {expected_code}: {err[-2000:]}"
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err[-2000:]
    line = lines[0]
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"
    return line


def assert_clean(store: Path | None = None, root: Path | None = None, **kw: bool) -> None:
    """Both invariants hold (a test's last line)."""
    problems = (store_problems(store, **kw) if store is not None else []) + (
        root_problems(root) if root is not None else []
    )
    assert problems == [], problems


BIG_HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v3"]
"""Host flags matching the builds :func:`write_big_mirror` writes."""


def write_big_mirror(
    root: Path,
    *,
    megabytes: int = 24,
    files: int = 400,
    names: Sequence[str] = ("bigpkg",),
    seed: int = 7,
    small: bool = False,
) -> WrittenMirror:
    """An unsigned v3 mirror of independent builds, each with *megabytes* of incompressible
    data spread over *files* files (slow enough to interrupt); with *small*, also
    ``smallpkg``, a build of a few KiB."""
    import random

    from cacheclient.mirrors.writer import MirrorBuild, fake_hash, write_mirror
    from cacheclient.model import BuildRecord

    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    builds = []
    per_file = max(1, (megabytes << 20) // max(files, 1))
    for name in names:
        record = BuildRecord(
            name=name,
            version="1.0",
            hash=fake_hash(f"{name}-{seed}"),
            platform="linux",
            os="debian12",
            target="x86_64_v3",
        )
        content: dict[str, bytes | str] = {
            f"share/{name}/d{i % 17}/f{i}.bin": rng.randbytes(per_file) for i in range(files)
        }
        content["bin/hello"] = "#!/bin/sh\necho hello\n"
        builds.append(
            MirrorBuild(record=record, files=content, executables=frozenset({"bin/hello"}))
        )
    if small:
        record = BuildRecord(
            name="smallpkg",
            version="1.0",
            hash=fake_hash(f"smallpkg-{seed}"),
            platform="linux",
            os="debian12",
            target="x86_64_v3",
        )
        builds.append(MirrorBuild(record=record, files={"share/small.txt": "small\n"}))
    return write_mirror(root, builds)


# -------------------------------------------------------------------------------------------
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


def _resolve_closure(mirror: Path, spec: str, target: str) -> set[str]:
    import contextlib
    import io

    from cacheclient.cli.main import main

    out = io.StringIO()
    host = ["--platform", "linux", "--os", "debian12", "--target", target]
    with contextlib.redirect_stdout(out):
        code = main(["resolve", spec, *host, "--mirror", str(mirror), "--json"])
    assert code == 0, f"cannot resolve {spec} for {target}"
    (request,) = json.loads(out.getvalue())["requests"]
    return {str(node["hash"]) for node in request["closure"]}


def _fault_paths(mirror: Path) -> dict[str, list[str]]:
    """URL paths of each build's manifest and blobs, by DAG hash ("" : the index's)."""
    from cacheclient.sources.manifest import parse_manifest

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
    import random
    import signal
    import time
    from collections import Counter

    from cacheclient.cli.main import main
    from faultserver import Fault, FaultServer

    rng = random.Random(config.seed)  # noqa: S311 - reproducible faults
    totals = SoakTotals(failures=[])
    failures = totals.failures
    assert failures is not None
    closures: dict[tuple[str, str, str], set[str]] = {}
    for job in _JOBS:
        command, spec, target = job
        if command == "warm":
            closures[job] = set().union(
                *(_resolve_closure(mirror, s, t) for s in _WARM_SPECS for t in _WARM_TARGETS)
            )
        else:
            closures[job] = _resolve_closure(mirror, spec, target)
    jobs = [j for j in _JOBS if config.install or j[0] != "install"]
    paths = _fault_paths(mirror)
    whole = set(paths[""]) | {p for v in paths.values() for p in v if p.startswith("/v3/")}
    env = cli_env({"CACHECLIENT_READ_TIMEOUT": "1", "CACHECLIENT_RETRIES": "3"})
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
                with contextlib_quiet():
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
                    expected |= closures[job]
                    if job[0] == "install":
                        installed |= closures[job]
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
                trouble += store_problems(store, allow_partials=False)
                trouble += root_problems(root)
                if trouble:
                    failures.append(f"recovery after run {run}: {trouble}")
                else:
                    totals.recoveries_passed += 1
            if (run + 1) % 10 == 0:
                log(f"  soak: {run + 1}/{config.runs} runs, {totals.passed} passed")
    finally:
        server.stop()
    return totals


class contextlib_quiet:
    """Silence stdout/stderr of in-process CLI calls."""

    def __enter__(self) -> None:
        import contextlib
        import io

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        self._stack.enter_context(contextlib.redirect_stderr(io.StringIO()))

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


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
        result = run_cli(args_for(job, store, root), env=env)
        if result.code != 0:
            trouble.append(f"recovery {job[0]} {job[1]}: exit {result.code}: {result.err[-300:]}")
    return trouble


def _judge(
    store: Path, root: Path, expected: set[str], installed: set[str], *, crashed: bool
) -> tuple[int, int, list[str]]:
    """(corrupt blobs, lost builds, other problems) of a store and root after a run."""
    corrupt = lost = 0
    other: list[str] = []
    for problem in store_problems(store):
        if problem.startswith(("corrupt blob", "not a blob", "blob in the wrong shard")):
            corrupt += 1
            other.append(problem)
        elif " lost its " in problem:
            lost += 1
            other.append(problem)
        else:
            other.append(problem)
    present = store_builds(store)
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
    other += root_problems(root, after_crash=crashed)
    return corrupt, lost, other
