"""The resolver on real data (the seed page, Spack-written mirrors) and on small catalogs."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace
from functools import cache

import pytest

from cacheclient.errors import NoMatchError, UsageError
from cacheclient.metadata.catalog import Catalog
from cacheclient.metadata.page import read_page
from cacheclient.mirrors.open import local_reader, open_catalog
from cacheclient.model import BuildRecord, ClosureNode, Dependency, Libc
from cacheclient.resolution.compat import compatible_targets
from cacheclient.resolution.host import HostProfile
from cacheclient.resolution.resolve import (
    AXES,
    ClosureHole,
    no_match_message,
    resolve,
    resolve_or_raise,
)
from paths import SEED_PAGE, SPACK_V3, SPACK_V3_SIGNED, V2_MIRRORS

PKG = "py-pyproject-hooks"


def host(
    os_name: str, target: str, platform: str = "linux", libc: Libc | None = None
) -> HostProfile:
    return HostProfile(platform=platform, os=os_name, target=target, libc=libc)


@cache
def page_text() -> str:
    return SEED_PAGE.read_text(encoding="utf-8")


def shuffled_page(seed: int) -> str:
    """The seed page with its ``spec_details`` list in another order."""
    out = []
    for line in page_text().splitlines(keepends=True):
        if line.startswith("spec_details: "):
            details = json.loads(line[len("spec_details: ") :])
            random.Random(seed).shuffle(details)  # noqa: S311  (a test permutation)
            out.append("spec_details: " + json.dumps(details) + "\n")
        else:
            out.append(line)
    return "".join(out)


@cache
def page() -> Catalog:
    return read_page(page_text(), str(SEED_PAGE))


@cache
def v3_mirror() -> Catalog:
    return open_catalog(str(SPACK_V3_SIGNED), local_reader(SPACK_V3_SIGNED))


LINK = frozenset({"link"})


def rec(
    hash_char: str,
    *,
    name: str = "pkg",
    version: str = "1.0",
    os: str = "ubuntu22.04",
    target: str = "x86_64_v3",
    **kw: object,
) -> BuildRecord:
    return BuildRecord(
        name=name,
        version=version,
        hash=hash_char * 32,
        platform="linux",
        os=os,
        target=target,
        **kw,  # type: ignore[arg-type]
    )


# The seed page: expected choices for the five hosts the issue names.
SEED_CASES = [
    (host("ubuntu24.04", "zen4"), "exact", "7gxinepk7daz7rk5xrpl2pln6lc5i37l"),
    (host("ubuntu22.04", "haswell"), "exact", "7slhosia3sxtqjg3ms3njoppbdu3jazb"),
    (host("ubuntu24.04", "neoverse_v2"), "exact", "b7r6qpittiweef2wvivt6oakcn7j4abr"),
    (host("ubuntu22.04", "x86_64_v2"), "exact", None),
    (host("debian12", "icelake"), "exact", None),
    (
        host("debian12", "icelake", libc=Libc(name="glibc", version="2.36")),
        "libc",
        "7slhosia3sxtqjg3ms3njoppbdu3jazb",
    ),
    (host("ubuntu24.04", "x86_64_v4"), "exact", "7gxinepk7daz7rk5xrpl2pln6lc5i37l"),
]


class TestSeedPage:
    @pytest.mark.parametrize(("profile", "policy", "expected"), SEED_CASES)
    def test_choice(self, profile: HostProfile, policy: str, expected: str | None) -> None:
        (res,) = resolve([PKG], page(), profile, os_compat=policy)
        got = res.selected.hash if res.selected else None
        assert got == expected
        if res.selected is not None:
            assert res.selected.version == "1.2.0"
            assert res.selected.target in compatible_targets(profile.target)
            assert res.closure == [ClosureNode.of(res.selected)]

    @pytest.mark.parametrize(("profile", "policy", "expected"), SEED_CASES)
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_same_answer_for_any_order(
        self, profile: HostProfile, policy: str, expected: str | None, seed: int
    ) -> None:
        catalog = read_page(shuffled_page(seed), "shuffled")
        (base,) = resolve([PKG], page(), profile, os_compat=policy)
        (res,) = resolve([PKG], catalog, profile, os_compat=policy)
        assert (res.selected.hash if res.selected else None) == expected
        assert res.to_dict() == base.to_dict()

    def test_zen4_prefers_more_stacks_among_equals(self) -> None:
        (res,) = resolve([PKG], page(), host("ubuntu24.04", "zen4"))
        top = [c.record for c in res.candidates if c.accepted]
        assert top[0].stacks == (
            "ml-linux-x86_64-cpu",
            "ml-linux-x86_64-cuda",
            "ml-linux-x86_64-rocm",
            "root",
        )
        assert [c.rank for c in res.candidates if c.accepted] == list(range(1, len(top) + 1))
        assert all(r.version == "1.2.0" for r in top[:3])
        assert top[-1].version == "1.0.0"

    def test_x86_64_v2_nothing_matches_explained(self) -> None:
        (res,) = resolve([PKG], page(), host("ubuntu22.04", "x86_64_v2"))
        assert res.selected is None
        assert len(res.candidates) == 58
        assert all(c.reasons and c.rank is None for c in res.candidates)
        msg = no_match_message(res)
        assert "58 of 58 rejected by target" in msg
        assert "closest: py-pyproject-hooks@1.2.0" in msg
        assert "host x86_64_v2 lacks them" in msg

    def test_debian12_exact_blames_os(self) -> None:
        (res,) = resolve([PKG], page(), host("debian12", "icelake"))
        msg = no_match_message(res)
        assert msg.startswith("nothing matches 'py-pyproject-hooks' on linux-debian12-icelake")
        assert "58 of 58 rejected by os" in msg

    def test_libc_policy_rejects_newer_glibc(self) -> None:
        profile = host("debian12", "icelake", libc=Libc(name="glibc", version="2.36"))
        (res,) = resolve([PKG], page(), profile, os_compat="libc")
        by_hash = {c.record.hash: c for c in res.candidates}
        rejected = by_hash["7gxinepk7daz7rk5xrpl2pln6lc5i37l"]
        assert [r.axis for r in rejected.reasons] == ["libc"]
        assert rejected.reasons[0].message == (
            "built for ubuntu24.04 with glibc@2.39; host debian12 has glibc@2.36"
        )

    def test_aarch64_never_gets_x86(self) -> None:
        (res,) = resolve([PKG], page(), host("ubuntu24.04", "neoverse_v2"))
        for c in res.candidates:
            if c.record.target == "x86_64_v3":
                assert any(r.axis == "target" for r in c.reasons)

    def test_version_request(self) -> None:
        (res,) = resolve([f"{PKG}@1.0"], page(), host("ubuntu24.04", "zen4"))
        assert res.selected is not None
        assert res.selected.version == "1.0.0"

    def test_to_dict_shape(self) -> None:
        (res,) = resolve([PKG], page(), host("ubuntu24.04", "zen4"))
        data = res.to_dict()
        assert set(data["selected"]) >= {
            "hash",
            "name",
            "version",
            "os",
            "target",
            "compiler",
            "variants",
            "stacks",
        }
        assert data["closure"] == [
            {"hash": "7gxinepk7daz7rk5xrpl2pln6lc5i37l", "name": PKG, "version": "1.2.0"}
        ]
        for cand in data["candidates"]:
            assert set(cand) >= {"hash", "accepted", "rank", "reasons"}
            assert cand["accepted"] == (cand["rank"] is not None)
            assert all(r["axis"] in AXES and r["message"] for r in cand["reasons"])
        json.dumps(data)


V3_HOSTS = ["x86_64_v2", "x86_64_v3", "x86_64_v4", "haswell", "zen2", "zen4", "icelake", "nehalem"]


class TestSpackMirror:
    @pytest.mark.parametrize("target", V3_HOSTS)
    @pytest.mark.parametrize("name", ["demo-tool", "demo-libfoo", "demo-zlib", "demo-pyhooks"])
    def test_choices_consistent_with_targets(self, name: str, target: str) -> None:
        profile = host("debian12", target)
        (res,) = resolve([name], v3_mirror(), profile)
        assert res.selected is not None
        runnable = compatible_targets(target)
        assert res.selected.target in runnable
        # the closest runnable target among the newest version wins
        newest = [
            c.record
            for c in res.candidates
            if c.accepted and c.record.version == res.selected.version
        ]
        assert min(runnable.index(r.target) for r in newest) == runnable.index(res.selected.target)
        # rejected builds are rejected for their target only (same OS, no constraints)
        for c in res.candidates:
            if not c.accepted:
                assert [r.axis for r in c.reasons] == ["target"]
                assert c.record.target not in runnable

    def test_contract_choice(self) -> None:
        (res,) = resolve(["demo-tool@1.0.0"], v3_mirror(), host("debian12", "x86_64_v4"))
        assert res.selected is not None
        assert res.selected.hash == "vwaicymp67emhvtu53ght22dv5pm6y2b"

    def test_closure_matches_expected_json(self) -> None:
        expected = json.loads((SPACK_V3 / "signed.expected.json").read_text(encoding="utf-8"))
        truth = {s["dag_hash"]: s for s in expected["specs"]}
        (res,) = resolve(["demo-tool@1.0.0"], v3_mirror(), host("debian12", "x86_64_v4"))
        assert res.selected is not None
        want: set[str] = set()
        todo = [res.selected.hash]
        while todo:
            h = todo.pop()
            want.add(h)
            todo += [
                d["dag_hash"]
                for d in truth[h]["dependencies"]
                if {"link", "run"} & set(d["types"]) and d["dag_hash"] not in want
            ]
        assert {r.hash for r in res.closure} == want
        names = [r.name for r in res.closure]
        assert names[-1] == "demo-tool"
        # post-order: every node comes after its runtime dependencies
        seen: set[str] = set()
        for r in res.closure:
            assert all(dep_hash in seen for dep_hash in r.children)
            seen.add(r.hash)

    def test_pinned_target_request(self) -> None:
        (res,) = resolve(
            ["demo-tool@1.0.0 target=x86_64_v2"], v3_mirror(), host("debian12", "x86_64_v4")
        )
        assert res.selected is not None
        assert res.selected.target == "x86_64_v2"

    def test_variant_request(self) -> None:
        (res,) = resolve(["demo-libfoo codecs=gzip"], v3_mirror(), host("debian12", "x86_64_v3"))
        assert res.selected is not None
        codecs = res.selected.variants["codecs"]
        assert isinstance(codecs, tuple)
        assert "gzip" in codecs
        for c in res.candidates:
            if c.record.variants["codecs"] == ("bz2",):
                assert any(r.axis == "variant" for r in c.reasons)

    def test_unsigned_mirror_same_answer(self) -> None:
        unsigned = SPACK_V3 / "unsigned"
        cat = open_catalog(str(unsigned), local_reader(unsigned))
        (a,) = resolve(["demo-tool"], cat, host("debian12", "zen4"))
        (b,) = resolve(["demo-tool"], v3_mirror(), host("debian12", "zen4"))
        assert a.selected is not None
        assert b.selected is not None
        assert a.selected.hash == b.selected.hash

    def test_merged_mirrors_prefer_stack_order(self) -> None:
        unsigned = SPACK_V3 / "unsigned"
        u = open_catalog(str(unsigned), local_reader(unsigned))
        merged = Catalog.merge([v3_mirror(), u])
        (res,) = resolve(
            ["demo-tool@1.0.0"],
            merged,
            host("debian12", "x86_64_v4"),
            preferred_stacks=[str(unsigned)],
        )
        assert res.selected is not None
        assert str(unsigned) in res.selected.stacks


class TestSpackV2Mirror:
    def test_dependency_only_and_externals(self) -> None:
        root = V2_MIRRORS / "signed"
        cat = open_catalog(str(root), local_reader(root))
        # the records are for platform "test"; gcc is an external, dependency-only record
        profile = HostProfile(platform="test", os="debian6", target="m1")
        (res,) = resolve(["libdwarf"], cat, profile)
        assert res.selected is not None
        assert res.selected.hash == "u5uz3dcch5if4eve4sef67o2rf2lbfgh"
        assert [r.name for r in res.closure][-1] == "libdwarf"
        assert all(not r.external for r in res.closure)
        (gcc,) = resolve(["gcc"], cat, profile)
        assert gcc.selected is None
        assert gcc.note is not None
        assert "dependency-only" in gcc.note


class TestSmallCatalogs:
    def test_non_installable_never_selected(self) -> None:
        cat = Catalog([rec("a", installable=False), rec("b", version="0.9")], source="t")
        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert res.selected is not None
        assert res.selected.hash == "b" * 32
        assert [c.record.hash for c in res.candidates] == ["b" * 32]

    def test_missing_dependency_rejects_the_candidate_on_closure(self) -> None:
        dep = Dependency(name="zlib", hash="z" * 32, deptypes=frozenset({"link"}))
        cat = Catalog([rec("a", dependencies=(dep,))], source="idx")
        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert res.selected is None
        (reason,) = res.candidates[0].reasons
        assert reason.axis == "closure"
        assert reason.message.startswith("zlib/zzzzzzz (a dependency of pkg/aaaaaaa) is missing")
        assert "1 of 1 rejected by closure" in no_match_message(res)

    def test_build_and_test_edges_not_followed(self) -> None:
        deps = (
            Dependency(name="cmake", hash="c" * 32, deptypes=frozenset({"build"})),
            Dependency(name="pytest", hash="t" * 32, deptypes=frozenset({"test"})),
            Dependency(name="glibc", hash="g" * 32, deptypes=frozenset({"link"})),
            Dependency(name="zlib", hash="z" * 32, deptypes=frozenset({"build", "link"})),
        )
        records = [
            rec("a", dependencies=deps),
            rec("g", name="glibc", version="2.35", external_path="/usr", installable=False),
            rec("z", name="zlib"),
        ]
        (res,) = resolve(["pkg"], Catalog(records, source="t"), host("ubuntu22.04", "x86_64_v3"))
        assert [r.name for r in res.closure] == ["zlib", "pkg"]
        assert [r.name for r in res.externals] == ["glibc"]

    def test_dependency_without_binary_falls_back_to_the_next_best(self) -> None:
        """The newest build needs a dependency-only zlib: the older one is selected, and the
        newer one is explained on the ``closure`` axis."""
        dep = Dependency(name="zlib", hash="z" * 32, deptypes=frozenset({"run"}))
        cat = Catalog(
            [
                rec("a", version="2.0", dependencies=(dep,)),
                rec("b", version="1.0"),
                rec("z", name="zlib", installable=False),
            ]
        )
        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert res.selected is not None
        assert res.selected.hash == "b" * 32
        by_hash = {c.record.hash: c for c in res.candidates}
        assert by_hash["b" * 32].rank == 1
        (reason,) = by_hash["a" * 32].reasons
        assert (reason.axis, reason.message.split(" (")[0]) == (
            "closure",
            "zlib/zzzzzzz has no binary",
        )

    def test_a_closure_function_decides(self) -> None:
        """The pipeline passes a function reading signed specs; its holes reject candidates."""
        cat = Catalog([rec("a", version="2.0"), rec("b", version="1.0")], source="t")

        def closure(r: BuildRecord) -> tuple[list[ClosureNode], list[BuildRecord]]:
            if r.hash == "a" * 32:
                raise ClosureHole("dep/1234567 has no binary on any mirror")
            return [ClosureNode.of(r)], []

        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "x86_64_v3"), closure=closure)
        assert res.selected is not None
        assert res.selected.version == "1.0"
        rejected = [c for c in res.candidates if not c.accepted]
        assert [(c.record.version, c.reasons[0].axis) for c in rejected] == [("2.0", "closure")]

    def test_a_deep_chain_needs_no_deep_stack(self) -> None:
        def node(i: int) -> BuildRecord:
            deps: tuple[Dependency, ...] = ()
            if i + 1 < 3000:
                child = Dependency(name=f"p{i + 1}", hash=f"{i + 1:032d}", deptypes=LINK)
                deps = (child,)
            return replace(rec("a", name=f"p{i}", dependencies=deps), hash=f"{i:032d}")

        catalog = Catalog([node(i) for i in range(3000)], source="t")
        (res,) = resolve(["p0"], catalog, host("ubuntu22.04", "x86_64_v3"))
        assert len(res.closure) == 3000
        assert (res.closure[0].name, res.closure[-1].name) == ("p2999", "p0")

    def test_libc_unknown_os_rejected(self) -> None:
        cat = Catalog([rec("a", os="plan9")], source="t")
        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "x86_64_v3"), os_compat="libc")
        assert res.selected is None
        (reason,) = res.candidates[0].reasons
        assert reason.axis == "os"
        assert "never assumes it compatible" in reason.message

    def test_libc_node_beats_table(self) -> None:
        libc = Libc(name="glibc", version="2.17")
        cat = Catalog([rec("a", os="ubuntu24.04", libc=libc)], source="t")
        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "x86_64_v3"), os_compat="libc")
        assert res.selected is not None

    def test_exact_os_ranks_before_libc_compatible(self) -> None:
        cat = Catalog([rec("a", os="ubuntu20.04"), rec("b", os="ubuntu22.04")], source="t")
        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "x86_64_v3"), os_compat="libc")
        assert res.selected is not None
        assert res.selected.os == "ubuntu22.04"

    def test_version_beats_target(self) -> None:
        cat = Catalog(
            [rec("a", version="2.0", target="x86_64"), rec("b", version="1.0", target="zen4")]
        )
        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "zen4"))
        assert res.selected is not None
        assert res.selected.version == "2.0"

    def test_exact_pin_skips_version_ranking(self) -> None:
        cat = Catalog(
            [rec("a", version="1.0", target="x86_64"), rec("b", version="1.0", target="zen4")]
        )
        (res,) = resolve(["pkg@=1.0"], cat, host("ubuntu22.04", "zen4"))
        assert res.selected is not None
        assert res.selected.target == "zen4"

    def test_develop_sorts_above_numbers(self) -> None:
        cat = Catalog([rec("a", version="develop"), rec("b", version="99.0")])
        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert res.selected is not None
        assert res.selected.version == "develop"

    def test_compiler_constraint(self) -> None:
        cat = Catalog([rec("a", compiler="gcc@12.3.0"), rec("b", compiler="clang@17.0.1")])
        (res,) = resolve(["pkg %gcc@12:"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert res.selected is not None
        assert res.selected.hash == "a" * 32
        (clang,) = [c for c in res.candidates if not c.accepted]
        assert clang.reasons[0].axis == "compiler"
        (res2,) = resolve(["pkg %gcc@13:"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert res2.selected is None

    def test_platform_axis(self) -> None:
        cat = Catalog([rec("a")])
        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "x86_64_v3", platform="darwin"))
        assert res.candidates[0].reasons[0].axis == "platform"

    def test_hash_prefix_unique_and_ambiguous(self) -> None:
        a = replace(rec("a"), hash="abcdefg" + "a" * 25)
        b = replace(rec("b"), hash="abcdefg" + "b" * 25)
        cat = Catalog([a, b], source="t")
        (res,) = resolve(["/abcdefga"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert res.selected is not None
        assert res.selected.hash == a.hash
        with pytest.raises(
            UsageError, match=r"ambiguous: 2 builds match \(pkg@1.0/abcdefga.*pkg@1.0/abcdefgb"
        ):
            resolve(["/abcdefg"], cat, host("ubuntu22.04", "x86_64_v3"))

    def test_hash_of_another_package(self) -> None:
        cat = Catalog([rec("a"), rec("b", name="other")], source="t")
        (res,) = resolve(["other/aaaaaaa"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert res.selected is None
        assert res.candidates[0].reasons[0].axis == "hash"

    def test_unknown_name_suggests(self) -> None:
        cat = Catalog([rec("a", name="zlib-ng")], source="t")
        (res,) = resolve(["zlib-nj"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert res.selected is None
        msg = no_match_message(res)
        assert "no build named zlib-nj in t" in msg
        assert "did you mean zlib-ng" in msg

    def test_resolve_or_raise(self) -> None:
        cat = Catalog([rec("a", target="zen4")], source="t")
        with pytest.raises(NoMatchError, match="1 of 1 rejected by target") as info:
            resolve_or_raise(["pkg"], cat, host("ubuntu22.04", "haswell"))
        assert info.value.exit_code == 3
        assert len(resolve_or_raise(["pkg"], cat, host("ubuntu22.04", "zen4"))) == 1

    def test_string_words_join_like_the_command_line(self) -> None:
        cat = Catalog([rec("a", variants={"docs": True}), rec("b", version="2.0")], source="t")
        results = resolve(["pkg", "+docs"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert [r.request for r in results] == ["pkg +docs"]
        assert results[0].selected is not None
        assert results[0].selected.hash == "a" * 32

    def test_bad_policy(self) -> None:
        with pytest.raises(UsageError, match="os-compat"):
            resolve(["pkg"], Catalog([]), host("ubuntu22.04", "zen4"), os_compat="fuzzy")

    @pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
    def test_input_order_never_matters(self, order: Sequence[int]) -> None:
        records = [rec("a"), rec("b"), rec("c", target="x86_64_v2")]
        cat = Catalog([records[i] for i in order], source="t")
        (res,) = resolve(["pkg"], cat, host("ubuntu22.04", "x86_64_v3"))
        assert [c.record.hash[0] for c in res.candidates] == ["a", "b", "c"]
