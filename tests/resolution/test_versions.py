"""Spack's version order and constraints, with cases from Spack's documented rules."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cacheclient.resolution.versions import Version, parse_constraint, parse_version


def v(text: str) -> Version:
    return parse_version(text)


class TestOrder:
    @pytest.mark.parametrize(
        ("lower", "higher"),
        [
            # numeric segments compare as numbers, not strings
            ("1.9", "1.10"),
            ("1.2.9", "1.2.10"),
            ("0.9.99", "1.0"),
            # a prefix is older than its extensions
            ("1.2", "1.2.0"),
            ("1.2", "1.2.1"),
            # numbers are newer than letters (RPM-like): 1.2a < 1.2.1
            ("1.2a", "1.2.1"),
            ("0.1.10a0", "0.1.10.0"),
            # plain strings sort alphabetically among themselves
            ("1.2a", "1.2b"),
            ("local", "system"),
            # strings are older than numbers
            ("local", "0.1"),
            # develop-like strings are newer than any number, in this order
            ("99999", "trunk"),
            ("trunk", "head"),
            ("head", "master"),
            ("master", "main"),
            ("main", "develop"),
            ("1.2.3", "1.develop"),
            # separators are equivalent and letters/digits split components
            ("1.2.0", "1.2.0-rc1"),
            ("1.2.0-rc1", "1.2.0-rc2"),
            ("1.2rc1", "1.2.1"),
            ("2.0.0_alpha", "2.0.0_beta"),
        ],
    )
    def test_less(self, lower: str, higher: str) -> None:
        assert v(lower) < v(higher)
        assert v(higher) > v(lower)
        assert v(lower) != v(higher)

    @pytest.mark.parametrize(
        ("a", "b"), [("1.2.3", "1-2-3"), ("1.2.3", "1_2_3"), ("1.2rc1", "1.2.rc.1")]
    )
    def test_separators_are_equivalent(self, a: str, b: str) -> None:
        assert v(a) == v(b)
        assert hash(v(a)) == hash(v(b))

    def test_sorted_list(self) -> None:
        versions = ["develop", "1.10", "1.2", "main", "1.2a", "local", "1.9.1", "1.2.0-rc1"]
        assert [str(x) for x in sorted(map(v, versions))] == [
            "local",
            "1.2",
            "1.2a",
            "1.2.0-rc1",
            "1.9.1",
            "1.10",
            "main",
            "develop",
        ]

    @pytest.mark.parametrize("bad", ["", " ", "1.2$", "1 2", "...", "1/2"])
    def test_invalid(self, bad: str) -> None:
        with pytest.raises(ValueError, match="invalid version"):
            v(bad)

    @given(st.lists(st.from_regex(r"\A[0-9a-z]{1,4}([._-][0-9a-z]{1,4}){0,3}\Z"), max_size=8))
    def test_total_order_is_consistent(self, texts: list[str]) -> None:
        versions = [v(t) for t in texts]
        ordered = sorted(versions)
        assert all(a <= b for a, b in itertools.pairwise(ordered))
        backwards = list(reversed(versions))
        assert [x.key for x in sorted(backwards)] == [x.key for x in ordered]


class TestConstraint:
    @pytest.mark.parametrize(
        ("constraint", "version", "expected"),
        [
            ("1.2", "1.2", True),
            ("1.2", "1.2.5", True),  # Spack's prefix semantics
            ("1.2", "1.20", False),
            ("1.2", "1.3", False),
            ("=1.2", "1.2", True),
            ("=1.2", "1.2.5", False),
            ("1.2:1.4", "1.3.7", True),
            ("1.2:1.4", "1.4.9", True),  # the upper bound matches as a prefix
            ("1.2:1.4", "1.5", False),
            ("1.2:1.4", "1.1.9", False),
            (":1.4", "0.1", True),
            (":1.4", "1.5", False),
            ("1.4:", "1.4", True),
            ("1.4:", "develop", True),
            ("1.4:", "1.3.99", False),
            (":", "anything", True),
            ("1.0,2.0:", "1.0.1", True),
            ("1.0,2.0:", "1.5", False),
            ("1.0,2.0:", "3", True),
            ("1.2.0", "1.2.0-rc1", True),
            ("=1.2.0-rc1", "1.2.0-rc1", True),
        ],
    )
    def test_contains(self, constraint: str, version: str, expected: bool) -> None:
        assert parse_constraint(constraint).contains(version) is expected

    @pytest.mark.parametrize(("text", "pins"), [("=1.2", True), ("1.2", True), ("1.2:", False)])
    def test_pins(self, text: str, pins: bool) -> None:
        assert parse_constraint(text).pins is pins

    @pytest.mark.parametrize("bad", ["", "1.2,", "1:2:3", "2.0:1.0", "=", "1.$"])
    def test_invalid(self, bad: str) -> None:
        with pytest.raises(ValueError, match=r"version|range"):
            parse_constraint(bad)

    def test_unparsable_build_version_never_matches(self) -> None:
        assert parse_constraint(":").contains("not a version!") is False

    @pytest.mark.parametrize("text", ["1.2", "=1.2", "1.2:1.4", ":1.4", "1.4:", "1.0,2.0:"])
    def test_str_round_trip(self, text: str) -> None:
        assert str(parse_constraint(text)) == text
