"""Hostile archives not covered by ``test_hostile_archives.py``: a gzip bomb through the real
install command with the default limits, paths nested until the OS refuses them, names with
NUL, control characters and invalid UTF-8, over-long names and link targets, and headers
that lie about sizes.

Each archive is installed into a root that already holds one good build; the refusal must be
one line with the right exit code, the root and its database must be unchanged, and nothing
may appear outside the root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cacheclient.errors import CacheClientError
from cacheclient.installation.installer import LocalBuild, install_fetched
from cacheclient.metadata.manifest import manifest_to_json
from cacheclient.mirrors.writer import MirrorBuild, fake_hash, write_mirror
from cacheclient.model import BlobRef, BuildRecord, Manifest
from reliability import BIG_HOST, assert_clean, assert_one_line_error, root_problems, run_cli

H = fake_hash("hostile")
GOOD_H = fake_hash("good")
BUILD_ROOT = "opt/spack/linux-x86_64"
PREFIX = f"{BUILD_ROOT}/evil-1.0-{H}"


def _buildinfo(dag_hash: str, prefix: str) -> bytes:
    return (
        "{sbang_install_path: /opt/spack/bin/sbang, buildpath: /opt/spack, "
        f"relative_prefix: {prefix[len('opt/spack/') :]}, "
        f"hash_to_prefix: {{{dag_hash}: /{prefix}}}, "
        "relocate_textfiles: []}"
    ).encode()


Member = tuple[tarfile.TarInfo, bytes | None]


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _tar(
    extra: list[Member],
    *,
    prefix: str = PREFIX,
    dag_hash: str = H,
    fmt: int = tarfile.PAX_FORMAT,
    encoding: str = "utf-8",
) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt, encoding=encoding) as tar:
        members: list[Member] = [
            (_info(prefix, tarfile.DIRTYPE), None),
            (_info(f"{prefix}/bin/ok"), b"ok\n"),
            *extra,
            (_info(f"{prefix}/.spack/binary_distribution"), _buildinfo(dag_hash, prefix)),
        ]
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return gzip.compress(raw.getvalue(), mtime=0)


def _record(dag_hash: str, name: str) -> BuildRecord:
    return BuildRecord(
        name=name, version="1.0", hash=dag_hash, platform="linux", os="debian12", target="x86_64"
    )


def _local(path: Path, data: bytes, dag_hash: str = H, name: str = "evil") -> LocalBuild:
    path.write_bytes(data)
    blob = BlobRef(
        media_type="application/vnd.spack.install.v2.tar+gzip",
        checksum=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    return LocalBuild(record=_record(dag_hash, name), tarball_path=path, tarball=blob)


def _snapshot(top: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(top))] = (
                os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
            )
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    good_prefix = f"{BUILD_ROOT}/good-1.0-{GOOD_H}"
    good = _tar([(_info(f"{good_prefix}/share/hello"), b"hi\n")], prefix=good_prefix,
                dag_hash=GOOD_H)  # fmt: skip
    target = tmp_path / "root"
    install_fetched([_local(tmp_path / "good.tar.gz", good, GOOD_H, "good")], root=target)
    (tmp_path / "victim").mkdir()
    return target


def _long_components(n: int, width: int) -> str:
    return "/".join(f"{i:03d}" + "d" * (width - 3) for i in range(n))


def _truncated() -> bytes:
    raw = gzip.decompress(_tar([(_info(f"{PREFIX}/share/data"), os.urandom(64 << 10))]))
    return gzip.compress(raw[: len(raw) // 2], mtime=0)


CASES: dict[str, tuple[Callable[[], bytes], tuple[int, ...], str]] = {
    # id: (archive, acceptable exit codes, a word of the message)
    "carriage-return-in-name": (lambda: _tar([(_info(f"{PREFIX}/a\rb"), b"x")]), (6,), "a"),
    "escape-sequence-in-name": (
        lambda: _tar([(_info(f"{PREFIX}/\x1b[2Jcleared"), b"x")]),
        (6,),
        "cleared",
    ),
    "invalid-utf8-gnu": (
        lambda: _tar(
            [(_info(f"{PREFIX}/bad-\udcff\udcfe"), b"x")],
            fmt=tarfile.GNU_FORMAT,
            encoding="utf-8",
        ),
        (6,),
        "bad-",
    ),
    "invalid-utf8-symlink-target": (
        lambda: _tar(
            [(_info(f"{PREFIX}/link", tarfile.SYMTYPE, linkname="t-\udcff"), None)],
            fmt=tarfile.GNU_FORMAT,
        ),
        (6,),
        "link",
    ),
    "name-longer-than-4096": (lambda: _tar([(_info(f"{PREFIX}/" + "n" * 5000), b"x")]), (6,), "n"),
    "symlink-target-longer-than-4096": (
        lambda: _tar([(_info(f"{PREFIX}/l", tarfile.SYMTYPE, linkname="t" * 5000), None)]),
        (6,),
        "l",
    ),
    "component-longer-than-255": (
        lambda: _tar([(_info(f"{PREFIX}/" + "c" * 300 + "/f"), b"x")]),
        (6,),
        "c",
    ),
    "nested-until-path-max": (
        lambda: _tar([(_info(f"{PREFIX}/{_long_components(100, 40)}/f"), b"x")]),
        (6,),
        "000",
    ),
    "header-size-lies": (_truncated, (6,), "evil"),
    "pax-size-override": (
        lambda: _tar([(_info(f"{PREFIX}/big", pax_headers={"size": str(10**12)}), b"x")]),
        (6,),
        "",
    ),
}


class TestRefusedWithoutTrace:
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_install_refuses(self, case: str, root: Path, tmp_path: Path) -> None:
        make, codes, word = CASES[case]
        before_root = _snapshot(root)
        item = _local(tmp_path / "evil.tar.gz", make())
        with pytest.raises(CacheClientError) as info:
            install_fetched([item], root=root)
        message = str(info.value)
        assert info.value.exit_code in codes, message
        assert not any(c in message for c in "\n\r\x1b"), message
        assert word in message
        assert _snapshot(root) == before_root
        assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz", "good.tar.gz",
                                                              "root", "victim"]  # fmt: skip
        assert list((tmp_path / "victim").iterdir()) == []
        assert root_problems(root) == []

    def test_nul_ends_a_name_as_in_c(self, root: Path, tmp_path: Path) -> None:
        """tar stores C strings: a name with a NUL is read (by tarfile, as by GNU tar) as the
        part before it. That name is what is installed; nothing else appears."""
        item = _local(tmp_path / "nul.tar.gz", _tar([(_info(f"{PREFIX}/a\0/../../../x"), b"x")]))
        install_fetched([item], root=root)
        (prefix,) = root.glob("*/evil-1.0-*")
        assert (prefix / "a").read_bytes() == b"x"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["good.tar.gz", "nul.tar.gz",
                                                              "root", "victim"]  # fmt: skip
        assert root_problems(root) == []

    def test_deep_but_legitimate_nesting_installs(self, root: Path, tmp_path: Path) -> None:
        """120 short levels are fine (the limit is about absurd depth, not depth)."""
        deep = "/".join(["d"] * 120)
        item = _local(tmp_path / "deep.tar.gz", _tar([(_info(f"{PREFIX}/{deep}/f"), b"x\n")]))
        install_fetched([item], root=root)
        (prefix,) = root.glob("*/evil-1.0-*")
        assert (prefix / deep / "f").read_bytes() == b"x\n"
        assert root_problems(root) == []


class TestGzipBombThroughTheCli:
    def test_default_limits_refuse_a_bomb(self, tmp_path: Path) -> None:
        """300 MiB of zeros in ~300 KiB: beyond the 256 MiB budget, the ratio limit refuses."""
        record = BuildRecord(
            name="bomb", version="1.0", hash=fake_hash("bomb"), platform="linux",
            os="debian12", target="x86_64_v3",
        )  # fmt: skip
        good = BuildRecord(
            name="fine", version="1.0", hash=fake_hash("fine"), platform="linux",
            os="debian12", target="x86_64_v3",
        )  # fmt: skip
        mirror = write_mirror(
            tmp_path / "m",
            [
                MirrorBuild(record=record, files={"share/x": "x"}),
                MirrorBuild(record=good, files={"share/y": "y"}),
            ],
        )
        written = mirror.builds[record.hash]
        old = mirror.root / written.tarball.path
        prefix = written.prefix.lstrip("/")
        bomb = _bomb(prefix, record.hash, 300 << 20)
        assert len(bomb) < 1 << 20
        blob = BlobRef(
            media_type=written.tarball.media_type,
            checksum=hashlib.sha256(bomb).hexdigest(),
            size=len(bomb),
            compression="gzip",
        )
        (mirror.root / blob.path).parent.mkdir(parents=True, exist_ok=True)
        (mirror.root / blob.path).write_bytes(bomb)
        old.unlink()
        assert written.manifest_path is not None
        assert written.spec_blob is not None
        (mirror.root / written.manifest_path).write_text(
            manifest_to_json(Manifest(version=3, blobs=(blob, written.spec_blob)))
        )
        store, target = tmp_path / "store", tmp_path / "root"
        common = [*BIG_HOST, "--mirror", str(mirror.root), "--store", str(store)]
        common += ["--root", str(target), "--allow-unsigned", "--quiet"]
        assert run_cli(["install", "fine", *common]).code == 0
        db = (target / ".cacheclient" / "installed.json").read_text()
        result = run_cli(["install", "bomb", *common])
        assert_one_line_error(result.err, result.code, 6, "ratio")
        assert (target / ".cacheclient" / "installed.json").read_text() == db
        assert len(json.loads(db)["installs"]) == 1
        assert_clean(store, target, allow_partials=False)
        used = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        assert used < 1 << 20  # nothing of the bomb was left behind


def _bomb(prefix: str, dag_hash: str, size: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info(prefix, tarfile.DIRTYPE))
        info = _info(f"{prefix}/share/zeros")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
        data = _buildinfo(dag_hash, prefix)
        info = _info(f"{prefix}/.spack/binary_distribution")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)
