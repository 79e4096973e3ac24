"""Tests for the RFC 4880 cleartext wrapper parser."""

from __future__ import annotations

import pytest

from cacheclient.errors import MetadataError
from cacheclient.metadata.clearsign import is_clearsigned, split_clearsigned
from gpgtools import GpgKey
from paths import SPACK_V3_SIGNED, V2_MIRRORS

SIG = "-----BEGIN PGP SIGNATURE-----\n\niQEz\n=abcd\n-----END PGP SIGNATURE-----\n"


def _msg(body: str, headers: str = "Hash: SHA512\n", eol: str = "\n") -> str:
    text = f"-----BEGIN PGP SIGNED MESSAGE-----\n{headers}\n{body}\n{SIG}"
    return text.replace("\n", eol)


class TestSplitClearsigned:
    def test_real_v3_manifest(self) -> None:
        path = next((SPACK_V3_SIGNED / "v3/manifests/spec/demo-zlib").iterdir())
        parsed = split_clearsigned(path.read_text(), str(path))
        assert parsed.hashes == ("SHA512",)
        assert parsed.payload.startswith('{\n"version":3,')
        assert parsed.payload.endswith("]\n}")
        assert parsed.signature.startswith("-----BEGIN PGP SIGNATURE-----")
        assert parsed.signature.rstrip().endswith("-----END PGP SIGNATURE-----")

    def test_real_v2_specfile(self) -> None:
        path = next((V2_MIRRORS / "signed/build_cache").glob("*.spec.json.sig"))
        parsed = split_clearsigned(path.read_text(), str(path))
        assert parsed.payload.startswith("{")
        assert parsed.payload.endswith("}")

    def test_dash_escaped_lines_are_unescaped(self) -> None:
        parsed = split_clearsigned(_msg("- -----not armour\n- - x\n-y\nplain"), "m")
        assert parsed.payload == "-----not armour\n- x\n-y\nplain"

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ("Hash: SHA256\nHash: SHA512\n", ("SHA256", "SHA512")),
            ("Hash: SHA256, SHA512\n", ("SHA256", "SHA512")),
            ("Hash: SHA1,SHA256\nHash: SHA512\n", ("SHA1", "SHA256", "SHA512")),
            ("", ("MD5",)),
        ],
    )
    def test_hash_headers(self, headers: str, expected: tuple[str, ...]) -> None:
        assert split_clearsigned(_msg("{}", headers), "m").hashes == expected

    def test_crlf_line_endings(self) -> None:
        parsed = split_clearsigned(_msg('{\n"a": 1\n}', eol="\r\n"), "m")
        assert parsed.payload == '{\n"a": 1\n}'

    def test_final_newline_belongs_to_framing(self) -> None:
        assert split_clearsigned(_msg("line\n"), "m").payload == "line\n"
        assert split_clearsigned(_msg("line"), "m").payload == "line"

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("{}", "not a clear-signed message"),
            ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{}\n", "no '-----BEGIN PGP SIG"),
            (_msg("{}").replace("-----END PGP SIGNATURE-----\n", ""), "has no '-----END"),
            (_msg("{}", "Comment: hi\n"), "unexpected armour header"),
            (_msg("{}", "Hash:\n"), "empty Hash"),
            (_msg("-----BEGIN PGP MESSAGE-----"), "unexpected armour line"),
            (_msg("{}") + "trailing junk\n", "text after the end"),
            ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512", "ends inside its headers"),
        ],
    )
    def test_malformed(self, text: str, problem: str) -> None:
        with pytest.raises(MetadataError, match=r"^some/file\.sig: ") as info:
            split_clearsigned(text, "some/file.sig")
        assert problem in str(info.value)


class TestIsClearsigned:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [(_msg("{}"), True), ("\n  " + _msg("{}"), True), ('{"a": 1}', False), ("", False)],
    )
    def test_detection(self, text: str, expected: bool) -> None:
        assert is_clearsigned(text) is expected


class TestRealGpg:
    @pytest.mark.parametrize(
        "text",
        [
            '{\n"version":3,\n"data":[]\n}\n',
            "-leading dash\n--- more\n-----BEGIN PGP SIGNATURE-----\nplain\n",
            "no final newline",
        ],
    )
    def test_round_trip_through_gpg(self, gpg_key: GpgKey, text: str) -> None:
        signed = gpg_key.clearsign(text)
        parsed = split_clearsigned(signed, "gpg")
        assert parsed.payload == text.removesuffix("\n")
        assert parsed.hashes == ("SHA512",)
