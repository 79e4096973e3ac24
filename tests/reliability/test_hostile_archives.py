"""Hostile archives: every one is refused (exit 6) naming the member, leaving nothing behind.

Each case is built here with :mod:`tarfile` around a valid Spack-like prefix, then installed
into a root that already holds one good build: the refusal must leave the root's database
and files unchanged and write nothing outside the root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cacheclient.errors import UnsafeArchiveError
from cacheclient.installation.extract import ExtractLimits, extract_prefix
from cacheclient.installation.installer import LocalBuild, install_fetched
from cacheclient.model import BlobRef, BuildRecord

H = "hostile0hostile0hostile0hostile0"[:32]
GOOD_H = "goodgoodgoodgoodgoodgoodgoodgood"
ROOT = "opt/spack/linux-x86_64"
PREFIX = f"{ROOT}/evil-1.0-{H}"


def _buildinfo(dag_hash: str = H, prefix: str = PREFIX, **extra: str) -> bytes:
    fields = {
        "sbang_install_path": "/opt/spack/bin/sbang",
        "buildpath": "/opt/spack",
        "relative_prefix": prefix[len("opt/spack/") :],
        "hash_to_prefix": "{" + f"{dag_hash}: /{prefix}" + "}",
        "relocate_textfiles": "[]",
        **extra,
    }
    return ("{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}").encode()


@dataclass
class Spec:
    """Members to write: (TarInfo fields, data) in order; the buildinfo goes last."""

    members: list[tuple[dict[str, object], bytes]] = field(default_factory=list)
    buildinfo: bytes | None = None
    buildinfo_name: str = f"{PREFIX}/.spack/binary_distribution"

    def add(self, name: str, data: bytes = b"x\n", **info: object) -> Spec:
        self.members.append(({"name": name, **info}, data))
        return self

    def sym(self, name: str, target: str) -> Spec:
        return self.add(name, type=tarfile.SYMTYPE, linkname=target)


def _write(spec: Spec, path: Path, *, fmt: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, "w:gz", format=fmt) as tar:
        members = list(spec.members)
        if spec.buildinfo is not None or not any(
            m[0]["name"] == spec.buildinfo_name for m in members
        ):
            members.append(({"name": spec.buildinfo_name}, spec.buildinfo or _buildinfo()))
        for fields, data in members:
            info = tarfile.TarInfo(str(fields["name"]))
            for key, value in fields.items():
                if key != "name":
                    setattr(info, key, value)
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _base() -> Spec:
    return Spec().add(f"{PREFIX}", type=tarfile.DIRTYPE, mode=0o755).add(f"{PREFIX}/bin/ok")


CASES: dict[str, tuple[Callable[[], Spec], str, str]] = {
    # id: (builder, member named in the message, words in the message)
    "absolute-name": (lambda: _base().add("/etc/evil"), "/etc/evil", "absolute"),
    "dotdot": (
        lambda: _base().add(f"{PREFIX}/../../../../../tmp/evil"),
        f"{PREFIX}/../../../../../tmp/evil",
        "'..'",
    ),
    "sibling-prefix": (lambda: _base().add(f"{PREFIX}d/x"), f"{PREFIX}d/x", "outside"),
    "file-in-parent": (lambda: _base().add(f"{ROOT}/evil"), f"{ROOT}/evil", "outside"),
    "hardlink-outside": (
        lambda: _base().add(
            f"{PREFIX}/lib/h", type=tarfile.LNKTYPE, linkname="../../../../etc/passwd"
        ),
        "../../../../etc/passwd",
        "'..'",
    ),
    "hardlink-absolute": (
        lambda: _base().add(f"{PREFIX}/lib/h", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
        "/etc/passwd",
        "absolute",
    ),
    "hardlink-to-outside-member": (
        lambda: (
            _base()
            .add("opt/outside")
            .add(f"{PREFIX}/lib/h", type=tarfile.LNKTYPE, linkname="opt/outside")
        ),
        "opt/outside",
        "outside",
    ),
    "hardlink-to-unknown": (
        lambda: _base().add(f"{PREFIX}/lib/h", type=tarfile.LNKTYPE, linkname=f"{PREFIX}/nope"),
        f"{PREFIX}/lib/h",
        "not a file extracted earlier",
    ),
    "hardlink-to-symlink": (
        lambda: (
            _base()
            .sym(f"{PREFIX}/s", "/etc/passwd")
            .add(f"{PREFIX}/h", type=tarfile.LNKTYPE, linkname=f"{PREFIX}/s")
        ),
        f"{PREFIX}/h",
        "not a file extracted earlier",
    ),
    "write-through-symlink": (
        lambda: _base().sym(f"{PREFIX}/lib", "/tmp").add(f"{PREFIX}/lib/evil.so"),
        f"{PREFIX}/lib/evil.so",
        "through the symlink",
    ),
    "write-through-relative-symlink": (
        lambda: _base().sym(f"{PREFIX}/up", "../../../../..").add(f"{PREFIX}/up/tmp/evil"),
        f"{PREFIX}/up/tmp/evil",
        "through the symlink",
    ),
    "overwrite-symlink": (
        lambda: _base().sym(f"{PREFIX}/bin/x", "/etc/passwd").add(f"{PREFIX}/bin/x"),
        f"{PREFIX}/bin/x",
        "duplicate",
    ),
    "symlink-above-prefix": (
        lambda: Spec().sym("opt", "/").add(f"{PREFIX}/bin/ok"),
        f"{PREFIX}/bin/ok",
        "through the symlink",
    ),
    "char-device": (
        lambda: _base().add(f"{PREFIX}/dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        f"{PREFIX}/dev/null",
        "device",
    ),
    "block-device": (
        lambda: _base().add(f"{PREFIX}/dev/sda", type=tarfile.BLKTYPE, devmajor=8),
        f"{PREFIX}/dev/sda",
        "device",
    ),
    "fifo": (lambda: _base().add(f"{PREFIX}/p", type=tarfile.FIFOTYPE), f"{PREFIX}/p", "FIFO"),
    "setuid": (lambda: _base().add(f"{PREFIX}/bin/su", mode=0o4755), f"{PREFIX}/bin/su", "setuid"),
    "setgid": (lambda: _base().add(f"{PREFIX}/bin/sg", mode=0o2755), f"{PREFIX}/bin/sg", "setgid"),
    "newline-in-name": (lambda: _base().add(f"{PREFIX}/a\nb"), f"{PREFIX}/a\nb", "newline"),
    "absurd-depth": (
        lambda: _base().add(PREFIX + "/d" * 200),
        PREFIX + "/d" * 200,
        "deeper than",
    ),
    "no-buildinfo": (
        lambda: Spec(buildinfo_name=f"{PREFIX}/.spack/other").add(f"{PREFIX}/bin/ok"),
        "",
        "no .spack/binary_distribution",
    ),
    "buildinfo-prefix-lies": (
        lambda: Spec(buildinfo=_buildinfo(prefix="opt/spack/linux-x86_64/other-" + H)).add(
            f"{PREFIX}/bin/ok"
        ),
        ".spack/binary_distribution",
        "files are under",
    ),
    "buildinfo-hash-lies": (
        lambda: Spec(buildinfo=_buildinfo(dag_hash="b" * 32)).add(f"{PREFIX}/bin/ok"),
        ".spack/binary_distribution",
        "does not list this build's hash",
    ),
    "buildinfo-deeper-than-files": (
        lambda: Spec(buildinfo_name=f"{PREFIX}/sub/.spack/binary_distribution").add(
            f"{PREFIX}/bin/ok"
        ),
        f"{PREFIX}/bin/ok",
        "outside",
    ),
    "buildinfo-relocates-outside": (
        lambda: Spec(buildinfo=_buildinfo(relocate_textfiles="[../../../../etc/passwd]")).add(
            f"{PREFIX}/bin/ok"
        ),
        ".spack/binary_distribution",
        "'..'",
    ),
    "buildinfo-is-a-symlink": (
        lambda: (
            Spec(buildinfo_name=f"{PREFIX}/.spack/other")
            .add(f"{PREFIX}/bin/ok")
            .sym(f"{PREFIX}/.spack/binary_distribution", "/etc/passwd")
        ),
        "",
        "no .spack/binary_distribution",
    ),
    "prefix-is-a-symlink": (
        lambda: Spec().sym(PREFIX, "/tmp").add(f"{PREFIX}/bin/ok"),
        f"{PREFIX}/bin/ok",
        "through the symlink",
    ),
    "buildinfo-not-yaml": (
        lambda: Spec(buildinfo=b"{unclosed: [").add(f"{PREFIX}/bin/ok"),
        ".spack/binary_distribution",
        "not valid YAML",
    ),
}


def _record(dag_hash: str = H, name: str = "evil") -> BuildRecord:
    return BuildRecord(
        name=name, version="1.0", hash=dag_hash, platform="linux", os="debian12", target="x86_64"
    )


def _item(path: Path, record: BuildRecord) -> LocalBuild:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    blob = BlobRef(media_type="application/vnd.spack.install.v2.tar+gzip", checksum=digest, size=1)
    return LocalBuild(record=record, tarball_path=path, tarball=blob, mirror="test")


def _snapshot(top: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(top))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture
def populated_root(tmp_path: Path) -> Path:
    """A root with one good build installed, next to a 'victim' directory outside it."""
    (tmp_path / "victim").mkdir()
    good_prefix = f"{ROOT}/good-1.0-{GOOD_H}"
    spec = (
        Spec(buildinfo=_buildinfo(GOOD_H, good_prefix), buildinfo_name=f"{good_prefix}/.spack/"
             "binary_distribution")
        .add(good_prefix, type=tarfile.DIRTYPE)
        .add(f"{good_prefix}/share/hello.txt", b"hello\n")
    )  # fmt: skip
    good = _write(spec, tmp_path / "good.tar.gz")
    root = tmp_path / "root"
    install_fetched([_item(good, _record(GOOD_H, "good"))], root=root)
    return root


class TestRefusals:
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_extract_refuses(self, case: str, tmp_path: Path) -> None:
        build, member, words = CASES[case]
        tar = _write(build(), tmp_path / "a.tar.gz")
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(UnsafeArchiveError) as err:
            extract_prefix(tar, out / "p", expected_hash=H)
        assert err.value.exit_code == 6
        message = str(err.value)
        assert "\n" not in message.replace(repr(member)[1:-1], "")  # one line
        assert words in message
        if member:
            assert repr(member) in message or member in message
            assert err.value.member is not None
        assert str(tar) in message
        assert os.listdir(out) == []

    @pytest.mark.parametrize("case", sorted(CASES))
    def test_install_refuses_and_root_is_unchanged(
        self, case: str, populated_root: Path, tmp_path: Path
    ) -> None:
        build, _member, words = CASES[case]
        tar = _write(build(), tmp_path / "a.tar.gz")
        before = _snapshot(populated_root)
        with pytest.raises(UnsafeArchiveError, match=words.replace("(", r"\(")):
            install_fetched([_item(tar, _record())], root=populated_root)
        assert _snapshot(populated_root) == before
        assert os.listdir(tmp_path / "victim") == []
        assert not Path("/tmp/evil").exists()
        db = json.loads((populated_root / ".cacheclient" / "installed.json").read_text())
        assert list(db["installs"]) == [GOOD_H]


class TestBombs:
    def test_gzip_bomb_is_refused(self, tmp_path: Path) -> None:
        zeros = bytes(8 << 20)
        spec = _base().add(f"{PREFIX}/share/zeros", zeros)
        tar = _write(spec, tmp_path / "bomb.tar.gz")
        assert tar.stat().st_size < 64 << 10
        (tmp_path / "out").mkdir()
        limits = ExtractLimits(max_ratio=20, min_budget=1 << 20)
        with pytest.raises(UnsafeArchiveError, match="decompression ratio"):
            extract_prefix(tar, tmp_path / "out" / "p", limits=limits)
        assert os.listdir(tmp_path / "out") == []

    def test_same_archive_passes_with_a_larger_budget(self, tmp_path: Path) -> None:
        spec = _base().add(f"{PREFIX}/share/zeros", bytes(2 << 20))
        tar = _write(spec, tmp_path / "ok.tar.gz")
        result = extract_prefix(tar, tmp_path / "p", expected_hash=H)
        assert (tmp_path / "p" / "share" / "zeros").stat().st_size == 2 << 20
        assert result.size >= 2 << 20

    def test_garbage_after_gzip_header(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(gzip.compress(b"this is not a tar archive" * 100))
        (tmp_path / "out").mkdir()
        with pytest.raises(UnsafeArchiveError):
            extract_prefix(bad, tmp_path / "out" / "p")
        assert os.listdir(tmp_path / "out") == []

    def test_legitimate_absolute_symlink_targets_are_kept(self, tmp_path: Path) -> None:
        spec = _base().sym(f"{PREFIX}/lib/libc.so", "/usr/lib/libc.so.6")
        spec.sym(f"{PREFIX}/share/self", f"/{PREFIX}/bin/ok")
        tar = _write(spec, tmp_path / "ok.tar.gz")
        result = extract_prefix(tar, tmp_path / "p", expected_hash=H)
        assert os.readlink(tmp_path / "p" / "lib" / "libc.so") == "/usr/lib/libc.so.6"
        assert result.entries["share/self"].target == f"/{PREFIX}/bin/ok"


_COMPONENT = st.sampled_from(["..", ".", "a", "b", "victim", "", "opt", "spack"])


@st.composite
def _random_archive(draw: st.DrawFn) -> Spec:
    """A valid base plus random members: names, symlinks and hardlinks built from risky parts."""
    spec = _base()
    for _ in range(draw(st.integers(1, 6))):
        parts = draw(st.lists(_COMPONENT, min_size=1, max_size=4))
        rooted = draw(st.sampled_from(["", "/", f"{PREFIX}/", "opt/", "../"]))
        name = rooted + "/".join(parts)
        kind = draw(st.sampled_from(["file", "dir", "sym", "link"]))
        if kind == "file":
            spec.add(name)
        elif kind == "dir":
            spec.add(name, type=tarfile.DIRTYPE)
        elif kind == "sym":
            spec.sym(name, draw(st.sampled_from(["/", "..", "../../victim", "/tmp", "a"])))
        else:
            target = draw(st.sampled_from([f"{PREFIX}/bin/ok", "/etc/passwd", "../victim/x"]))
            spec.add(name, type=tarfile.LNKTYPE, linkname=target)
    return spec


class TestRandomArchives:
    @settings(
        max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "60")),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(spec=_random_archive())
    def test_nothing_is_ever_written_outside(self, spec: Spec, tmp_path: Path) -> None:
        case = tmp_path / hashlib.sha256(repr(spec.members).encode()).hexdigest()[:12]
        if case.exists():
            return
        (case / "victim").mkdir(parents=True)
        (case / "out").mkdir()
        tar = _write(spec, case / "a.tar.gz")
        try:
            result = extract_prefix(tar, case / "out" / "p", expected_hash=H)
        except UnsafeArchiveError:
            assert os.listdir(case / "out") == []
        else:
            assert os.listdir(case / "out") == ["p"]
            for rel, entry in result.entries.items():
                path = case / "out" / "p" / rel
                assert os.path.lexists(path)
                if entry.kind in ("file", "hardlink"):
                    assert not path.is_symlink()
        assert os.listdir(case / "victim") == []
        assert sorted(os.listdir(case)) == ["a.tar.gz", "out", "victim"]
