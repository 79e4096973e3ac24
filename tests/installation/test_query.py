"""Pure logic over install records: matching specs, closures, dependents, shell code."""

from __future__ import annotations

import subprocess

import pytest

from cacheclient.errors import NoMatchError, UsageError
from cacheclient.installation.installdb import InstallRecord
from cacheclient.installation.query import (
    closure,
    dependents,
    match,
    match_one,
    parse_installed,
)
from cacheclient.installation.shellenv import environment, render
from cacheclient.resolution.spec import parse_request


def _rec(
    name: str, version: str, h: str, spec: str = "", deps: tuple[str, ...] = ()
) -> InstallRecord:
    return InstallRecord(
        hash=h * 32,
        name=name,
        version=version,
        prefix=f"/r/{name}-{h}",
        spec=spec or f"{name}@{version} +shared arch=linux-debian12-x86_64_v3 /{h * 7}",
        installed_at="",
        dependencies=tuple(d * 32 for d in deps),
    )


RECORDS = {
    r.hash: r
    for r in (
        _rec("zlib", "1.3.1", "a"),
        _rec(
            "zlib", "1.2.13", "b", "zlib@1.2.13 ~shared %gcc@12.2.0 arch=linux-debian12-x86_64_v4"
        ),
        _rec("tool", "2.0", "c", deps=("a", "d")),
        _rec("py", "1.0", "d", "not a ^ spec line", deps=("a",)),
    )
}


class TestMatch:
    @pytest.mark.parametrize(
        ("query", "hashes"),
        [
            ([], "abcd"),
            (["zlib"], "ab"),
            (["zlib@1.3:"], "a"),
            (["zlib+shared"], "a"),
            (["zlib%gcc@12:"], "b"),
            (["target=x86_64_v4"], "b"),
            (["arch=linux-debian12-x86_64_v3"], "ac"),
            (["/bbbbbbb"], "b"),
            (["tool", "py"], "cd"),
            (["py@1.0"], "d"),  # an unreadable spec line still matches on name and version
            (["py+shared"], ""),
        ],
    )
    def test_queries(self, query: list[str], hashes: str) -> None:
        assert [r.hash[0] for r in match(RECORDS, query)] == sorted(
            hashes, key=lambda h: (RECORDS[h * 32].name, RECORDS[h * 32].version)
        )

    def test_match_one(self) -> None:
        assert match_one(RECORDS, parse_request("tool"), "/r").hash == "c" * 32
        with pytest.raises(NoMatchError, match="matches 2 installed builds"):
            match_one(RECORDS, parse_request("zlib"), "/r")
        with pytest.raises(NoMatchError, match=r"installed: zlib@1\.2\.13 /bbbbbbb"):
            match_one(RECORDS, parse_request("zlib@9"), "/r")

    def test_parse_installed(self) -> None:
        spec = parse_installed(RECORDS["b" * 32])
        assert (spec.arch, spec.compiler, dict(spec.variants)) == (
            "linux-debian12-x86_64_v4",
            "gcc@12.2.0",
            {"shared": False},
        )
        assert parse_installed(RECORDS["d" * 32]).arch is None

    def test_an_anonymous_spec_is_still_refused_for_resolving(self) -> None:
        with pytest.raises(UsageError, match="names no package"):
            parse_request("target=x86_64_v3")


class TestGraph:
    def test_closure_is_post_order_and_reports_missing(self) -> None:
        records = dict(RECORDS)
        del records["a" * 32]
        walk, missing = closure(records, ["c" * 32])
        assert [r.name for r in walk] == ["py", "tool"]
        assert missing == ["a" * 32]

    def test_closure_survives_a_cycle(self) -> None:
        x = _rec("x", "1", "x", deps=("y",))
        y = _rec("y", "1", "y", deps=("x",))
        walk, missing = closure({x.hash: x, y.hash: y}, [x.hash])
        assert sorted(r.name for r in walk) == ["x", "y"]
        assert missing == []

    def test_dependents(self) -> None:
        assert [r.name for r in dependents(RECORDS, "a" * 32)] == ["py", "tool"]
        assert dependents(RECORDS, "c" * 32) == []


class TestShellEnv:
    def test_existing_directories_only_and_order(self) -> None:
        present = {"/p1/bin", "/p1", "/p2", "/p2/share/man", "/p2/lib64/pkgconfig"}
        env = environment(["/p1", "/p2"], {"PATH": "/usr/bin:/p1/bin"}, is_dir=present.__contains__)
        assert env == {
            "CMAKE_PREFIX_PATH": "/p1:/p2",
            "MANPATH": "/p2/share/man:",
            "PATH": "/p1/bin:/usr/bin",
            "PKG_CONFIG_PATH": "/p2/lib64/pkgconfig",
        }

    @pytest.mark.parametrize("shell", ["sh", "bash", "dash"])
    def test_sh_code_round_trips_odd_paths(self, shell: str) -> None:
        value = '/o\'dd $HOME `x` "q"/bin:/usr/bin'
        code = render({"PATH": value}, "sh")
        out = subprocess.run(
            [shell, "-c", code + 'printf %s "$PATH"'], capture_output=True, text=True, check=True
        )
        assert out.stdout == value

    def test_csh_and_fish_spelling(self) -> None:
        assert render({"PATH": "/a b:/c"}, "csh") == "setenv PATH '/a b:/c';\n"
        assert render({"PATH": "/a'b:/c"}, "fish") == "set -gx PATH '/a\\'b' '/c';\n"
        with pytest.raises(UsageError, match="newline"):
            render({"PATH": "/a\nb"}, "sh")
