"""Tests for the cache.spack.io package page reader (the seed page and bad pages)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from cacheclient.errors import MetadataError
from cacheclient.metadata.page import compute_meta, parse_variant, read_page
from paths import SEED_PAGE

SEED = SEED_PAGE.read_text()


def _page(meta: Any, details: Any, title: str = "pkg") -> str:
    lines = ["---", f'title: "{title}"', "layout: cache", "categories: [package, develop]"]
    if meta is not None:
        lines.append(f"meta: {json.dumps(meta)}")
    if details is not None:
        lines.append(f"spec_details: {json.dumps(details)}")
    return "\n".join([*lines, "---", ""])


def _entry(**over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "compiler": "gcc@=11.4.0",
        "hash": "a" * 32,
        "os": "ubuntu22.04",
        "platform": "linux",
        "size": "-",
        "stacks": ["e4s", "root"],
        "target": "x86_64_v3",
        "variants": ["+shared", "~ipo", "build_system=cmake", "amdgpu_target=gfx90a,gfx1100"],
        "versions": ["1.2.3"],
    }
    entry.update(over)
    return entry


def _seed_parts() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta = json.loads(re.search(r"^meta: (.*)$", SEED, re.M).group(1))  # type: ignore[union-attr]
    details = json.loads(re.search(r"^spec_details: (.*)$", SEED, re.M).group(1))  # type: ignore[union-attr]
    return meta, details


class TestSeedPage:
    def test_reads_58_specs_without_warnings(self) -> None:
        catalog = read_page(SEED, str(SEED_PAGE))
        assert len(catalog) == 58
        assert catalog.warnings == ()
        assert catalog.names() == ["py-pyproject-hooks"]
        records = catalog.by_name("py-pyproject-hooks")
        assert {r.version for r in records} == {"1.0.0", "1.2.0"}
        assert {r.os for r in records} == {"ubuntu22.04", "ubuntu24.04"}
        assert {r.target for r in records} == {"aarch64", "x86_64_v3"}
        assert all(r.compiler is None for r in records)
        assert all(dict(r.variants) == {"build_system": "python_pip"} for r in records)
        assert all(r.installable and r.platform == "linux" for r in records)

    def test_stacks_are_kept(self) -> None:
        catalog = read_page(SEED, "seed")
        record = catalog.get("3hakpx2fcoshhsyudjpm2vqpadjihyir")
        assert record is not None
        assert record.stacks == ("ml-linux-x86_64-cpu", "ml-linux-x86_64-cuda", "root")
        by_stack: dict[str, int] = {}
        for r in catalog:
            for s in r.stacks:
                by_stack[s] = by_stack.get(s, 0) + 1
        assert by_stack["root"] == 58
        assert by_stack["e4s"] == 20

    def test_contract_hashes_present(self) -> None:
        catalog = read_page(SEED, "seed")
        for h in ("7gxinepk7daz7rk5xrpl2pln6lc5i37l", "yibbnvcp4erbz3pvcmyzvhlxsf77ehrt"):
            record = catalog.get(h)
            assert record is not None
            assert (record.version, record.os, record.target) == (
                "1.2.0",
                "ubuntu24.04",
                "x86_64_v3",
            )

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("num_specs", 57),
            ("oss", ["ubuntu22.04"]),
            ("targets", ["x86_64_v3"]),
            ("versions", ["1.0.0", "1.2.0", "1.3.0"]),
            ("platforms", ["darwin", "linux"]),
            ("compilers", ["gcc@=11.4.0"]),
            ("stacks", ["root"]),
        ],
    )
    def test_meta_disagreement_is_a_warning_naming_the_field(self, field: str, value: Any) -> None:
        meta, details = _seed_parts()
        meta[field] = value
        catalog = read_page(_page(meta, details, "py-pyproject-hooks"), "p.md")
        assert len(catalog) == 58
        assert len(catalog.warnings) == 1
        assert f"meta.{field}" in catalog.warnings[0]
        assert catalog.warnings[0].startswith("p.md: ")

    def test_stack_count_disagreement(self) -> None:
        meta, details = _seed_parts()
        meta["num_specs_by_stack"]["e4s"] = 21
        (warning,) = read_page(_page(meta, details), "p.md").warnings
        assert "meta.num_specs_by_stack" in warning

    def test_missing_meta_field_and_block(self) -> None:
        meta, details = _seed_parts()
        del meta["oss"]
        assert read_page(_page(meta, details), "p").warnings == ("p: meta.oss is missing",)
        assert read_page(_page(None, details), "p").warnings == ("p: meta block is missing",)

    def test_computed_meta_equals_seed_meta(self) -> None:
        meta, details = _seed_parts()
        assert compute_meta(details) == meta


class TestEntryFields:
    def test_compiler_kept_and_variants_parsed(self) -> None:
        page = _page(compute_meta([_entry()]), [_entry()])
        (record,) = read_page(page, "p")
        assert record.compiler == "gcc@=11.4.0"
        assert dict(record.variants) == {
            "shared": True,
            "ipo": False,
            "build_system": "cmake",
            "amdgpu_target": ("gfx1100", "gfx90a"),
        }
        assert record.variant_strings() == [
            "amdgpu_target=gfx1100,gfx90a",
            "build_system=cmake",
            "~ipo",
            "+shared",
        ]

    @pytest.mark.parametrize("size", ["-", 12345, "12345"])
    def test_size_forms(self, size: Any) -> None:
        assert len(read_page(_page(None, [_entry(size=size)]), "p")) == 1

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("+cuda", ("cuda", True)),
            ("~cuda", ("cuda", False)),
            ("build_system=cmake", ("build_system", "cmake")),
            ("languages='c,c++,fortran'", ("languages", ("c", "c++", "fortran"))),
            ("k=b,a", ("k", ("a", "b"))),
            ("patches=", ("patches", "")),
        ],
    )
    def test_parse_variant(self, text: str, expected: tuple[str, Any]) -> None:
        assert parse_variant(text, "p", "v") == expected


class TestBadPages:
    @pytest.mark.parametrize(
        ("details", "path", "problem"),
        [
            ([_entry(), _entry(hash="tooshort")], "spec_details[1].hash", "32-character"),
            ([_entry(hash="A" * 32)], "spec_details[0].hash", "32-character"),
            ([_entry(hash=None)], "spec_details[0].hash", "32-character"),
            ([_entry(versions="1.0")], "spec_details[0].versions", "expected a list"),
            ([_entry(versions=["1", "2"])], "spec_details[0].versions", "exactly one"),
            ([_entry(versions=[1])], "spec_details[0].versions[0]", "expected a string"),
            ([_entry(os=5)], "spec_details[0].os", "non-empty string"),
            ([_entry(stacks="root")], "spec_details[0].stacks", "expected a list"),
            ([_entry(variants=["+"])], "spec_details[0].variants[0]", "not a variant"),
            ([_entry(variants=["novalue"])], "spec_details[0].variants[0]", "not a variant"),
            ([_entry(size=[1])], "spec_details[0].size", "'-' or a number"),
            (["x"], "spec_details[0]", "expected an object"),
            ({"a": 1}, "spec_details", "expected a list"),
            (None, "spec_details", "missing"),
        ],
    )
    def test_entry_errors(self, details: Any, path: str, problem: str) -> None:
        with pytest.raises(MetadataError) as info:
            read_page(_page(None, details), "https://cache.spack.io/package/develop/pkg/specs/")
        assert info.value.path == path
        assert problem in str(info.value)
        assert str(info.value).startswith("https://cache.spack.io/package/develop/pkg/specs/: ")

    def test_twelfth_entry_path(self) -> None:
        details = [_entry(hash=f"{i:02d}" + "a" * 30) for i in range(13)]
        details[12]["hash"] = "x" * 31
        with pytest.raises(MetadataError, match=r"p: spec_details\[12\]\.hash: "):
            read_page(_page(None, details), "p")

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("# just markdown\n", "no YAML front matter"),
            ("", "no YAML front matter"),
            ("---\ntitle: x\n", "not closed"),
            ("---\ntitle: [x\n---\n", "invalid YAML"),
            ("---\n- a\n---\n", "not a mapping"),
            ("---\nspec_details: []\n---\n", "package name"),
            ('---\ntitle: "x"\nmeta: [1]\nspec_details: []\n---\n', "expected an object"),
        ],
    )
    def test_structure_errors(self, text: str, problem: str) -> None:
        with pytest.raises(MetadataError, match=problem):
            read_page(text, "p.md")

    def test_duplicate_hash_is_a_warning(self) -> None:
        catalog = read_page(_page(None, [_entry(), _entry()]), "p")
        assert len(catalog) == 1
        assert any("listed twice" in w for w in catalog.warnings)
