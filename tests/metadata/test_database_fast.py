"""The fast index reader gives exactly what the full reader gives: same records, same errors."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import synthetic_index
from cacheclient.errors import MetadataError
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.database_fast import read_records
from cacheclient.metadata.layout import spec_manifest_path
from cacheclient.model import BuildRecord
from paths import SPACK_V3_UNSIGNED, V2_MIRRORS

V3_INDEX = (
    SPACK_V3_UNSIGNED
    / "blobs/sha256/40/4075443c79bc36c23b7cc05ba002af7e4153e3a7245822909c655cc7d21d82d8"
)
H1, H2, H3 = ("a" * 32, "b" * 32, "c" * 32)


def _node(name: str, h: str, **over: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "name": name,
        "version": "1.0",
        "arch": {"platform": "linux", "platform_os": "ubuntu24.04", "target": "x86_64_v3"},
        "namespace": "builtin",
        "parameters": {"build_system": "generic", "cflags": [], "ldlibs": ["-lm"]},
        "hash": h,
    }
    node.update(over)
    return node


def _db(*nodes: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "database": {
            "version": "8",
            "installs": {h: {"spec": n, "in_buildcache": True} for h, n in nodes},
        }
    }


Outcome = BuildRecord | str


def _full(data: bytes, **kwargs: Any) -> dict[str, Outcome]:
    catalog = parse_database(data, "idx.json", **kwargs)
    out: dict[str, Outcome] = {}
    for h in catalog.hashes():
        try:
            record = catalog.get(h)
        except MetadataError as exc:
            out[h] = str(exc)
        else:
            assert record is not None
            out[h] = record
    return out


def _fast(data: bytes, **kwargs: Any) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    for h, name, fields in read_records(data, "idx.json", **kwargs):
        if isinstance(fields, MetadataError):
            out[h] = str(fields)
        else:
            record = msgspec.convert(fields, BuildRecord)
            assert record.name == name
            out[h] = record
    return out


def _outcome(read: Callable[..., dict[str, Outcome]], data: bytes, **kwargs: Any) -> object:
    try:
        return read(data, **kwargs)
    except MetadataError as exc:
        return f"raised {exc}"


def assert_same(data: bytes, **kwargs: Any) -> None:
    assert _outcome(_fast, data, **kwargs) == _outcome(_full, data, **kwargs)


class TestRealIndexes:
    def test_v3(self) -> None:
        assert_same(V3_INDEX.read_bytes(), stacks=("m",), manifest_path_for=spec_manifest_path)

    @pytest.mark.parametrize("kind", ["signed", "unsigned"])
    def test_v2(self, kind: str) -> None:
        assert_same((V2_MIRRORS / kind / "build_cache/index.json").read_bytes(), stacks=("m",))

    def test_synthetic_bench_index(self) -> None:
        data = json.dumps(synthetic_index(300, seed=3)).encode()
        assert_same(data, manifest_path_for=spec_manifest_path)


class TestParts:
    @pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
    def test_parts_are_the_whole_in_order(self, n: int) -> None:
        data = V3_INDEX.read_bytes()
        whole = [(h, name) for h, name, _ in read_records(data, "idx")]
        parts = [
            (h, name) for k in range(n) for h, name, _ in read_records(data, "idx", part=(k, n))
        ]
        assert parts == whole

    def test_a_part_still_checks_the_whole_index(self) -> None:
        doc = json.loads(V3_INDEX.read_bytes())
        doc["database"]["installs"]["short"] = doc["database"]["installs"].popitem()[1]
        with pytest.raises(MetadataError, match="not a 32-character DAG hash"):
            next(read_records(json.dumps(doc).encode(), "idx", part=(0, 2)))


def _set_in(key: str, field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(node: dict[str, Any]) -> None:
        inner = node.get(key)
        if isinstance(inner, dict):
            inner[field] = value

    return mutate


def _dep(**edge: Any) -> Callable[[dict[str, Any]], None]:
    return lambda n: n.__setitem__("dependencies", [{"name": "y", **edge}])


MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "int-version": lambda n: n.__setitem__("version", 3),
    "bool-version": lambda n: n.__setitem__("version", True),
    "empty-version": lambda n: n.__setitem__("version", ""),
    "versions-list": lambda n: n.update(versions=["=2.1"], version=None),
    "no-version": lambda n: n.pop("version", None),
    "no-hash": lambda n: n.pop("hash", None),
    "null-hash": lambda n: n.__setitem__("hash", None),
    "other-hash": lambda n: n.__setitem__("hash", H3),
    "empty-name-in-arch": _set_in("arch", "platform", ""),
    "target-dict": _set_in("arch", "target", {"name": "zen4", "features": ["a"]}),
    "target-dict-no-name": _set_in("arch", "target", {"vendor": "x"}),
    "target-int": _set_in("arch", "target", 3),
    "arch-missing": lambda n: n.pop("arch", None),
    "params-null": lambda n: n.__setitem__("parameters", None),
    "params-list": lambda n: n.__setitem__("parameters", []),
    "variant-int": _set_in("parameters", "v", 3),
    "variant-float": _set_in("parameters", "v", 1.5),
    "variant-list-mixed": _set_in("parameters", "v", ["b", 1, "a"]),
    "variant-list-bool": _set_in("parameters", "v", ["b", True]),
    "variant-list-strings": _set_in("parameters", "v", ["b", "a", "B"]),
    "variant-list-empty": _set_in("parameters", "v", []),
    "variant-list-ints": _set_in("parameters", "v", [10, 2]),
    "variant-list-numbers": _set_in("parameters", "v", [2.5, 1]),
    "variant-list-bools": _set_in("parameters", "v", [True, False]),
    "variant-list-null": _set_in("parameters", "v", ["a", None]),
    "variant-list-nested": _set_in("parameters", "v", [["a"], ["b"]]),
    "flag-bool": _set_in("parameters", "cflags", True),
    "variant-dict": _set_in("parameters", "v", {"a": 1}),
    "variant-null": _set_in("parameters", "v", None),
    "flag-string": _set_in("parameters", "cflags", "-O2"),
    "deps-null": lambda n: n.__setitem__("dependencies", None),
    "deps-dict": lambda n: n.__setitem__("dependencies", {}),
    "dep-not-object": lambda n: n.__setitem__("dependencies", [3]),
    "dep-full-hash": _dep(full_hash=H2, type=["link"]),
    "dep-build-hash": _dep(build_hash=H2, type="link"),
    "dep-null-hash-then-full": _dep(hash=None, full_hash=H2),
    "dep-no-hash": _dep(type=["link"]),
    "dep-bad-hash": _dep(hash="nope"),
    "dep-unknown-hash": _dep(hash="z" * 32, parameters={"deptypes": ["link"]}),
    "dep-empty-name": lambda n: n.__setitem__("dependencies", [{"name": "", "hash": H2}]),
    "dep-params-null": _dep(hash=H2, parameters=None, type=["run"]),
    "dep-params-list": _dep(hash=H2, parameters=[], type=["run"]),
    "dep-deptypes-str": _dep(hash=H2, parameters={"deptypes": "link", "virtuals": []}),
    "dep-deptypes-null": _dep(hash=H2, parameters={"deptypes": None}),
    "dep-virtuals-bad": _dep(hash=H2, parameters={"deptypes": ["link"], "virtuals": [1]}),
    "dep-type-null": _dep(hash=H2, type=None),
    "compiler-provider": _dep(hash=H2, parameters={"deptypes": ["build"], "virtuals": ["cxx"]}),
    "compiler-missing-provider": _dep(
        hash="z" * 32, parameters={"deptypes": ["build"], "virtuals": ["c"]}
    ),
    "libc-provider": _dep(hash=H2, parameters={"deptypes": ["link"], "virtuals": ["libc"]}),
    "libc-missing": _dep(hash="z" * 32, parameters={"deptypes": ["link"], "virtuals": ["libc"]}),
    "old-compiler": lambda n: n.__setitem__("compiler", {"name": "gcc", "version": "9.4.0"}),
    "old-compiler-list": lambda n: n.__setitem__("compiler", {"name": "gcc", "version": ["=9"]}),
    "compiler-null": lambda n: n.__setitem__("compiler", None),
    "compiler-str": lambda n: n.__setitem__("compiler", "gcc"),
    "annotations-compiler": lambda n: n.__setitem__("annotations", {"compiler": "gcc@=8"}),
    "annotations-empty-compiler": lambda n: n.__setitem__("annotations", {"compiler": ""}),
    "annotations-null-compiler": lambda n: n.__setitem__("annotations", {"compiler": None}),
    "annotations-list": lambda n: n.__setitem__("annotations", []),
    "annotations-empty": lambda n: n.__setitem__("annotations", {}),
    "external": lambda n: n.__setitem__("external", {"path": "/usr", "module": None}),
    "external-no-path": lambda n: n.__setitem__("external", {}),
    "external-null-path": lambda n: n.__setitem__("external", {"path": None}),
    "external-bad-path": lambda n: n.__setitem__("external", {"path": 3}),
    "external-str": lambda n: n.__setitem__("external", "yes"),
    "external-null": lambda n: n.__setitem__("external", None),
    "namespace-int": lambda n: n.__setitem__("namespace", 3),
    "name-empty": lambda n: n.__setitem__("name", ""),
}


def _doc(mutations: list[str], in_cache: Any = True) -> bytes:
    x = _node("x", H1)
    provider = _node("y", H2, version="13.2.0")
    for name in mutations:
        MUTATIONS[name](x)
    doc = _db((H1, copy.deepcopy(x)), (H2, provider))
    doc["database"]["installs"][H1]["in_buildcache"] = in_cache
    return json.dumps(doc).encode()


class TestEveryOddNode:
    @pytest.mark.parametrize("mutation", sorted(MUTATIONS))
    def test_one_mutation(self, mutation: str) -> None:
        assert_same(_doc([mutation]), stacks=("m",), manifest_path_for=spec_manifest_path)

    @pytest.mark.parametrize("in_cache", [False, "yes", None, 1])
    def test_in_buildcache(self, in_cache: Any) -> None:
        assert_same(_doc([], in_cache))

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.sampled_from(sorted(MUTATIONS)), max_size=4))
    def test_combinations(self, mutations: list[str]) -> None:
        assert_same(_doc(mutations), manifest_path_for=spec_manifest_path)


class TestBadDocuments:
    @pytest.mark.parametrize(
        "doc",
        [
            b"[]",
            b'{"db": {}}',
            b'{"database": []}',
            b'{"database": {"version": "8"}}',
            b'{"database": {"version": "9", "installs": {}}}',
            b'{"database": {"installs": {}}}',
            b'{"database": {"version": "8", "installs": []}}',
            b'{"database": {"version": "8", "installs": {"short": {"spec": {"name": "x"}}}}}',
            b'{"database": {"version": "8", "installs": {"' + H1.encode() + b'": []}}}',
            b'{"database": {"version": "8", "installs": {"' + H1.encode() + b'": {"spec": 3}}}}',
            b'{"database": {"version": "8", "installs": {"' + H1.encode() + b'": {"spec": {}}}}}',
            b'{"database": ',
            b"\xff\xfe{}",
            b"",
            b'{"database": {"version": "8", "installs": {}}}',
        ],
    )
    def test_same_error_or_same_nothing(self, doc: bytes) -> None:
        assert_same(doc)

    def test_deep_nesting_is_an_error_not_a_crash(self) -> None:
        with pytest.raises(MetadataError, match=r"nested too deeply|invalid JSON"):
            list(read_records(b"[" * 200_000 + b"]" * 200_000, "idx"))
