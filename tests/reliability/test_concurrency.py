"""Many processes on one store and one root: twelve fetching and installing overlapping
closures, six working while ``gc --max-size 0`` evicts all it may in a loop, and a small
randomized soak (the one ``bench/reliability.py`` runs 200 times).

Every process must succeed; afterwards each blob was downloaded once, the store holds only
verified blobs, the root holds each build once, complete and recorded, and the programs run.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cacheclient.cli.main import main
from paths import REPO_ROOT, SPACK_V3_KEY, SPACK_V3_SIGNED
from reliability import assert_clean, cli_env, root_problems, store_builds
from servers import NginxServer

ServeDir = Callable[..., NginxServer]


def _host(target: str) -> list[str]:
    return ["--platform", "linux", "--os", "debian12", "--target", target]


# (command, spec, target) per process: closures overlap (demo-zlib is in all of them).
WORKERS = [
    ("install", "demo-tool@1.0.0", "x86_64_v4"),
    ("install", "demo-tool@1.0.0", "x86_64_v4"),
    ("install", "demo-tool@1.0.0", "x86_64_v3"),
    ("install", "demo-zlib", "x86_64_v4"),
    ("install", "demo-libfoo", "x86_64_v3"),
    ("install", "demo-libfoo", "x86_64_v4"),
    ("install", "demo-pyhooks", "x86_64_v2"),
    ("fetch", "demo-tool@1.0.0", "x86_64_v3"),
    ("fetch", "demo-tool@1.0.0", "x86_64_v2"),
    ("fetch", "demo-zlib@1.2.13", "x86_64_v2"),
    ("fetch", "demo-pyhooks", "x86_64_v4"),
    ("install", "demo-tool@0.9.0", "x86_64_v4"),
]


def test_twelve_processes_share_one_store_and_one_root(
    nginx_mirror: ServeDir, tmp_path: Path
) -> None:
    server = nginx_mirror(SPACK_V3_SIGNED)
    store, root = tmp_path / "store", tmp_path / "root"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    procs = []
    for command, spec, target in WORKERS:
        args = [command, spec, *_host(target), "--mirror", server.url, "--store", str(store)]
        if command == "install":
            args += ["--root", str(root)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "cacheclient", *args, "--quiet", "--jobs", "3"],
                env=cli_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300) for p in procs]
    results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    assert [code for code, _, _ in results] == [0] * len(WORKERS), [e for _, _, e in results]
    assert all("Traceback" not in err for _, _, err in results)

    gets = collections.Counter(
        e.uri for e in server.requests() if e.uri.startswith("/blobs/") and e.status == 200
    )
    assert gets
    assert max(gets.values()) == 1, gets  # every blob once, the index included
    assert_clean(store, root, allow_partials=False)
    assert root_problems(root) == []

    db = (root / ".cacheclient" / "installed.json").read_text()
    installed = json.loads(db)["installs"]
    prefixes = [Path(rec["prefix"]) for rec in installed.values()]
    assert len(prefixes) == len(set(prefixes))
    on_disk = [p for p in root.glob("linux-*/demo-*") if p.is_dir()]
    assert sorted(on_disk) == sorted(prefixes)
    assert set(installed) <= set(store_builds(store))
    for tool in root.glob("linux-*/demo-tool-*/bin/demo-tool"):
        out = subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout
        assert out.startswith("demo-tool ")


def _bench() -> Any:
    """``bench/reliability.py`` (loaded by path: it shares its name with tests/reliability.py)."""
    path = REPO_ROOT / "bench" / "reliability.py"
    spec = importlib.util.spec_from_file_location("bench_reliability", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_reliability"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_small_randomized_soak(tmp_path: Path) -> None:
    """Twenty runs of the soak of ``bench/reliability.py`` (which runs 200): two concurrent
    warm/fetch/install processes per run, random faults, now and then a kill -9."""
    bench = _bench()
    config = bench.SoakConfig(runs=20, workers=2, seed=7, kill_probability=0.15)
    totals = bench.soak(config, tmp_path, SPACK_V3_SIGNED, SPACK_V3_KEY, log=lambda _: None)
    assert totals.failures == []
    assert (totals.runs, totals.passed) == (20, 20)
    assert (totals.recoveries, totals.recoveries_passed) == (2, 2)
    assert totals.corrupt_blobs == 0
    assert totals.data_lost == 0
    assert totals.faults_fired > 0


def test_gc_while_others_fetch_and_install(nginx_mirror: ServeDir, tmp_path: Path) -> None:
    """``gc --max-size 0`` evicting everything it may, over and over, while six processes
    fetch and install: nobody fails, nothing half-evicted remains."""
    server = nginx_mirror(SPACK_V3_SIGNED)
    store, root = tmp_path / "store", tmp_path / "root"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(store)]) == 0
    env = cli_env()
    stop = tmp_path / "stop"
    gc_loop = (
        "import contextlib, io, os, sys\n"
        "from cacheclient.cli.main import main\n"
        "n = 0\n"
        "while not os.path.exists(sys.argv[2]) and n < 2000:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(['gc', '--max-size', '0', '--store', sys.argv[1], '--json']) == 0\n"
        "    n += 1\n"
        "print(n)\n"
    )
    collector = subprocess.Popen(
        [sys.executable, "-c", gc_loop, str(store), str(stop)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs = []
    for command, spec, target in WORKERS[:6]:
        args = [command, spec, *_host(target), "--mirror", server.url, "--store", str(store)]
        if command == "install":
            args += ["--root", str(root)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "cacheclient", *args, "--quiet", "--jobs", "3"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errors = [p.communicate(timeout=300)[1] for p in procs]
    stop.touch()
    runs, gc_err = collector.communicate(timeout=300)
    assert collector.returncode == 0, gc_err
    assert int(runs) > 5  # it really ran while the others worked
    assert [p.returncode for p in procs] == [0] * len(procs), errors
    assert_clean(store, root, allow_partials=False)
    for tool in root.glob("linux-*/demo-tool-*/bin/demo-tool"):
        out = subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout
        assert out.startswith("demo-tool ")
