"""Twelve processes fetching and installing overlapping closures into one store and one root.

All start together against one nginx mirror (Spack's signed fixture). Every one must succeed;
afterwards each blob was downloaded once, the store holds only verified blobs, the root holds
each build once, complete and recorded, and the installed program runs.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cacheclient.cli.main import main
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED
from reliability import SoakConfig, assert_clean, cli_env, root_problems, soak, store_builds
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


def test_small_randomized_soak(tmp_path: Path) -> None:
    """Twenty runs of the soak of ``bench/reliability.py`` (which runs 200): two concurrent
    warm/fetch/install processes per run, random faults, now and then a kill -9."""
    config = SoakConfig(runs=20, workers=2, seed=7, kill_probability=0.15)
    totals = soak(config, tmp_path, SPACK_V3_SIGNED, SPACK_V3_KEY, log=lambda _: None)
    assert totals.failures == []
    assert (totals.runs, totals.passed) == (20, 20)
    assert (totals.recoveries, totals.recoveries_passed) == (2, 2)
    assert totals.corrupt_blobs == 0
    assert totals.data_lost == 0
    assert totals.faults_fired > 0
