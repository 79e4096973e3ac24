"""Tests for the Spack Database (index) reader."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from builders import synthetic_index
from cacheclient.errors import MetadataError
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.layout import spec_manifest_path
from cacheclient.model import BuildRecord, Libc
from expected import assert_matches_expected, expected_records
from paths import SPACK_V3_UNSIGNED, V2_MIRRORS

V3_INDEX = (
    SPACK_V3_UNSIGNED
    / "blobs/sha256/40/4075443c79bc36c23b7cc05ba002af7e4153e3a7245822909c655cc7d21d82d8"
)
H1, H2, H3, H4 = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)


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


def _db(*nodes: dict[str, Any], version: Any = "8", in_cache: bool = True) -> dict[str, Any]:
    return {
        "database": {
            "version": version,
            "installs": {
                n["hash"]: {"spec": n, "ref_count": 0, "in_buildcache": in_cache} for n in nodes
            },
        }
    }


def _parse(doc: dict[str, Any], **kwargs: Any) -> list[BuildRecord]:
    return list(parse_database(json.dumps(doc), "idx.json", **kwargs))


class TestRealIndexes:
    def test_v3_index_blob_matches_expected(self) -> None:
        catalog = parse_database(
            V3_INDEX.read_bytes(), str(V3_INDEX), manifest_path_for=spec_manifest_path
        )
        expected = expected_records("unsigned")
        assert len(catalog) == 18
        assert {r.hash for r in catalog} == set(expected)
        for record in catalog:
            spec = expected[record.hash]
            assert_matches_expected(record, spec)
            assert record.manifest_path == spec["spec_manifest"]["path"]
            assert record.installable

    @pytest.mark.parametrize("kind", ["signed", "unsigned"])
    def test_v2_index(self, kind: str) -> None:
        path = V2_MIRRORS / kind / "build_cache/index.json"
        catalog = parse_database(path.read_bytes(), str(path), stacks=("file:///m",))
        assert len(catalog) == 7
        assert catalog.names() == ["compiler-wrapper", "gcc", "gcc-runtime", "libdwarf", "libelf"]
        installable = sorted((r.name, r.target) for r in catalog if r.installable)
        assert installable == [
            ("compiler-wrapper", "m1"),
            ("gcc-runtime", "m1"),
            ("libdwarf", "core2"),
            ("libdwarf", "m1"),
            ("libelf", "core2"),
            ("libelf", "m1"),
        ]
        gcc = catalog.get("vd7v4ssgnoqdplgxyig3orum67n4vmhq")
        assert gcc is not None
        assert not gcc.installable
        assert gcc.external_path == "/path"
        assert gcc.variants["languages"] == ("c", "c++", "fortran")
        assert all(r.stacks == ("file:///m",) for r in catalog)
        assert all(r.manifest_path is None for r in catalog)

    def test_v2_index_compilers_all_three_forms(self) -> None:
        path = V2_MIRRORS / "signed/build_cache/index.json"
        catalog = parse_database(path.read_bytes(), str(path))
        by_hash = {r.hash: r for r in catalog}
        # annotations.compiler (format-4 specs re-indexed by Spack 1.x)
        assert by_hash["rqh2vuf6fqwkmipzgi2wjx352mq7y7ez"].compiler == "gcc@=10.2.1"
        # format 5: provider of the c/cxx virtuals among build dependencies
        assert by_hash["u5uz3dcch5if4eve4sef67o2rf2lbfgh"].compiler == "gcc@=10.2.1"
        assert by_hash["jr3yipyxyjulcdvckwwwjrrumis7glpa"].compiler == "gcc@=10.2.1"
        # a build dependency on gcc without a compiler virtual is not a compiler
        assert by_hash["izgzpzeljwairalfjm3k6fntbb64nt6n"].compiler is None
        assert by_hash["qeehcxyvluwnihsc2qxstmpomtxo3lrc"].compiler is None

    def test_target_dict_kept(self) -> None:
        path = V2_MIRRORS / "signed/build_cache/index.json"
        record = parse_database(path.read_bytes(), str(path)).get(
            "jr3yipyxyjulcdvckwwwjrrumis7glpa"
        )
        assert record is not None
        assert record.target == "m1"
        assert record.target_info is not None
        assert record.target_info["vendor"] == "Apple"
        assert "sha3" in record.target_info["features"]


class TestNodeFields:
    def test_flags_excluded_multi_values_sorted(self) -> None:
        node = _node("x", H1)
        node["parameters"].update({"codecs": ["lz4", "bz2"], "shared": False, "api": "v2"})
        (record,) = _parse(_db(node))
        assert dict(record.variants) == {
            "build_system": "generic",
            "codecs": ("bz2", "lz4"),
            "shared": False,
            "api": "v2",
        }

    def test_format5_dependencies_and_libc(self) -> None:
        glibc = _node("glibc", H2, version="2.39", external={"path": "/usr", "module": None})
        gcc = _node("gcc", H3, version="13.2.0")
        app = _node(
            "app",
            H1,
            dependencies=[
                {"name": "glibc", "hash": H2,
                 "parameters": {"deptypes": ["link"], "virtuals": ["libc"]}},
                {"name": "gcc", "hash": H3,
                 "parameters": {"deptypes": ["build"], "virtuals": ["c", "cxx"], "direct": True}},
            ],
        )  # fmt: skip
        catalog = parse_database(json.dumps(_db(app, glibc, gcc)), "idx")
        record = catalog.get(H1)
        assert record is not None
        assert record.libc == Libc(name="glibc", version="2.39")
        assert record.compiler == "gcc@=13.2.0"
        assert {d.name: d.deptypes for d in record.dependencies} == {
            "glibc": frozenset({"link"}),
            "gcc": frozenset({"build"}),
        }
        libc = catalog.get(H2)
        assert libc is not None
        assert libc.is_external
        assert not libc.installable

    def test_libc_node_missing_from_index(self) -> None:
        app = _node(
            "app",
            H1,
            dependencies=[{"name": "glibc", "hash": H2,
                           "parameters": {"deptypes": ["link"], "virtuals": ["libc"]}}],
        )  # fmt: skip
        (record,) = _parse(_db(app))
        assert record.libc is None

    def test_format3_type_edges_and_node_compiler(self) -> None:
        app = _node(
            "app",
            H1,
            compiler={"name": "gcc", "version": "9.3.0"},
            dependencies=[{"name": "zlib", "hash": H2, "type": ["build", "link"]}],
        )
        zlib = _node("zlib", H2)
        catalog = parse_database(json.dumps(_db(app, zlib, version="6")), "idx")
        record = catalog.get(H1)
        assert record is not None
        assert record.compiler == "gcc@=9.3.0"
        assert record.dependencies[0].deptypes == frozenset({"build", "link"})
        assert record.dependencies[0].virtuals == ()

    def test_target_string_has_no_info(self) -> None:
        (record,) = _parse(_db(_node("x", H1)))
        assert record.target == "x86_64_v3"
        assert record.target_info is None

    def test_in_buildcache_false(self) -> None:
        (record,) = _parse(_db(_node("x", H1), in_cache=False))
        assert not record.installable

    @pytest.mark.parametrize("version", ["6", "7", "8", 7])
    def test_supported_versions(self, version: Any) -> None:
        assert len(_parse(_db(_node("x", H1), version=version))) == 1


class TestLaziness:
    def test_records_are_built_on_first_access_and_cached(self) -> None:
        nodes = [_node("x", H1), _node("y", H2)]
        nodes[1]["arch"] = "broken"
        catalog = parse_database(json.dumps(_db(*nodes)), "idx")
        assert len(catalog) == 2
        assert catalog.names() == ["x", "y"]
        first = catalog.by_name("x")
        assert first[0] is catalog.by_name("x")[0]
        with pytest.raises(MetadataError, match=rf"idx: database.installs.{H2}.spec.arch: "):
            catalog.by_name("y")


class TestBadIndexes:
    @pytest.mark.parametrize(
        ("doc", "path", "problem"),
        [
            (_db(_node("x", H1), version="9"), "database.version", "a newer cacheclient"),
            (_db(_node("x", H1), version="5"), "database.version", "not supported"),
            (_db(_node("x", H1), version=None), "database.version", "expected a version"),
            ({"database": []}, "database", "expected an object"),
            ({"db": {}}, "database", "expected an object"),
            ({"database": {"version": "8"}}, "database.installs", "expected an object"),
            ([], "", "expected a JSON object"),
        ],
    )
    def test_structure(self, doc: Any, path: str, problem: str) -> None:
        with pytest.raises(MetadataError) as info:
            parse_database(json.dumps(doc), "https://m/build_cache/index.json")
        assert info.value.path == path
        assert problem in str(info.value)
        assert "https://m/build_cache/index.json" in str(info.value)

    def test_unknown_version_message(self) -> None:
        with pytest.raises(MetadataError) as info:
            parse_database(json.dumps(_db(_node("x", H1), version="9")), "idx")
        assert "version 9" in str(info.value)

    def test_bad_hash_key(self) -> None:
        doc = _db(_node("x", H1))
        doc["database"]["installs"]["tooshort"] = doc["database"]["installs"].pop(H1)
        with pytest.raises(MetadataError, match=r"database\.installs\.tooshort: not a 32-char"):
            parse_database(json.dumps(doc), "idx")

    @pytest.mark.parametrize(
        ("mutate", "path"),
        [
            (lambda n: n.pop("version"), "spec.version"),
            (lambda n: n.__setitem__("version", ["1"]), "spec.version"),
            (lambda n: n["arch"].pop("platform_os"), "spec.arch.platform_os"),
            (lambda n: n["arch"].__setitem__("target", 3), "spec.arch.target"),
            (lambda n: n["arch"].__setitem__("target", {"vendor": "x"}), "spec.arch.target.name"),
            (lambda n: n["parameters"].__setitem__("v", {"a": 1}), "spec.parameters.v"),
            (lambda n: n["parameters"].__setitem__("v", [1, None]), "spec.parameters.v[1]"),
            (lambda n: n.__setitem__("hash", H2), "spec.hash"),
            (lambda n: n.__setitem__("dependencies", {}), "spec.dependencies"),
            (lambda n: n.__setitem__("dependencies", [{"name": "z", "hash": "no"}]),
             "spec.dependencies[0].hash"),
            (lambda n: n.__setitem__("dependencies", [{"name": "z", "hash": H2,
                                                        "parameters": {"deptypes": 3}}]),
             "spec.dependencies[0].parameters.deptypes"),
            (lambda n: n.__setitem__("compiler", "gcc"), "spec.compiler"),
            (lambda n: n.__setitem__("external", "yes"), "spec.external"),
            (lambda n: n.__setitem__("annotations", {"compiler": 5}), "spec.annotations.compiler"),
        ],
    )  # fmt: skip
    def test_node_field_errors_name_key_path(self, mutate: Any, path: str) -> None:
        node = copy.deepcopy(_node("x", H1))
        doc = _db(node)  # keyed by H1; the mutation below edits the same node
        mutate(node)
        catalog = parse_database(json.dumps(doc), "idx.json")
        with pytest.raises(MetadataError) as info:
            list(catalog)
        assert info.value.path == f"database.installs.{H1}.{path}"

    def test_in_buildcache_wrong_type(self) -> None:
        doc = _db(_node("x", H1))
        doc["database"]["installs"][H1]["in_buildcache"] = "yes"
        with pytest.raises(MetadataError, match="in_buildcache: expected true or false"):
            list(parse_database(json.dumps(doc), "idx"))

    @pytest.mark.parametrize(
        ("data", "problem"),
        [(b"\xff\xfe{}", "not UTF-8"), (b'{"database": ', "invalid JSON"), (b"", "invalid JSON")],
    )
    def test_bytes(self, data: bytes, problem: str) -> None:
        with pytest.raises(MetadataError, match=problem):
            parse_database(data, "idx")

    @pytest.mark.parametrize("bad_entry", [[], {"spec": 3}, {"spec": {"version": "1"}}])
    def test_bad_entries_found_up_front(self, bad_entry: Any) -> None:
        doc = {"database": {"version": "8", "installs": {H1: bad_entry}}}
        with pytest.raises(MetadataError, match=f"database.installs.{H1}"):
            parse_database(json.dumps(doc), "idx")


class TestJsonDecoding:
    def test_errors_are_one_clear_metadata_error(self) -> None:
        catalog = parse_database(V3_INDEX.read_bytes(), "idx")
        assert len(catalog) == 18
        with pytest.raises(MetadataError, match="not UTF-8"):
            parse_database(b'{"a": "\xff"}', "idx")
        with pytest.raises(MetadataError, match="invalid JSON"):
            parse_database(b'{"a": ', "idx")
        with pytest.raises(MetadataError, match="invalid JSON"):
            parse_database("[" * 100_000, "idx")

    def test_a_leading_bom_is_allowed(self) -> None:
        assert len(parse_database(b"\xef\xbb\xbf" + V3_INDEX.read_bytes(), "idx")) == 18

    def test_the_collector_is_restored(self) -> None:
        import gc

        assert gc.isenabled()
        parse_database(V3_INDEX.read_bytes(), "idx")
        assert gc.isenabled()


class TestSyntheticBenchIndex:
    def test_generated_index_reads_back(self) -> None:
        doc = synthetic_index(300, seed=7)
        data = json.dumps(doc, separators=(",", ":")).encode()
        catalog = parse_database(data, "synthetic")
        assert len(catalog) == 300
        records = list(catalog)
        assert 1000 < len(data) / 300 < 3500  # realistic record size (1-3 KB)
        with_libc = [r for r in records if r.libc is not None]
        assert with_libc
        assert all(r.libc == Libc(name="glibc", version="2.35") for r in with_libc)
        assert all(r.compiler == "gcc@=13.2.0" for r in with_libc)
        assert any(r.target_info is not None for r in records)
        assert catalog.by_name("py-pyproject-hooks")
