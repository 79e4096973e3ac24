"""Spack 1.1 itself reads what cacheclient publishes: warmed stores and exported mirrors.

Scenarios (each a directory Spack is pointed at, as a *signed* mirror):

- ``v3``: a store warmed from the layout-v3 fixture (18 builds, two fetch runs, then ``gc``);
- ``v2``: a store warmed from Spack's own v2 test mirror (6 builds: specfile formats 4 and 5);
- ``v2-db7``: only its two specfile-format-4 builds (a Spack 0.21-0.23 style ``index.json``, DB 7);
- ``mixed``: both mirrors into one store;
- ``export-all`` / ``export-subset``: ``cacheclient export`` of the mixed store, everything or
  two requested builds (their closures come along, nothing else).

The suite needs the spack-kit (``$SPACK_KIT``, default ``../shared/tools/spack-kit``) and fails,
never skips, without it; ``$SPACK_KIT_DIR`` may name a kit directory already set up (reused).
For each scenario, a Spack user with an empty keyring runs ``buildcache keys --install --trust``,
``buildcache list --allarch -l``, ``install --cache-only /HASH`` of every build,
``buildcache prune --dry-run``; every installed demo program is run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from cacheclient.metadata.layout import INDEX_V2, INDEX_V3
from paths import SPACK_V3, SPACK_V3_KEY, SPACK_V3_SIGNED, V2_MIRRORS
from spackkit import SpackClient, SpackKit, find_kit, mock_recipes

V3_KEY = (SPACK_V3 / "public-key.fingerprint.txt").read_text().split()[0].replace(" ", "")
V2_SIGNED = V2_MIRRORS / "signed"
V2_KEY = "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E"
V2_KEY_FILE = V2_SIGNED / "build_cache" / "_pgp" / f"{V2_KEY}.pub"

V3_BUILDS = {
    s["dag_hash"]: s["name"]
    for s in json.loads((SPACK_V3 / "signed.expected.json").read_text())["specs"]
}
V2_CORE2 = {
    "rqh2vuf6fqwkmipzgi2wjx352mq7y7ez": "libelf",
    "sk2gqqz4n5njmvktycnd25wq25jxiqkr": "libdwarf",
}
V2_M1 = {
    "qeehcxyvluwnihsc2qxstmpomtxo3lrc": "compiler-wrapper",
    "izgzpzeljwairalfjm3k6fntbb64nt6n": "gcc-runtime",
    "jr3yipyxyjulcdvckwwwjrrumis7glpa": "libelf",
    "u5uz3dcch5if4eve4sef67o2rf2lbfgh": "libdwarf",
}
DEMO_TOOL_V3 = "p3ni4vmgrbpf2zerdw3f2o22ifxs2xn7"  # demo-tool 1.0.0 x86_64_v3: 4 builds
DEMO_TOOL_CLOSURE = {
    DEMO_TOOL_V3,
    "5s4uqu7gef2mqgoqw7kykodn5gxxbsvp",  # demo-libfoo
    "4pnfv56zoqkyu4cep6uzu76sb73mlq2w",  # demo-zlib
    "cuiosmvpussyswfojxbhhasrvcoge43v",  # demo-pyhooks
}
EVERY_BUILD = {**V3_BUILDS, **V2_CORE2, **V2_M1}


def cacheclient(*args: str) -> None:
    code = main(list(args))
    assert code == 0, f"cacheclient {' '.join(args)} exited {code}"


def warm_v3(store: Path) -> None:
    cacheclient("keys", "trust", "--store", str(store), str(SPACK_V3_KEY))
    hashes = sorted(V3_BUILDS)
    host = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
    for batch in (hashes[:9], hashes):  # two runs: the first index is superseded
        mirror = ["--mirror", str(SPACK_V3_SIGNED)]
        cacheclient("fetch", "--store", str(store), *mirror, *host, "-q", *[f"/{h}" for h in batch])


def warm_v2(store: Path, *, m1: bool = True) -> None:
    cacheclient("keys", "trust", "--store", str(store), str(V2_KEY_FILE))
    batches = [("core2", V2_CORE2)] + ([("m1", V2_M1)] if m1 else [])
    for target, builds in batches:
        host = ["--platform", "test", "--os", "debian6", "--target", target]
        mirror = ["--mirror", str(V2_SIGNED)]
        wanted = [f"/{h}" for h in builds]
        cacheclient("fetch", "--store", str(store), *mirror, *host, "-q", *wanted)


def gc(store: Path) -> None:
    cacheclient("gc", "--store", str(store), "--older-than", "3650d")


@dataclass(frozen=True, kw_only=True, slots=True)
class Scenario:
    name: str
    mirror: Path
    builds: dict[str, str]
    signers: frozenset[str]
    v2_db: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Observed:
    """What one fresh Spack user saw and did with a scenario's mirror."""

    scenario: Scenario
    client: SpackClient
    keys: str
    fingerprints: frozenset[str]
    listing: str
    install: str
    prune: str


def _make(name: str, root: Path) -> Scenario:
    if name == "v3":
        warm_v3(root / "store")
        gc(root / "store")
        return Scenario(
            name=name, mirror=root / "store", builds=V3_BUILDS, signers=frozenset({V3_KEY}),
            v2_db=None,
        )  # fmt: skip
    if name in ("v2", "v2-db7"):
        warm_v2(root / "store", m1=name == "v2")
        gc(root / "store")
        builds = {**V2_CORE2, **V2_M1} if name == "v2" else dict(V2_CORE2)
        return Scenario(
            name=name, mirror=root / "store", builds=builds, signers=frozenset({V2_KEY}),
            v2_db="8" if name == "v2" else "7",
        )  # fmt: skip
    mixed = root.parent / "mixed-store"
    if not mixed.exists():
        warm_v2(mixed)
        warm_v3(mixed)
        gc(mixed)
    both = frozenset({V3_KEY, V2_KEY})
    if name == "mixed":
        return Scenario(name=name, mirror=mixed, builds=EVERY_BUILD, signers=both, v2_db="8")
    if name == "export-all":
        cacheclient("export", "--store", str(mixed), "--all", str(root / "export"))
        return Scenario(
            name=name, mirror=root / "export", builds=EVERY_BUILD, signers=both, v2_db="8"
        )
    assert name == "export-subset"
    wanted = [f"/{DEMO_TOOL_V3[:7]}", "libdwarf target=core2"]
    cacheclient("export", "--store", str(mixed), *wanted, str(root / "export"))
    subset = {h: EVERY_BUILD[h] for h in (*DEMO_TOOL_CLOSURE, *V2_CORE2)}
    return Scenario(name=name, mirror=root / "export", builds=subset, signers=both, v2_db="7")


@pytest.fixture(scope="session")
def spack_kit(tmp_path_factory: pytest.TempPathFactory) -> SpackKit:
    """The kit's Spack, with the demo recipes (from the v3 fixture's tarballs) registered and
    the stand-in recipes of Spack's v2 test mirrors written."""
    kit = find_kit()
    if not (kit / "setup.sh").is_file():
        pytest.fail(
            f"the spack-kit is missing at {kit} (set SPACK_KIT or put the shared folder "
            "beside the repository): the interop suite cannot run without Spack",
            pytrace=False,
        )
    reuse = os.environ.get("SPACK_KIT_DIR")
    directory = Path(reuse) if reuse else tmp_path_factory.mktemp("spack")
    for cmd in (
        [str(kit / "setup.sh"), str(directory)],
        [str(kit / "add-recipes.sh"), str(directory), str(SPACK_V3_SIGNED)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    recipes = mock_recipes(tmp_path_factory.mktemp("recipes"))
    return SpackKit(kit=kit, directory=directory, repos=(recipes,))


SCENARIOS = ("v3", "v2", "v2-db7", "mixed", "export-all", "export-subset")
_OBSERVED: dict[str, Observed] = {}


@pytest.fixture(scope="session")
def interop_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interop")


@pytest.fixture(params=SCENARIOS)
def observed(request: pytest.FixtureRequest, spack_kit: SpackKit, interop_root: Path) -> Observed:
    name: str = request.param
    if name not in _OBSERVED:
        scenario = _make(name, interop_root / name)
        client = spack_kit.client(interop_root / name / "spack-user", scenario.mirror)
        try:
            keys = client.run("buildcache", "keys", "--install", "--trust")
            gpg = client.run("gpg", "list")
            listing = client.run("buildcache", "list", "--allarch", "-l")
            install = client.run("install", "--cache-only", *[f"/{h}" for h in scenario.builds])
            prune = client.run("buildcache", "prune", "--dry-run", "store")
        finally:
            client.stop_agent()
        _OBSERVED[name] = Observed(
            scenario=scenario,
            client=client,
            keys=keys.stdout + keys.stderr,
            fingerprints=frozenset(re.findall(r"\b[0-9A-F]{40}\b", gpg.stdout)),
            listing=listing.stdout,
            install=install.stdout + install.stderr,
            prune=prune.stdout + prune.stderr,
        )
    return _OBSERVED[name]


def test_keys_the_mirror_publishes_are_its_signers(observed: Observed) -> None:
    assert observed.fingerprints == observed.scenario.signers, observed.keys


def test_list_shows_every_build_and_no_other(observed: Observed) -> None:
    listed = set(re.findall(r"^([a-z2-7]{7}) ", observed.listing, re.MULTILINE))
    expected = {h[:7] for h in observed.scenario.builds}
    assert expected <= listed, observed.listing
    others = {h[:7] for h in EVERY_BUILD} - expected
    assert not listed & others, observed.listing


def _prefixes(client: SpackClient) -> dict[str, Path]:
    return {p.name.rsplit("-", 1)[-1]: p for p in client.tree.glob("*/*-*") if p.is_dir()}


def test_every_build_installs(observed: Observed) -> None:
    installed = _prefixes(observed.client)
    missing = sorted(set(observed.scenario.builds) - set(installed))
    assert not missing, observed.install


def test_every_installed_demo_program_runs(observed: Observed) -> None:
    ran = 0
    for dag_hash, prefix in sorted(_prefixes(observed.client).items()):
        if not observed.scenario.builds.get(dag_hash, "").startswith("demo-"):
            continue
        for program in sorted((prefix / "bin").glob("*")):
            if not os.access(program, os.X_OK):
                continue
            proc = subprocess.run(
                [str(program)], capture_output=True, text=True, timeout=60, check=False
            )
            assert proc.returncode == 0, f"{program}: exit {proc.returncode}\n{proc.stderr}"
            assert "__spack_path_placeholder__" not in proc.stdout, f"{program}: not relocated"
            ran += 1
    with_programs = ("demo-tool", "demo-zlib", "demo-pyhooks")  # demo-libfoo has none
    assert ran >= sum(1 for n in observed.scenario.builds.values() if n in with_programs)


def test_prune_finds_nothing(observed: Observed) -> None:
    assert "Would have pruned 0 orphaned objects" in observed.prune, observed.prune


def test_each_index_holds_records_its_version_allows(observed: Observed) -> None:
    root = observed.scenario.mirror
    manifest = json.loads((root / INDEX_V3).read_text())
    (record,) = manifest["data"]
    blob = root / "blobs" / "sha256" / record["checksum"][:2] / record["checksum"]
    db = json.loads(blob.read_bytes())["database"]
    assert record["mediaType"] == "application/vnd.spack.db.v8+json"
    assert db["version"] == "8"
    assert not [h for h, r in db["installs"].items() if "compiler" in r["spec"]]
    in_v3 = {h for h, r in db["installs"].items() if r["in_buildcache"]}
    assert in_v3 == {h for h in observed.scenario.builds if h in V3_BUILDS}
    v2 = root / INDEX_V2
    if observed.scenario.v2_db is None:
        assert not v2.exists()
        return
    db2 = json.loads(v2.read_bytes())["database"]
    assert db2["version"] == observed.scenario.v2_db
    if db2["version"] == "8":
        assert not [h for h, r in db2["installs"].items() if "compiler" in r["spec"]]
    in_v2 = {h for h, r in db2["installs"].items() if r["in_buildcache"]}
    assert in_v2 == {h for h in observed.scenario.builds if h not in V3_BUILDS}


def test_gc_that_forgets_a_build_leaves_nothing_for_spack_to_prune(
    spack_kit: SpackKit, interop_root: Path
) -> None:
    """``gc`` evicts one tarball: the build is forgotten, its spec blob removed with it, the
    index republished; Spack no longer lists it and finds no orphan."""
    store = interop_root / "gc" / "store"
    warm_v3(store)
    victim = DEMO_TOOL_V3
    record = json.loads((store / ".cacheclient" / "builds" / f"{victim}.json").read_text())
    tarball = store / "blobs" / "sha256" / record["tarball"]["checksum"][:2]
    os.utime(tarball / record["tarball"]["checksum"], (1.0, 1.0))  # unused for 55 years
    cacheclient("gc", "--store", str(store), "--older-than", "30d")
    assert not (store / ".cacheclient" / "builds" / f"{victim}.json").exists()
    client = spack_kit.client(interop_root / "gc" / "spack-user", store)
    try:
        listing = client.run("buildcache", "list", "--allarch", "-l").stdout
        prune = client.run("buildcache", "prune", "--dry-run", "store")
    finally:
        client.stop_agent()
    listed = set(re.findall(r"^([a-z2-7]{7}) ", listing, re.MULTILINE))
    assert listed == {h[:7] for h in V3_BUILDS if h != victim}
    assert "Would have pruned 0 orphaned objects" in prune.stdout + prune.stderr
