"""The request syntax subset and Spack's satisfies semantics for variants."""

from __future__ import annotations

import pytest

from cacheclient.errors import UsageError
from cacheclient.resolution.spec import VariantRequest, parse_request, parse_requests


class TestParseRequest:
    def test_name_only(self) -> None:
        req = parse_request("py-pyproject-hooks")
        assert req.name == "py-pyproject-hooks"
        assert req.versions is None
        assert req.variants == ()

    def test_everything(self) -> None:
        req = parse_request(
            "demo-libfoo@2.1: +shared ~docs -debug codecs=gzip,lz4 api=v2 %gcc@12: "
            "platform=linux os=debian12 target=x86_64_v3"
        )
        assert req.name == "demo-libfoo"
        assert req.versions is not None
        assert req.versions.contains("2.1.0")
        assert not req.versions.contains("2.0")
        assert {x.name: x.value for x in req.variants} == {
            "shared": True,
            "docs": False,
            "debug": False,
            "codecs": ("gzip", "lz4"),
            "api": ("v2",),
        }
        assert req.compiler == "gcc"
        assert req.compiler_versions is not None
        assert req.compiler_versions.contains("13.2.0")
        assert (req.platform, req.os, req.target) == ("linux", "debian12", "x86_64_v3")

    def test_arch_triplet(self) -> None:
        req = parse_request("zlib arch=linux-ubuntu24.04-zen4")
        assert (req.platform, req.os, req.target) == ("linux", "ubuntu24.04", "zen4")

    def test_exact_version(self) -> None:
        req = parse_request("zlib@=1.3")
        assert req.versions is not None
        assert req.versions.contains("1.3")
        assert not req.versions.contains("1.3.1")

    def test_hash_only(self) -> None:
        req = parse_request("/VWAICYMP67")
        assert req.name is None
        assert req.hash_prefix == "vwaicymp67"

    def test_name_and_hash(self) -> None:
        req = parse_request("demo-tool/vwaicym")
        assert (req.name, req.hash_prefix) == ("demo-tool", "vwaicym")

    def test_dash_inside_name_is_not_a_variant(self) -> None:
        req = parse_request("py-pyproject-hooks -docs")
        assert req.name == "py-pyproject-hooks"
        assert req.variants == (VariantRequest(name="docs", value=False),)

    def test_propagating_sigils_accepted(self) -> None:
        req = parse_request("zlib ++shared ~~pic")
        assert {x.name: x.value for x in req.variants} == {"shared": True, "pic": False}

    @pytest.mark.parametrize(
        ("text", "position", "problem"),
        [
            ("zlib@@1.2", 5, "followed by a version"),
            ("zlib /abc12", 6, "shorter than 7"),
            ("zlib@1.2 @1.3", 10, "second version"),
            ("zlib +shared ~shared", 14, "given twice"),
            ("zlib ^openssl", 6, "not supported"),
            ("zlib arch=linux-x", 6, "platform-os-target"),
            ("zlib codecs=", 6, "no value"),
            ("zlib@3:1", 5, "empty version range"),
            ("zlib %gcc %clang", 11, "second compiler"),
            ("zlib $x", 6, "unexpected '$'"),
        ],
    )
    def test_errors_name_spec_and_position(self, text: str, position: int, problem: str) -> None:
        with pytest.raises(UsageError) as info:
            parse_request(text)
        message = str(info.value)
        assert repr(text) in message
        assert f"position {position}" in message
        assert problem in message
        assert info.value.exit_code == 2

    def test_two_specs_in_one_string_is_an_error_for_parse_request(self) -> None:
        with pytest.raises(UsageError, match="expected one spec, found 2"):
            parse_request("zlib demo-tool")


class TestParseRequests:
    def test_words_attach_to_previous_name(self) -> None:
        reqs = parse_requests(["zlib@1.3", "+shared", "demo-tool", "target=zen4"])
        assert [r.name for r in reqs] == ["zlib", "demo-tool"]
        assert reqs[0].variants == (VariantRequest(name="shared", value=True),)
        assert reqs[1].target == "zen4"
        assert reqs[0].text == "zlib@1.3 +shared"

    def test_one_word_with_spaces_holds_several(self) -> None:
        assert [r.name for r in parse_requests(["a b@1 c"])] == ["a", "b", "c"]

    def test_empty(self) -> None:
        with pytest.raises(UsageError, match="no spec"):
            parse_requests(["  "])

    def test_no_package(self) -> None:
        with pytest.raises(UsageError, match=r"'\+docs @1.2' names no package"):
            parse_requests(["+docs", "@1.2"])


class TestVariantSatisfies:
    @pytest.mark.parametrize(
        ("request_value", "actual", "ok"),
        [
            (True, True, True),
            (True, False, False),
            (False, False, True),
            (True, None, False),
            (True, "true", True),
            (("gzip",), ("gzip", "lz4"), True),  # requested values must be a subset
            (("gzip", "lz4"), ("gzip", "lz4"), True),
            (("gzip", "zstd"), ("gzip", "lz4"), False),
            (("v2",), "v2", True),
            (("v2",), "v1", False),
            (("true",), True, True),
            (("v1",), None, False),
        ],
    )
    def test_satisfied_by(
        self,
        request_value: bool | tuple[str, ...],
        actual: bool | str | tuple[str, ...] | None,
        ok: bool,
    ) -> None:
        assert VariantRequest(name="x", value=request_value).satisfied_by(actual) is ok

    @pytest.mark.parametrize(
        ("value", "text"), [(True, "+x"), (False, "~x"), (("a", "b"), "x=a,b")]
    )
    def test_describe(self, value: bool | tuple[str, ...], text: str) -> None:
        assert VariantRequest(name="x", value=value).describe() == text


class TestSeveralHashes:
    def test_each_hash_is_its_own_request(self) -> None:
        reqs = parse_requests(["/vwaicymp67emhvtu53ght22dv5pm6y2b", "/ybmvd3uhpbh7s2m"])
        assert [r.hash_prefix for r in reqs] == [
            "vwaicymp67emhvtu53ght22dv5pm6y2b",
            "ybmvd3uhpbh7s2m",
        ]

    def test_name_then_hash_is_one_request(self) -> None:
        (req,) = parse_requests(["demo-tool", "/vwaicym"])
        assert (req.name, req.hash_prefix) == ("demo-tool", "vwaicym")
