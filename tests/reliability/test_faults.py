"""The network and server fault matrix, end to end through ``cacheclient fetch``.

Every case serves Spack's signed fixture mirror through the fault-injecting server (or nginx),
injects one fault, runs ``cacheclient fetch demo-tool@1.0.0`` for one host and checks: the exit
code, the one-line message (no traceback), that the store holds only verified blobs in its own
layout, and, when the run succeeds, that every build of the closure is in the store. Transient
faults that stop (``times=N``) must be recovered from; permanent ones must end in a clean error.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cacheclient.cli.main import main
from paths import SPACK_V3, SPACK_V3_KEY, SPACK_V3_SIGNED, V2_MIRRORS
from reliability import assert_clean, assert_one_line_error, store_builds
from servers import Fault, FaultServer, NginxServer, refused_url

MakeFaultServer = Callable[..., FaultServer]
ServeDir = Callable[..., NginxServer]
Capture = pytest.CaptureFixture[str]

HOST = ["--platform", "linux", "--os", "debian12", "--target", "x86_64_v4"]
SPEC = "demo-tool@1.0.0"
TOOL = "vwaicymp67emhvtu53ght22dv5pm6y2b"
EXPECTED = json.loads((SPACK_V3 / "signed.expected.json").read_text())
BY_HASH = {s["dag_hash"]: s for s in EXPECTED["specs"]}


def _closure(dag_hash: str) -> list[str]:
    out: list[str] = []
    stack = [dag_hash]
    while stack:
        h = stack.pop()
        if h not in out:
            out.append(h)
            stack.extend(d["dag_hash"] for d in BY_HASH[h]["dependencies"] if d["in_mirror"])
    return out


CLOSURE = _closure(TOOL)
TARBALL = "/" + BY_HASH[TOOL]["tarball"]["path"]
SPEC_BLOB = "/" + BY_HASH[TOOL]["spec_blob"]["path"]
MANIFEST = "/" + BY_HASH[TOOL]["spec_manifest"]["path"]
INDEX_MANIFEST = "/" + EXPECTED["index"]["manifest"]
INDEX_BLOB = "/" + EXPECTED["index"]["blob"]
OTHER_TARBALL = "/" + BY_HASH[CLOSURE[1]]["tarball"]["path"]


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHECLIENT_RETRIES", "3")
    monkeypatch.setenv("CACHECLIENT_READ_TIMEOUT", "1")
    monkeypatch.setenv("CACHECLIENT_CONNECT_TIMEOUT", "2")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    assert main(["keys", "trust", str(SPACK_V3_KEY), "--store", str(path)]) == 0
    return path


def fetch(store: Path, *mirrors: str, capsys: Capture) -> tuple[int, str]:
    capsys.readouterr()
    args = [SPEC, *HOST, "--store", str(store), "--quiet", "--jobs", "4"]
    for mirror in mirrors:
        args += ["--mirror", mirror]
    code = main(["fetch", *args])
    return code, capsys.readouterr().err


def assert_complete(store: Path) -> None:
    builds = store_builds(store)
    assert set(CLOSURE) <= set(builds), sorted(builds)
    assert_clean(store)


def _f(**kw: object) -> Callable[[], list[Fault]]:
    return lambda: [Fault(**kw)]  # type: ignore[arg-type]


# Faults that stop after a while: the run must recover and end verified.
RECOVERED: dict[str, Callable[[], list[Fault]]] = {
    "reset-mid-body": _f(kind="reset", path=TARBALL, times=1),
    "reset-twice": _f(kind="reset", path=TARBALL, times=2, after_bytes=100),
    "truncated-with-length": _f(kind="truncate", path=TARBALL, times=1),
    "truncated-without-length": _f(kind="truncate_no_length", path=TARBALL, times=1),
    "truncated-spec-blob": _f(kind="truncate_no_length", path=SPEC_BLOB, times=1),
    "truncated-manifest-without-length": _f(kind="truncate_no_length", path=MANIFEST, times=1),
    "truncated-manifest": _f(kind="truncate", path=MANIFEST, times=2),
    "truncated-index-without-length": _f(kind="truncate_no_length", path=INDEX_MANIFEST, times=1),
    "truncated-index-blob-without-length": _f(kind="truncate_no_length", path=INDEX_BLOB, times=1),
    "stalled-body": _f(kind="stall", path=TARBALL, times=1, stall_seconds=5),
    "stalled-manifest": _f(kind="stall", path=MANIFEST, times=1, stall_seconds=5),
    "500": _f(kind="status", status=500, path=TARBALL, times=2),
    "502": _f(kind="status", status=502, prefix="/blobs/", times=2),
    "503-retry-after": _f(kind="status", status=503, retry_after="1", path=TARBALL, times=1),
    "429-retry-after": _f(kind="status", status=429, retry_after="0", prefix="/v3/", times=2),
    "429-no-retry-after": _f(kind="status", status=429, path=MANIFEST, times=1),
    "503-index": _f(kind="status", status=503, path=INDEX_MANIFEST, times=2),
    "reset-index-blob": _f(kind="reset", path=INDEX_BLOB, times=1),
    "404-manifest-push-race": _f(kind="not_found", path=MANIFEST, times=1),
    "every-blob-once": lambda: [
        Fault(kind="reset", path=path, times=1, after_bytes=10)
        for path in [INDEX_BLOB]
        + ["/" + BY_HASH[h][k]["path"] for h in CLOSURE for k in ("tarball", "spec_blob")]
    ],
}


@pytest.mark.parametrize("case", sorted(RECOVERED))
def test_transient_fault_is_recovered(
    case: str, fault_server: MakeFaultServer, store: Path, capsys: Capture
) -> None:
    server = fault_server(SPACK_V3_SIGNED)
    faults = [server.inject(f) for f in RECOVERED[case]()]
    code, err = fetch(store, server.url, capsys=capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert all(f.hits > 0 for f in faults), "the fault never fired"
    assert_complete(store)
    assert_clean(store, allow_partials=False)


def test_reset_resumes_with_a_range_request(
    fault_server: MakeFaultServer, store: Path, capsys: Capture
) -> None:
    server = fault_server(SPACK_V3_SIGNED)
    server.inject(Fault(kind="reset", path=TARBALL, times=1, after_bytes=4096))
    code, err = fetch(store, server.url, capsys=capsys)
    assert code == 0, err
    ranges = [r.range for r in server.requests() if r.path == TARBALL]
    assert ranges[0] == ""
    assert ranges[-1].startswith("bytes="), ranges
    assert ranges[-1] != "bytes=0-", ranges
    assert_complete(store)


# Faults that never stop: a clean error, the failing build absent, every stored blob verified.
PERMANENT: dict[str, tuple[Callable[[], list[Fault]], int, tuple[str, ...]]] = {
    "reset": (_f(kind="reset", path=TARBALL), 5, (TARBALL,)),
    "truncated-with-length": (_f(kind="truncate", path=TARBALL), 5, (TARBALL,)),
    "truncated-without-length": (_f(kind="truncate_no_length", path=TARBALL), 5, (TARBALL,)),
    "stalled": (_f(kind="stall", path=TARBALL, stall_seconds=5), 5, (TARBALL,)),
    "overlong": (_f(kind="overlong", path=TARBALL), 4, (TARBALL, "size mismatch")),
    "500": (_f(kind="status", status=500, path=TARBALL), 5, (TARBALL, "HTTP 500")),
    "502": (_f(kind="status", status=502, path=TARBALL), 5, ("HTTP 502",)),
    "503-retry-after": (
        _f(kind="status", status=503, retry_after="1", path=TARBALL),
        5,
        ("HTTP 503",),
    ),
    "429": (_f(kind="status", status=429, path=MANIFEST), 5, (MANIFEST, "HTTP 429")),
    "404-tarball": (_f(kind="not_found", path=TARBALL), 5, ("not found", TOOL)),
    "redirect-loop-manifest": (_f(kind="redirect_loop", path=MANIFEST), 5, (MANIFEST,)),
    "redirect-loop-index": (_f(kind="redirect_loop", path=INDEX_MANIFEST), 5, (INDEX_MANIFEST,)),
    "different-blob-for-digest": (
        _f(kind="replace", path=TARBALL, body=b"not the tarball you asked for\n"),
        4,
        ("sha256", BY_HASH[TOOL]["tarball"]["sha256"]),
    ),
    "same-size-different-blob": (
        _f(kind="replace", path=TARBALL, body=b"\0" * BY_HASH[TOOL]["tarball"]["size"]),
        4,
        ("sha256 mismatch", BY_HASH[TOOL]["tarball"]["sha256"]),
    ),
    "index-blob-replaced": (
        _f(kind="replace", path=INDEX_BLOB, body=b'{"database": {"version": "8", "installs": {}}}'),
        4,
        ("index blob does not match",),
    ),
}


@pytest.mark.parametrize("case", sorted(PERMANENT))
def test_permanent_fault_is_a_clean_error(
    case: str,
    fault_server: MakeFaultServer,
    store: Path,
    capsys: Capture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHECLIENT_RETRIES", "2")  # it never stops: fail sooner
    make, expected, words = PERMANENT[case]
    server = fault_server(SPACK_V3_SIGNED)
    for fault in make():
        server.inject(fault)
    code, err = fetch(store, server.url, capsys=capsys)
    assert_one_line_error(err, code, expected, *words)
    assert TOOL not in store_builds(store)
    assert_clean(store)
    # Once the mirror behaves again the same command completes.
    server.clear_faults()
    code, err = fetch(store, server.url, capsys=capsys)
    assert code == 0, err
    assert_complete(store)


def test_connection_refused(store: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHECLIENT_RETRIES", "2")
    url = refused_url()
    code, err = fetch(store, url, capsys=capsys)
    host = url.split("://", 1)[1]
    line = assert_one_line_error(err, code, 5, f"cannot connect to {host}: connection refused")
    assert re.search(r"\(2 attempts in \d+ s\)$", line), line
    assert store_builds(store) == {}
    assert_clean(store)


def test_mirror_dies_mid_run(fault_server: MakeFaultServer, store: Path, capsys: Capture) -> None:
    """The index is read, then every blob request is refused: connection errors, exit 5."""
    server = fault_server(SPACK_V3_SIGNED)
    code, err = fetch(store, server.url, capsys=capsys)  # caches the index
    assert code == 0, err
    shutil.rmtree(store / "blobs")
    shutil.rmtree(store / ".cacheclient" / "builds")
    server.stop()
    code, err = fetch(store, server.url, capsys=capsys)
    host = server.url.split("://", 1)[1]
    assert_one_line_error(err, code, 5, f"cannot connect to {host}: connection refused")
    assert_clean(store)


def test_index_changed_between_manifest_and_blob(
    fault_server: MakeFaultServer, store: Path, capsys: Capture
) -> None:
    """The index manifest names a db blob the mirror no longer has (update-index raced us)."""
    server = fault_server(SPACK_V3_SIGNED)
    server.inject(Fault(kind="not_found", path=INDEX_BLOB))
    code, err = fetch(store, server.url, capsys=capsys)
    assert_one_line_error(err, code, 7, INDEX_BLOB.lstrip("/"))
    assert store_builds(store) == {}
    assert_clean(store)


def test_build_repushed_between_index_and_manifest(
    fault_server: MakeFaultServer, store: Path, capsys: Capture
) -> None:
    """The index lists a build whose manifest now names a tarball the mirror does not have."""
    server = fault_server(SPACK_V3_SIGNED)
    server.inject(Fault(kind="not_found", path=TARBALL))
    server.inject(Fault(kind="not_found", path=OTHER_TARBALL))
    code, err = fetch(store, server.url, capsys=capsys)
    assert_one_line_error(err, code, 5, "not found")
    assert TOOL not in store_builds(store)
    assert_clean(store)


def test_wrong_blob_on_one_mirror_good_on_the_other(
    fault_server: MakeFaultServer, store: Path, capsys: Capture
) -> None:
    bad = fault_server(SPACK_V3_SIGNED)
    good = fault_server(SPACK_V3_SIGNED)
    faults = [
        bad.inject(Fault(kind="replace", path="/" + BY_HASH[h]["tarball"]["path"], body=b"evil"))
        for h in CLOSURE
    ]
    code, err = fetch(store, bad.url, good.url, capsys=capsys)
    assert code == 0, err
    assert sum(f.hits for f in faults) > 0, "the bad mirror was never asked"
    assert_complete(store)


class TestNginx:
    """The same promises against Debian's nginx serving a damaged copy of the mirror."""

    @pytest.fixture
    def copy(self, tmp_path: Path) -> Path:
        target = tmp_path / "mirror"
        shutil.copytree(SPACK_V3_SIGNED, target)
        for path in target.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        return target

    def test_corrupted_file_on_disk(
        self, copy: Path, nginx_mirror: ServeDir, store: Path, capsys: Capture
    ) -> None:
        tarball = copy / TARBALL.lstrip("/")
        data = bytearray(tarball.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tarball.write_bytes(bytes(data))
        server = nginx_mirror(copy)
        code, err = fetch(store, server.url, capsys=capsys)
        assert_one_line_error(err, code, 4, "sha256 mismatch", TARBALL.lstrip("/"))
        assert TOOL not in store_builds(store)
        assert_clean(store)

    @pytest.mark.parametrize("where", ["disk", "server"])
    def test_listed_build_missing_the_next_best_is_fetched(  # noqa: PLR0917
        self,
        where: str,
        copy: Path,
        nginx_mirror: ServeDir,
        fault_server: Callable[..., FaultServer],
        store: Path,
        capsys: Capture,
    ) -> None:
        """The index lists the best build but no mirror has its manifest (deleted, or a 404
        every time): it is rejected on the closure axis and the next-best build is fetched."""
        if where == "disk":
            (copy / MANIFEST.lstrip("/")).unlink()
            url = nginx_mirror(copy).url
        else:
            server = fault_server(copy)
            server.inject(Fault(kind="not_found", path=MANIFEST))
            url = server.url
        code, err = fetch(store, url, capsys=capsys)
        assert code == 0, err
        builds = store_builds(store)
        assert TOOL not in builds
        assert any(BY_HASH[h]["name"] == "demo-tool" for h in builds if h in BY_HASH)
        assert_clean(store)

    def test_resume_of_a_partial_download_from_nginx(
        self, copy: Path, nginx_mirror: ServeDir, store: Path, capsys: Capture
    ) -> None:
        import requests

        server = nginx_mirror(copy)
        checksum = BY_HASH[TOOL]["tarball"]["sha256"]
        data = (copy / TARBALL.lstrip("/")).read_bytes()
        url = server.url + TARBALL
        etag = requests.head(url, timeout=10).headers["ETag"]
        # What a killed run leaves: the first half of the file and the validator it came with.
        partial = store / ".cacheclient" / "partial" / f"{checksum}.partial"
        partial.parent.mkdir(parents=True)
        partial.write_bytes(data[:4000])
        Path(str(partial) + ".meta").write_text(json.dumps({"url": url, "validator": etag}))
        code, err = fetch(store, server.url, capsys=capsys)
        assert code == 0, err
        gets = [e.range for e in server.requests() if e.uri == TARBALL and e.method == "GET"]
        assert gets == ["bytes=4000-"]
        assert not partial.exists()
        assert (store / TARBALL.lstrip("/")).read_bytes() == data
        assert_complete(store)
        assert_clean(store, allow_partials=False)

    def test_stopped_nginx(
        self, copy: Path, nginx_mirror: ServeDir, store: Path, capsys: Capture
    ) -> None:
        server = nginx_mirror(copy)
        url = server.url
        server.stop()
        code, err = fetch(store, url, capsys=capsys)
        assert_one_line_error(err, code, 5, f"cannot connect to {url.split('://', 1)[1]}")
        assert_clean(store)


V2_SIGNED = V2_MIRRORS / "signed"
V2_KEY = V2_SIGNED / "build_cache" / "_pgp" / "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E.pub"
V2_HOST = ["--platform", "test", "--os", "debian6", "--target", "core2"]
V2_TARBALL = next(
    "/" + p.relative_to(V2_SIGNED).as_posix()
    for p in V2_SIGNED.rglob("*.spack")
    if "core2" in p.name and "libdwarf" in p.name
)
V2_SPECFILE = next(
    "/" + p.relative_to(V2_SIGNED).as_posix()
    for p in V2_SIGNED.rglob("*.spec.json.sig")
    if "core2" in p.name and "libdwarf" in p.name
)

V2_RECOVERED: dict[str, Callable[[], list[Fault]]] = {
    "reset-tarball": _f(kind="reset", path=V2_TARBALL, times=1),
    "truncated-tarball": _f(kind="truncate", path=V2_TARBALL, times=2),
    "truncated-tarball-without-length": _f(kind="truncate_no_length", path=V2_TARBALL, times=1),
    "truncated-specfile-without-length": _f(kind="truncate_no_length", path=V2_SPECFILE, times=1),
    "503-specfile": _f(kind="status", status=503, path=V2_SPECFILE, times=2),
    "stalled-tarball": _f(kind="stall", path=V2_TARBALL, times=1, stall_seconds=5),
}


class TestV2Layout:
    """Spack's own v2 test mirror (``.spec.json.sig`` + ``.spack``): sizes are not known in
    advance there, so a short body is only caught by the checksum."""

    @pytest.fixture
    def v2_store(self, tmp_path: Path) -> Path:
        path = tmp_path / "store"
        assert main(["keys", "trust", str(V2_KEY), "--store", str(path)]) == 0
        return path

    def fetch_v2(self, store: Path, url: str, capsys: Capture) -> tuple[int, str]:
        capsys.readouterr()
        args = ["fetch", "libdwarf", *V2_HOST, "--mirror", url, "--store", str(store)]
        code = main([*args, "--quiet", "--jobs", "4"])
        return code, capsys.readouterr().err

    @pytest.mark.parametrize("case", sorted(V2_RECOVERED))
    def test_transient_fault_is_recovered(
        self, case: str, fault_server: MakeFaultServer, v2_store: Path, capsys: Capture
    ) -> None:
        server = fault_server(V2_SIGNED)
        faults = [server.inject(f) for f in V2_RECOVERED[case]()]
        code, err = self.fetch_v2(v2_store, server.url, capsys)
        assert code == 0, err
        assert all(f.hits for f in faults)
        assert len(store_builds(v2_store)) >= 2
        assert_clean(v2_store, allow_partials=False)

    def test_wrong_tarball_is_refused(
        self, fault_server: MakeFaultServer, v2_store: Path, capsys: Capture
    ) -> None:
        server = fault_server(V2_SIGNED)
        server.inject(Fault(kind="replace", path=V2_TARBALL, body=b"\x1f\x8b not it"))
        code, err = self.fetch_v2(v2_store, server.url, capsys)
        assert_one_line_error(err, code, 4, "sha256")
        assert_clean(v2_store)
