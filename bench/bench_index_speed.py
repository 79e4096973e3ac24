"""Index handling speed, in one run on one generated 60,000-record index: JSON parsers beside
cacheclient's cold, warm and TTL-expired resolves, over HTTP and from local mirrors.

Every step runs in a fresh process; its wall time and its own peak RSS (``/usr/bin/time``) are
printed, and the time as a ratio to ``json.load`` of the same file in the same run. The mirror
is served on 127.0.0.1 by Python's ``http.server`` as both layouts: v3 (manifest + blob, the
blob streamed into the store) and v2 (``index.json`` + ``index.json.hash``).

* parsers: ``json.load`` (the baseline), the same with the garbage collector off,
  ``orjson.loads`` (when installed), ``msgspec.json.decode``, and cacheclient's reader
  (msgspec, typed, decoding only the fields a record needs);
* cold: empty store: download, parse, write the parsed index, resolve;
* warm: same store within the index TTL: no request, no JSON parse, resolve; also a request no
  build fits (``--os debian9``): the index opened and the candidates read, but no closure;
* TTL expired: the cached state aged: one small request (v3 manifest / v2 ``index.json.hash``);
* local: the mirror directory as a path (v3) and a ``file://`` URL (v2), cold and warm;
* ``inspect`` of the local v3 mirror, warm: every one of the 60,000 records read;
* ``cacheclient --version`` / ``--help``: mean of 20 runs, beside ``python -c pass``.

Usage: ``python bench/bench_index_speed.py [--records 60000] [--repeat 3]`` (best of N for
every step but the cold ones, which run once per fresh store and are also best of N).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARSERS = {
    "json.load": "import json\nwith open(PATH, 'rb') as f: json.load(f)",
    "json.load, gc off": "import gc, json\ngc.disable()\nwith open(PATH, 'rb') as f: json.load(f)",
    "orjson.loads": "import orjson\nwith open(PATH, 'rb') as f: orjson.loads(f.read())",
    "msgspec.json.decode": (
        "import msgspec\nwith open(PATH, 'rb') as f: msgspec.json.decode(f.read())"
    ),
    "cacheclient reader (msgspec, typed)": (
        "from cacheclient.metadata.database import gc_paused\n"
        "from cacheclient.metadata.database_fast import read_records\n"
        "with open(PATH, 'rb') as f: data = f.read()\n"
        "with gc_paused():\n"
        "    for _ in read_records(data, PATH): pass"
    ),
}


TIME = shutil.which("time", path="/usr/bin:/bin")


Result = tuple[float, float, str, float]
"""``(wall seconds, peak RSS MB, stdout, CPU seconds)``"""


def run_measured(cmd: list[str], env: dict[str, str]) -> Result:
    """``(wall seconds, peak RSS MB, stdout, CPU seconds)`` of one fresh process.

    The peak is measured by ``/usr/bin/time`` (a small C parent): a child forked from this
    script directly would count this script's own memory as its peak."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        full = [TIME, "-f", "%M %U %S", "-o", rss.name, *cmd] if TIME else cmd
        start = time.perf_counter()
        proc = subprocess.run(full, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode not in (0, 3):
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
        text = rss.read().strip().splitlines()
    try:
        kb, user, system = text[-1].split()
        peak, cpu = int(kb) / 1024, float(user) + float(system)
    except (IndexError, ValueError):
        peak = cpu = float("nan")
    return elapsed, peak, proc.stdout, cpu


def best(results: list[Result]) -> Result:
    return min(results, key=lambda r: r[0])


def age_index_state(store: Path) -> None:
    for meta in store.rglob(".cacheclient/indices/*/meta.json"):
        data = json.loads(meta.read_text())
        data["checked_at"] = 0
        meta.write_text(json.dumps(data))


def clean_package(installs: dict[str, dict]) -> tuple[str, int]:  # type: ignore[type-arg]
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
    top = max(sorted(ok), key=lambda n: ok[n])
    return top, ok[top]


def make_mirror(root: Path, records: int) -> tuple[Path, str, int]:
    """A mirror with both layouts over one generated index; ``(index path, package, count)``."""
    index = root / "build_cache" / "index.json"
    index.parent.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            str(HERE / "index_gen.py"),
            str(index),
            "--records",
            str(records),
            "--holes",
            "0",
        ],
        check=True,
        capture_output=True,
    )
    data = index.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    (index.parent / "index.json.hash").write_text(digest + "\n")
    blob = root / "blobs" / "sha256" / digest[:2] / digest
    blob.parent.mkdir(parents=True)
    os.link(index, blob)
    manifest = {
        "version": 3,
        "data": [
            {
                "contentLength": len(data),
                "mediaType": "application/vnd.spack.db.v8+json",
                "compression": "none",
                "checksumAlgorithm": "sha256",
                "checksum": digest,
            }
        ],
    }
    path = root / "v3" / "manifests" / "index" / "index.manifest.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    (root / "v3" / "layout.json").write_text('{"signing": "gpg"}')
    package, count = clean_package(json.loads(data)["database"]["installs"])
    return index, package, count


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(HERE.parent / "src")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        v3_mirror, v2_mirror = root / "v3-mirror", root / "v2-mirror"
        index, package, count = make_mirror(v3_mirror, args.records)
        shutil.copytree(v3_mirror / "build_cache", v2_mirror / "build_cache")
        shutil.rmtree(v3_mirror / "build_cache")
        index = v2_mirror / "build_cache" / "index.json"
        servers = [serve(v3_mirror), serve(v2_mirror)]
        (_, v3_url), (_, v2_url) = servers
        rows: list[tuple[str, float, float, float]] = []
        answers: list[object] = []

        def answer(out: str) -> object:
            (req,) = json.loads(out)["requests"]
            selected = req.get("selected") or {}
            return selected.get("hash"), [c["hash"] for c in req.get("closure") or []]

        def record(label: str, result: Result) -> None:
            rows.append((label, result[0], result[1], result[3]))

        def repeat(cmd: list[str], run_env: dict[str, str]) -> Result:
            return best([run_measured(cmd, run_env) for _ in range(args.repeat)])

        for label, code in PARSERS.items():
            if label == "orjson.loads" and importlib.util.find_spec("orjson") is None:
                continue
            cmd = [sys.executable, "-c", f"PATH = {str(index)!r}\n{code}"]
            record(label, repeat(cmd, env))

        resolve = [
            sys.executable, "-m", "cacheclient", "resolve", package,
            "--platform", "linux", "--os", "ubuntu22.04", "--target", "x86_64_v3", "--json",
        ]  # fmt: skip
        for name, mirror in (
            ("HTTP v3", v3_url),
            ("HTTP v2", v2_url),
            ("local v3 (path)", str(v3_mirror)),
            ("local v2 (file://)", v2_mirror.as_uri()),
        ):
            cmd = [*resolve, "--mirror", mirror]
            colds = []
            store = root / "store"
            for i in range(args.repeat):
                store = root / f"store-{name.split()[0]}-{name.split()[1]}-{i}"
                colds.append(run_measured(cmd, {**env, "CACHECLIENT_STORE": str(store)}))
            cold = best(colds)
            store_env = {**env, "CACHECLIENT_STORE": str(store)}
            warm = repeat(cmd, store_env)
            record(f"resolve, cold, {name}", cold)
            record(f"resolve, warm, {name}", warm)
            answers += [answer(cold[2]), answer(warm[2])]
            if name == "HTTP v3":
                # the fixed cost: the index opened and the 38 candidates read, no closure to read
                none_fits = [
                    *cmd[: cmd.index("ubuntu22.04")],
                    "debian9",
                    *cmd[cmd.index("ubuntu22.04") + 1 :],
                ]
                record(
                    "resolve, warm, HTTP v3, no closure to read",
                    repeat(none_fits, store_env),
                )
            if name.startswith("local v3"):
                inspect = [sys.executable, "-m", "cacheclient", "inspect", mirror, "--json"]
                record("inspect, warm, local v3 (every record read)", repeat(inspect, store_env))
            if name.startswith("HTTP"):
                expired = []
                for _ in range(args.repeat):
                    age_index_state(store)
                    expired.append(run_measured(cmd, store_env))
                ttl = best(expired)
                record(f"resolve, TTL expired, {name}", ttl)
                answers.append(answer(ttl[2]))
            if name == "HTTP v3":
                expired = []
                for _ in range(args.repeat):
                    age_index_state(store)
                    expired.append(run_measured(none_fits, store_env))
                record("resolve, TTL expired, HTTP v3, no closure", best(expired))
        for server, _ in servers:
            server.shutdown()

        def mean_of(cmd: list[str], n: int = 20) -> Result:
            results = [run_measured(cmd, env) for _ in range(n)]
            return (
                sum(r[0] for r in results) / n,
                max(r[1] for r in results),
                "",
                sum(r[3] for r in results) / n,
            )

        startup = mean_of([sys.executable, "-c", "pass"])
        version = mean_of([sys.executable, "-m", "cacheclient", "--version"])
        helptext = mean_of([sys.executable, "-m", "cacheclient", "--help"])
        size = index.stat().st_size / 1e6
        base = rows[0][1]
        print(
            f"index: {args.records} records, {size:.0f} MB; {package}: {count} records; "
            f"closure of the selected build: {len(answers[0][1])} builds; "  # type: ignore[index]
            f"best of {args.repeat}, each a fresh process"
        )
        print(f"{'step':44} {'seconds':>8} {'x json.load':>12} {'peak MB':>8} {'CPU s':>7}")
        for label, secs, peak, cpu in rows:
            print(f"{label:44} {secs:8.2f} {secs / base:12.2f} {peak:8.0f} {cpu:7.2f}")
        for label, result in (
            ("python -c pass (mean of 20)", startup),
            ("cacheclient --version (mean of 20)", version),
            ("cacheclient --help (mean of 20)", helptext),
        ):
            wall, peak, _, cpu = result
            print(f"{label:44} {wall:8.3f} {'':12} {peak:8.0f} {cpu:7.3f}")
        same = all(a == answers[0] for a in answers)
        print(f"same answer every time: {same}")
        print("Spack, for context (issue 13, this machine, this index): about a minute and 1.4 GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
