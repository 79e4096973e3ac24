"""Hostile metadata: forged or replayed signatures, bad keys, escaping paths, local URLs in
remote metadata, absurd numbers, nesting and strings, YAML alias bombs.

Mirrors are written here with :mod:`cacheclient.mirrors.writer` and signed with throwaway gpg
keys. Every case must be refused with one clear line (or, for harmless oddities such as
dash-escaped lines, accepted correctly) and leave no trace: no build record, no manifest, no
blob that did not verify, no request outside the mirror, no file outside the store.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cacheclient.ci.lock import Lock
from cacheclient.cli.main import main
from cacheclient.errors import MetadataError
from cacheclient.metadata.catalog import Catalog
from cacheclient.metadata.clearsign import split_clearsigned
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.manifest import manifest_to_json, parse_manifest
from cacheclient.metadata.page import read_page
from cacheclient.metadata.specfile import read_specfile
from cacheclient.mirrors.open import local_reader, open_catalog
from cacheclient.mirrors.writer import MirrorBuild, WrittenMirror, fake_hash, write_mirror
from cacheclient.model import BlobRef, BuildRecord, Manifest
from gpgtools import GpgKey
from paths import SEED_PAGE, SPACK_V3_UNSIGNED
from reliability import BIG_HOST, assert_clean, assert_one_line_error, cli_env, store_builds
from servers import FaultServer, NginxServer

MakeKey = Callable[..., GpgKey]
MakeFaultServer = Callable[..., FaultServer]
Capture = pytest.CaptureFixture[str]

INDEX = "v3/manifests/index/index.manifest.json"


def _record(name: str) -> BuildRecord:
    return BuildRecord(
        name=name,
        version="1.0",
        hash=fake_hash(name),
        platform="linux",
        os="debian12",
        target="x86_64_v3",
    )


ALPHA, BETA = _record("alpha"), _record("beta")


def write(root: Path, signer: Callable[[str], str] | None) -> WrittenMirror:
    builds = [
        MirrorBuild(record=r, files={f"share/{r.name}.txt": f"{r.name}\n"}) for r in (ALPHA, BETA)
    ]
    return write_mirror(root, builds, signer=signer)


def trusted_store(tmp_path: Path, key: GpgKey) -> Path:
    store = tmp_path / "store"
    public = key.export_public(tmp_path / f"{key.fingerprint}.asc")
    assert main(["keys", "trust", str(public), "--store", str(store)]) == 0
    return store


def fetch(store: Path, mirror: str, spec: str, capsys: Capture, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["fetch", spec, *BIG_HOST, "--mirror", mirror, "--store", str(store), *extra])
    return code, capsys.readouterr().err


def blobs_in(store: Path) -> list[str]:
    return sorted(p.name for p in (store / "blobs").rglob("*") if p.is_file())


def manifest_of(mirror: WrittenMirror, record: BuildRecord) -> Path:
    path = mirror.builds[record.hash].manifest_path
    assert path is not None
    return mirror.root / path


def rewrite_index(root: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Replace the mirror's index with ``change(db)`` (a dict, or raw bytes/str)."""
    ref = parse_manifest((root / INDEX).read_bytes(), "index").index_blob
    assert ref is not None
    db = json.loads((root / ref.path).read_bytes())
    new = change(db)
    data = new if isinstance(new, bytes) else (new if isinstance(new, str) else json.dumps(new))
    raw = data.encode() if isinstance(data, str) else data
    blob = BlobRef(
        media_type=ref.media_type, checksum=hashlib.sha256(raw).hexdigest(), size=len(raw)
    )
    (root / blob.path).parent.mkdir(parents=True, exist_ok=True)
    (root / blob.path).write_bytes(raw)
    (root / INDEX).write_text(manifest_to_json(Manifest(version=3, blobs=(blob,))))


def no_trace(store: Path, record: BuildRecord) -> None:
    assert record.hash not in store_builds(store)
    assert not list((store / "v3" / "manifests" / "spec").rglob(f"*{record.hash}*"))
    assert_clean(store)


class TestSignatures:
    def test_replayed_manifest_of_another_spec(
        self, gpg_key: GpgKey, tmp_path: Path, capsys: Capture
    ) -> None:
        """A valid signature by a trusted key, over alpha's manifest, served as beta's."""
        mirror = write(tmp_path / "m", gpg_key.clearsign)
        shutil.copy(manifest_of(mirror, ALPHA), manifest_of(mirror, BETA))
        store = trusted_store(tmp_path, gpg_key)
        code, err = fetch(store, str(mirror.root), "beta", capsys)
        assert_one_line_error(err, code, 4, f"alpha/{ALPHA.hash}", f"beta/{BETA.hash}")
        no_trace(store, BETA)

    def test_untrusted_key(
        self, gpg_key: GpgKey, gpg_key_factory: MakeKey, tmp_path: Path, capsys: Capture
    ) -> None:
        stranger = gpg_key_factory("stranger <s@cacheclient.invalid>")
        mirror = write(tmp_path / "m", stranger.clearsign)
        store = trusted_store(tmp_path, gpg_key)
        code, err = fetch(store, str(mirror.root), "alpha", capsys)
        assert_one_line_error(err, code, 4, "not trusted", stranger.fingerprint[-16:])
        assert blobs_in(store) == []
        no_trace(store, ALPHA)

    def test_revoked_key(self, gpg_key_factory: MakeKey, tmp_path: Path, capsys: Capture) -> None:
        key = gpg_key_factory("revoked <r@cacheclient.invalid>")
        mirror = write(tmp_path / "m", key.clearsign)
        store = trusted_store(tmp_path, key)
        key.revoke()
        assert main(["keys", "trust", str(key.export_public(tmp_path / "rev.asc")), "--store",
                     str(store)]) == 0  # fmt: skip
        code, err = fetch(store, str(mirror.root), "alpha", capsys)
        assert_one_line_error(err, code, 4, "revoked")
        assert blobs_in(store) == []
        no_trace(store, ALPHA)

    def test_expired_key(self, gpg_key_factory: MakeKey, tmp_path: Path, capsys: Capture) -> None:
        key = gpg_key_factory(
            "expired <e@cacheclient.invalid>", expire="1d", faked_system_time="20200101T000000"
        )
        mirror = write(
            tmp_path / "m", lambda t: key.clearsign(t, faked_system_time="20200101T000100")
        )
        store = trusted_store(tmp_path, key)
        code, err = fetch(store, str(mirror.root), "alpha", capsys)
        assert_one_line_error(err, code, 4, "expired")
        assert blobs_in(store) == []
        no_trace(store, ALPHA)

    @pytest.mark.parametrize(
        ("old", "new"),
        [('"contentLength":', '"contentLength": '), ("sha256", "SHA256")],
        ids=["whitespace", "algorithm-case"],
    )
    def test_payload_changed_under_a_valid_signature(
        self, old: str, new: str, gpg_key: GpgKey, tmp_path: Path, capsys: Capture
    ) -> None:
        mirror = write(tmp_path / "m", gpg_key.clearsign)
        path = manifest_of(mirror, ALPHA)
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
        store = trusted_store(tmp_path, gpg_key)
        code, err = fetch(store, str(mirror.root), "alpha", capsys)
        assert_one_line_error(err, code, 4, "signature")
        assert blobs_in(store) == []
        no_trace(store, ALPHA)

    def test_dash_escaped_lines_verify_and_parse(
        self, gpg_key: GpgKey, tmp_path: Path, capsys: Capture
    ) -> None:
        """Lines starting with '-' are dash-escaped by the signer and unescaped on verify."""
        mirror = write(tmp_path / "m", gpg_key.clearsign)
        build = mirror.builds[ALPHA.hash]
        assert build.spec_blob is not None
        blobs = (build.tarball, build.spec_blob)
        data = json.loads(manifest_to_json(Manifest(version=3, blobs=blobs)))
        text = '{"version": 3,\n"x": [\n-1,\n-2\n],\n"data": ' + json.dumps(data["data"]) + "}\n"
        signed = gpg_key.clearsign(text)
        assert "\n- -1,\n" in signed
        manifest_of(mirror, ALPHA).write_text(signed)
        store = trusted_store(tmp_path, gpg_key)
        code, err = fetch(store, str(mirror.root), "alpha", capsys)
        assert code == 0, err
        assert ALPHA.hash in store_builds(store)
        code, err = fetch(store, str(mirror.root), "alpha", capsys, "--offline")
        assert code == 0, err  # the stored manifest verifies again, dash escapes and all
        assert_clean(store, allow_partials=False)

    @pytest.mark.parametrize("where", ["before", "after", "unescaped-inside"])
    def test_unsigned_text_around_a_valid_signature_is_never_used(
        self,
        where: str,
        gpg_key: GpgKey,
        fault_server: MakeFaultServer,
        tmp_path: Path,
        capsys: Capture,
    ) -> None:
        mirror = write(tmp_path / "m", gpg_key.clearsign)
        evil_blob = BlobRef(
            media_type="application/vnd.spack.install.v2.tar+gzip",
            checksum=hashlib.sha256(b"evil").hexdigest(),
            size=4,
            compression="gzip",
        )
        evil = manifest_to_json(Manifest(version=3, blobs=(evil_blob,)))
        path = manifest_of(mirror, ALPHA)
        signed = path.read_text()
        if where == "before":
            text = evil + "\n" + signed
        elif where == "after":
            text = signed + evil + "\n"
        else:  # a forged line inside the signed part, without the '- ' escape
            text = signed.replace("\n\n{", f"\n\n{evil}\n-----\n{{", 1)
        path.write_text(text)
        server = fault_server(mirror.root)
        store = trusted_store(tmp_path, gpg_key)
        code, err = fetch(store, server.url, "alpha", capsys)
        assert "Traceback" not in err
        assert evil_blob.checksum not in {r.path.rsplit("/", 1)[-1] for r in server.requests()}
        if code == 0:
            (item,) = store_builds(store).values()
            assert item["tarball"]["checksum"] == mirror.builds[ALPHA.hash].tarball.checksum
        else:
            assert_one_line_error(err, code, code)
            assert code in (4, 7)
            no_trace(store, ALPHA)
        assert_clean(store)


class TestEscapes:
    def test_blob_digest_with_dotdot_is_refused(
        self, gpg_key: GpgKey, fault_server: MakeFaultServer, tmp_path: Path, capsys: Capture
    ) -> None:
        mirror = write(tmp_path / "m", None)
        path = manifest_of(mirror, ALPHA)
        doc = json.loads(path.read_text())
        doc["data"][0]["checksum"] = "../../../../../../etc/passwd"
        path.write_text(gpg_key.clearsign(json.dumps(doc)))
        server = fault_server(mirror.root)
        store = trusted_store(tmp_path, gpg_key)
        code, err = fetch(store, server.url, "alpha", capsys)
        assert_one_line_error(err, code, 7, "data[0].checksum")
        assert not [r.path for r in server.requests() if ".." in r.path]
        no_trace(store, ALPHA)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("name", "../../../../../../tmp/evil"),
            ("version", "../../../../../../tmp/evil"),
            ("name", "/etc/passwd"),
            ("version", "1.0/../../../../../x"),
        ],
    )
    def test_index_names_cannot_leave_the_mirror_or_the_store(
        self,
        *,
        field: str,
        value: str,
        gpg_key: GpgKey,
        fault_server: MakeFaultServer,
        tmp_path: Path,
        capsys: Capture,
    ) -> None:
        outside = tmp_path / "srv"
        mirror = write(outside / "m", gpg_key.clearsign)

        def change(db: dict[str, Any]) -> dict[str, Any]:
            db["database"]["installs"][ALPHA.hash]["spec"][field] = value
            return db

        rewrite_index(mirror.root, change)
        server = fault_server(outside)
        store = trusted_store(tmp_path, gpg_key)
        before = sorted(p.name for p in tmp_path.iterdir())
        code, err = fetch(store, f"{server.url}/m", f"/{ALPHA.hash}", capsys)
        assert "Traceback" not in err
        paths = [r.path for r in server.requests()]
        assert all(p.startswith("/m/") and "/../" not in p for p in paths), paths
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        if code != 0:
            assert_one_line_error(err, code, code, ALPHA.hash[:7])
            assert code in (3, 5, 7)
        assert_clean(store)

    @pytest.mark.parametrize(
        "stack",
        ["file:///", "LOCAL", "/abs/path", "http://127.0.0.2:9/latest", "../..", "a/../../b"],
    )
    def test_page_cannot_point_at_local_files_or_other_hosts(
        self,
        stack: str,
        gpg_key: GpgKey,
        fault_server: MakeFaultServer,
        tmp_path: Path,
        capsys: Capture,
    ) -> None:
        """A cache.spack.io page served over HTTP names a local, trusted, valid mirror as a
        stack: the page must be refused, and the local mirror never read."""
        local = write(tmp_path / "local", gpg_key.clearsign)
        label = {"LOCAL": str(local.root), "file:///": local.url}.get(stack, stack)
        entry = {
            "compiler": "none",
            "hash": ALPHA.hash,
            "os": "debian12",
            "platform": "linux",
            "size": "-",
            "stacks": [label],
            "target": "x86_64_v3",
            "variants": [],
            "versions": ["1.0"],
        }
        page = f"---\ntitle: alpha\nlayout: cache\nspec_details: [{json.dumps(entry)}]\n---\n"
        server = fault_server()
        server.put("/alpha.md", page.encode())
        store = trusted_store(tmp_path, gpg_key)
        capsys.readouterr()
        code = main(["fetch", "alpha", *BIG_HOST, "--metadata", f"{server.url}/alpha.md",
                     "--mirror-base", server.url, "--store", str(store)])  # fmt: skip
        err = capsys.readouterr().err
        assert_one_line_error(err, code, 7, "stacks[0]")
        assert blobs_in(store) == []
        no_trace(store, ALPHA)

    @pytest.mark.parametrize("what", ["index", "manifest", "blob"])
    def test_redirect_to_a_local_file_is_not_followed(
        self,
        what: str,
        gpg_key: GpgKey,
        nginx_mirror: Callable[..., NginxServer],
        tmp_path: Path,
        capsys: Capture,
    ) -> None:
        """The server answers 302 to ``file://`` of a valid local copy: never read it."""
        mirror = write(tmp_path / "m", gpg_key.clearsign)
        local = tmp_path / "local"
        shutil.copytree(mirror.root, local)
        build = mirror.builds[ALPHA.hash]
        path = {"index": INDEX, "manifest": build.manifest_path, "blob": build.tarball.path}[what]
        assert path is not None
        (mirror.root / path).unlink()
        extra = f"location = /{path} {{ return 302 {(local / path).as_uri()}; }}"
        server = nginx_mirror(mirror.root, extra=extra)
        store = trusted_store(tmp_path, gpg_key)
        before = (local / path).stat().st_atime_ns
        code, err = fetch(store, server.url, "alpha", capsys)
        assert_one_line_error(err, code, 5, "file://")
        assert (local / path).stat().st_atime_ns == before
        no_trace(store, ALPHA)


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _page(spec_details: str, extra: str = "") -> str:
    return f"---\ntitle: p\nlayout: cache\n{extra}spec_details: {spec_details}\n---\n"


BIG_INT = "9" * 5000
HUGE = "x" * (8 << 20)
REAL_MANIFEST = next(SPACK_V3_UNSIGNED.rglob("*.spec.manifest.json")).read_text()

READERS: dict[str, Callable[[str], object]] = {
    "manifest": lambda text: parse_manifest(text, "m.json"),
    "specfile": lambda text: read_specfile(text, "s.json"),
    "database": lambda text: parse_database(text.encode(), "db.json"),
    "page": lambda text: read_page(text, "page.md"),
    "clearsign": lambda text: split_clearsigned(text, "c.asc"),
    "lock": lambda text: Lock.from_json(text, "cacheclient.ci.lock"),
}


def _db(installs: str, version: str = '"8"') -> str:
    return '{"database": {"version": ' + version + ', "installs": ' + installs + "}}"


def _spec(nodes: str, version: str = "5") -> str:
    return '{"spec": {"_meta": {"version": ' + version + '}, "nodes": ' + nodes + "}}"


_LENGTH = '"contentLength":'
DEEP = _deep_json(200_000)
ABSURD: dict[str, tuple[str, str]] = {
    "manifest-giant-int": (
        "manifest",
        REAL_MANIFEST.replace(_LENGTH, f'{_LENGTH}{BIG_INT},"x":', 1),
    ),
    "manifest-inf": ("manifest", REAL_MANIFEST.replace(_LENGTH, f'{_LENGTH}1e999,"x":', 1)),
    "manifest-deep": ("manifest", '{"version": 3, "data": ' + DEEP + "}"),
    "manifest-huge-string": ("manifest", '{"version": 3, "data": [{"mediaType": "' + HUGE + '"}]}'),
    "specfile-deep": ("specfile", _spec(DEEP)),
    "specfile-giant-int": ("specfile", _spec("[]", BIG_INT)),
    "specfile-huge-name": ("specfile", _spec('[{"name": "' + HUGE + '"}]')),
    "database-deep": ("database", _db(DEEP)),
    "database-giant-int": ("database", _db("{}", BIG_INT)),
    "database-huge-key": ("database", _db('{"' + HUGE + '": {}}')),
    "page-giant-int": ("page", _page("[]", f"meta: {{num_specs: {BIG_INT}}}\n")),
    "page-huge-string": ("page", _page(f'[{{"hash": "{HUGE}"}}]')),
    "clearsign-huge": ("clearsign", "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + HUGE),
    "lock-deep": ("lock", '{"lock_version": 1, "mirrors": ' + DEEP + "}"),
    "lock-giant-int": ("lock", '{"lock_version": ' + BIG_INT + "}"),
}


_CHILD = """
import sys
from pathlib import Path
from cacheclient.errors import MetadataError
from cacheclient.metadata.page import read_page
path = Path(sys.argv[1])
try:
    read_page(path.read_text(), path.name)
except MetadataError as exc:
    print("MetadataError:", str(exc).split(" in a page")[0].split(" (")[0])
else:
    print("accepted")
"""


def _read_page_in_child(page: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(page)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    return proc.stdout.strip()


class TestAbsurdInput:
    @pytest.mark.parametrize("case", sorted(ABSURD))
    def test_reader_refuses_cleanly(self, case: str) -> None:
        reader, text = ABSURD[case]
        try:
            READERS[reader](text)
        except MetadataError as exc:
            message = str(exc)
            assert "\n" not in message
            assert len(message) < 2000, message[:200]
        else:
            pytest.fail(f"{case}: accepted")

    @pytest.mark.parametrize("where", ["meta", "spec_details", "title"])
    def test_alias_bomb_in_a_page(self, where: str, tmp_path: Path) -> None:
        """9 levels of 9 aliases: 387 million strings once expanded. In a child process, so
        a regression (a hang, or the segfault deep nesting used to cause) fails, not hangs."""
        levels = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        levels += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
        bomb = {"meta": "meta: {compilers: *l9}\n", "title": "title: *l9\n"}.get(where, "")
        details = "*l9" if where == "spec_details" else "[]"
        page = tmp_path / "bomb.md"
        page.write_text(_page(details, "\n".join(levels) + "\n" + bomb))
        assert _read_page_in_child(page) == "MetadataError: bomb.md: YAML aliases are not allowed"

    def test_deep_page_is_refused_by_our_own_limit(self, tmp_path: Path) -> None:
        page = tmp_path / "deep.md"
        page.write_text(_page("[" * 100 + "]" * 100))
        assert _read_page_in_child(page) == "MetadataError: deep.md: nested deeper than 64 levels"

    def test_very_deep_page_in_a_child(self, tmp_path: Path) -> None:
        """100,000 levels: refused as metadata (exit 7) in one line, without a crash. Which
        check fires first (ours or the YAML library's own limit) depends on the library
        version, so its wording is not asserted."""
        page = tmp_path / "deep.md"
        page.write_text(_page("[" * 100_000 + "]" * 100_000))
        message = _read_page_in_child(page)
        assert message.startswith("MetadataError: deep.md: "), message
        assert "\n" not in message.strip()

    def test_the_real_page_still_reads(self) -> None:
        catalog = read_page(SEED_PAGE.read_text(), str(SEED_PAGE))
        assert isinstance(catalog, Catalog)
        assert len(catalog) == 58

    def test_giant_content_length_in_a_signed_manifest(
        self, gpg_key: GpgKey, tmp_path: Path, capsys: Capture
    ) -> None:
        """Signed by a trusted key but claiming 2**63 bytes: the real body is a size mismatch."""
        mirror = write(tmp_path / "m", None)
        path = manifest_of(mirror, ALPHA)
        doc = json.loads(path.read_text())
        tarball = next(d for d in doc["data"] if "install" in d["mediaType"])
        tarball["contentLength"] = 2**63
        path.write_text(gpg_key.clearsign(json.dumps(doc)))
        store = trusted_store(tmp_path, gpg_key)
        code, err = fetch(store, str(mirror.root), "alpha", capsys)
        assert_one_line_error(err, code, 4, "size")
        no_trace(store, ALPHA)

    @pytest.mark.parametrize(
        "change",
        ["deep", "giant-int", "not-json", "huge-name"],
    )
    def test_hostile_index_over_http(
        self,
        change: str,
        gpg_key: GpgKey,
        fault_server: MakeFaultServer,
        tmp_path: Path,
        capsys: Capture,
    ) -> None:
        mirror = write(tmp_path / "m", gpg_key.clearsign)

        def mutate(db: dict[str, Any]) -> Any:
            if change == "deep":
                return '{"database": {"version": "8", "installs": ' + _deep_json(100_000) + "}}"
            if change == "giant-int":
                return '{"database": {"version": ' + BIG_INT + ', "installs": {}}}'
            if change == "not-json":
                return b"\xff\xfe garbage"
            db["database"]["installs"][ALPHA.hash]["spec"]["name"] = HUGE
            return db

        rewrite_index(mirror.root, mutate)
        server = fault_server(mirror.root)
        store = trusted_store(tmp_path, gpg_key)
        code, err = fetch(store, server.url, "alpha", capsys)
        expected = 3 if change == "huge-name" else 7
        line = assert_one_line_error(err, code, expected)
        assert len(line) < 4000
        no_trace(store, ALPHA)


def test_local_catalog_of_the_real_mirror_is_unaffected() -> None:
    catalog = open_catalog(str(SPACK_V3_UNSIGNED), local_reader(SPACK_V3_UNSIGNED))
    assert len(catalog) == 18
