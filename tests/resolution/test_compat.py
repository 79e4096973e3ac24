"""Target and libc compatibility, and the packaging.tags-shaped selector."""

from __future__ import annotations

import pytest

from cacheclient.model import Libc
from cacheclient.resolution.compat import (
    OS_GLIBC,
    compatible_targets,
    create_compatible_targets_selector,
    libc_for_os,
    libc_version_ok,
    target_ranks,
    why_not_target,
)


class TestCompatibleTargets:
    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("x86_64_v3", ["x86_64_v3", "x86_64_v2", "x86_64"]),
            (
                "zen4",
                ["zen4", "zen3", "x86_64_v4", "zen2", "zen", "x86_64_v3", "x86_64_v2", "x86_64"],
            ),
            (
                "haswell",
                [
                    "haswell",
                    "ivybridge",
                    "x86_64_v3",
                    "sandybridge",
                    "westmere",
                    "nehalem",
                    "core2",
                    "x86_64_v2",
                    "nocona",
                    "x86_64",
                ],
            ),
            ("power9le", ["power9le", "power8le", "ppc64le"]),
        ],
    )
    def test_host_then_ancestors_in_archspec_order(self, host: str, expected: list[str]) -> None:
        assert compatible_targets(host) == expected

    def test_neoverse_v2_runs_aarch64_but_not_x86(self) -> None:
        targets = compatible_targets("neoverse_v2")
        assert targets[0] == "neoverse_v2"
        assert "aarch64" in targets
        assert "neoverse_n1" in targets
        assert "x86_64" not in targets

    def test_unknown_host_target_only_runs_itself(self) -> None:
        assert compatible_targets("mystery") == ["mystery"]

    @pytest.mark.parametrize("host", ["zen2", "zen4", "x86_64_v4", "icelake", "neoverse_v2"])
    def test_never_a_descendant_nor_other_vendor(self, host: str) -> None:
        targets = compatible_targets(host)
        assert "sapphirerapids" not in targets or host == "sapphirerapids"
        if host.startswith("zen"):
            assert not any(t in targets for t in ("haswell", "skylake", "icelake"))


class TestWhyNot:
    def test_compatible_is_none(self) -> None:
        assert why_not_target("x86_64_v3", "zen4") is None

    def test_missing_features_are_named(self) -> None:
        msg = why_not_target("x86_64_v4", "haswell")
        assert msg is not None
        assert msg.startswith("target x86_64_v4 needs avx512bw, avx512cd, avx512dq, avx512f")
        assert msg.endswith("host haswell lacks them")

    def test_other_vendor_line(self) -> None:
        msg = why_not_target("haswell", "zen2")
        assert msg is not None
        assert "GenuineIntel line" in msg
        assert "AuthenticAMD" in msg

    def test_other_family(self) -> None:
        assert why_not_target("aarch64", "zen4") == (
            "target aarch64 is for aarch64 machines; host zen4 is x86_64"
        )

    def test_unknown_build_target(self) -> None:
        msg = why_not_target("futurecore", "zen4")
        assert msg is not None
        assert "unknown to archspec" in msg


class TestLibc:
    @pytest.mark.parametrize(
        ("os_name", "version"),
        [
            ("ubuntu20.04", "2.31"),
            ("ubuntu22.04", "2.35"),
            ("ubuntu24.04", "2.39"),
            ("debian10", "2.28"),
            ("debian11", "2.31"),
            ("debian12", "2.36"),
            ("debian13", "2.41"),
            ("rhel7", "2.17"),
            ("rocky8", "2.28"),
            ("almalinux9", "2.34"),
            ("centos10", "2.39"),
            ("amzn2", "2.26"),
            ("amzn2023", "2.34"),
            ("sles15", "2.31"),
            ("opensuse15", "2.31"),
            ("fedora38", "2.37"),
            ("fedora42", "2.41"),
        ],
    )
    def test_table(self, os_name: str, version: str) -> None:
        assert libc_for_os(os_name) == Libc(name="glibc", version=version)

    def test_unknown_os(self) -> None:
        assert libc_for_os("plan9") is None
        assert "plan9" not in OS_GLIBC

    @pytest.mark.parametrize(
        ("build", "host", "ok"),
        [
            (("glibc", "2.35"), ("glibc", "2.39"), True),
            (("glibc", "2.39"), ("glibc", "2.39"), True),
            (("glibc", "2.39"), ("glibc", "2.35"), False),
            (("glibc", "2.9"), ("glibc", "2.17"), True),  # numeric, not lexical
            (("musl", "1.2"), ("glibc", "2.39"), False),
        ],
    )
    def test_version_ok(self, build: tuple[str, str], host: tuple[str, str], ok: bool) -> None:
        assert (
            libc_version_ok(
                Libc(name=build[0], version=build[1]), Libc(name=host[0], version=host[1])
            )
            is ok
        )


class TestSelector:
    def test_ranks_by_first_occurrence(self) -> None:
        assert target_ranks(["a", "b", "a", "c"]) == {"a": 0, "b": 1, "c": 3}

    def test_orders_and_drops(self) -> None:
        select = create_compatible_targets_selector(compatible_targets("zen3"))
        items = [("v2", "x86_64_v2"), ("hsw", "haswell"), ("z2", "zen2"), ("v3", "x86_64_v3")]
        assert list(select(items)) == ["z2", "v3", "v2"]

    def test_ties_keep_input_order(self) -> None:
        select = create_compatible_targets_selector(["x86_64"])
        assert list(select([("b", "x86_64"), ("a", "x86_64")])) == ["b", "a"]
