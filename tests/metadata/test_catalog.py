"""Tests for Catalog: lookups, laziness and merging."""

from __future__ import annotations

import pytest

from cacheclient.errors import MetadataError
from cacheclient.metadata.catalog import Catalog
from cacheclient.model import BuildRecord, ClosureNode, Dependency


def _rec(name: str, h: str, **over: object) -> BuildRecord:
    fields: dict[str, object] = {
        "name": name,
        "version": "1.0",
        "hash": h,
        "platform": "linux",
        "os": "ubuntu24.04",
        "target": "x86_64_v3",
    }
    fields.update(over)
    return BuildRecord(**fields)  # type: ignore[arg-type]


A, B, C = "a" * 32, "ab" + "b" * 30, "c" * 32


class TestEagerCatalog:
    def test_lookups(self) -> None:
        catalog = Catalog([_rec("x", A), _rec("x", B), _rec("y", C)], source="s")
        assert len(catalog) == 3
        assert catalog.names() == ["x", "y"]
        assert [r.hash for r in catalog.by_name("x")] == [A, B]
        assert catalog.by_name("nope") == []
        assert catalog.get(C) is not None
        assert catalog.get("z" * 32) is None
        assert C in catalog
        assert "z" * 32 not in catalog
        assert {r.hash for r in catalog.find_prefix("a")} == {A, B}
        assert [r.hash for r in catalog.find_prefix("ab")] == [B]
        assert catalog.count("x") == 2
        assert catalog.hashes("y") == [C]
        assert {r.hash for r in catalog} == {A, B, C}
        assert catalog.source == "s"
        assert catalog.warnings == ()

    def test_duplicate_hash_in_one_source_unions_stacks(self) -> None:
        catalog = Catalog([_rec("x", A, stacks=("e4s",)), _rec("x", A, stacks=("root",))])
        assert len(catalog) == 1
        record = catalog.get(A)
        assert record is not None
        assert record.stacks == ("e4s", "root")


class TestLazyCatalog:
    def test_builds_only_what_is_asked_once(self) -> None:
        built: list[str] = []

        def build(h: str) -> BuildRecord | None:
            built.append(h)
            return {A: _rec("x", A), C: _rec("y", C)}.get(h)

        catalog = Catalog.lazy(source="s", by_name={"x": [A], "y": [C]}, build=build)
        assert len(catalog) == 2
        assert catalog.names() == ["x", "y"]
        assert built == []
        catalog.by_name("x")
        catalog.by_name("x")
        assert built == [A]
        assert catalog.get("z" * 32) is None


class TestMerge:
    def test_same_hash_unions_stacks_and_fills_fields(self) -> None:
        page = Catalog([_rec("x", A, stacks=("e4s", "root"))], source="page", warnings=["w1"])
        mirror = Catalog(
            [_rec("x", A, stacks=("https://m",), manifest_path="v3/p"), _rec("x", B)],
            source="mirror",
            warnings=["w2"],
        )
        merged = Catalog.merge([page, mirror])
        assert len(merged) == 2
        record = merged.get(A)
        assert record is not None
        assert record.stacks == ("e4s", "root", "https://m")
        assert record.manifest_path == "v3/p"
        assert merged.warnings == ("w1", "w2")
        assert [r.hash for r in merged.by_name("x")] == [A, B]
        assert merged.source == "page + mirror"

    def test_first_catalog_wins_on_fields(self) -> None:
        one = Catalog([_rec("x", A, version="1.0")])
        two = Catalog([_rec("x", A, version="2.0")])
        record = Catalog.merge([one, two]).get(A)
        assert record is not None
        assert record.version == "1.0"

    @pytest.mark.parametrize("count", [0, 1])
    def test_trivial_merges(self, count: int) -> None:
        parts = [Catalog([_rec("x", A)])] * count
        assert len(Catalog.merge(parts)) == count


def _dep(name: str, h: str, *types: str) -> Dependency:
    return Dependency(name=name, hash=h, deptypes=frozenset(types))


class TestClosureSummaries:
    def test_a_summary_is_its_records(self) -> None:
        deps = (_dep("z", C, "link"), _dep("y", B, "run", "build"), _dep("t", A, "build"))
        record = _rec("x", "d" * 32, dependencies=deps, installable=False)
        node = ClosureNode.of(record)
        assert node.children == (B, C)  # runtime edges only, by name
        assert (node.hash, node.name, node.version, node.target) == (
            record.hash,
            "x",
            "1.0",
            "x86_64_v3",
        )
        assert not node.installable
        assert not node.external
        assert ClosureNode.of(_rec("g", A, external_path="/usr")).external

    def test_a_record_that_cannot_be_built_is_left_to_get(self) -> None:
        def build(h: str) -> BuildRecord | None:
            if h == B:
                raise MetadataError("s", "installs.b", "malformed")
            return {A: _rec("x", A)}.get(h)

        catalog = Catalog.lazy(source="s", by_name={"x": [A, B]}, build=build)
        assert catalog.walk_many([A, B, C]) == {A: ClosureNode.of(_rec("x", A))}
        with pytest.raises(MetadataError, match="malformed"):
            catalog.get(B)

    def test_merged_builds_held_twice_are_left_to_get(self) -> None:
        # A page lists A without edges, a mirror with them: only the union (get) is right.
        page = Catalog([_rec("x", A, dependencies_known=False)], source="page")
        edges = (_dep("y", B, "link"),)
        mirror = Catalog([_rec("x", A, dependencies=edges), _rec("y", B)], source="mirror")
        merged = Catalog.merge([page, mirror])
        assert merged.walk_many([A, B]) == {B: ClosureNode.of(_rec("y", B))}
        union = merged.get(A)
        assert union is not None
        assert ClosureNode.of(union).children == (B,)
