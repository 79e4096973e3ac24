"""OpenPGP trust with real gpgv/gpg: the fixture mirrors' real signatures and throwaway keys."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cacheclient.errors import MetadataError, UsageError, VerificationError
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.metadata.specfile import read_specfile
from cacheclient.trust import TrustStore, fetch_mirror_keys
from gpgtools import GpgKey
from paths import SPACK_V3_KEY, SPACK_V3_SIGNED, SPACK_V3_UNSIGNED, V2_MIRRORS

V3_FPR = "DB2679D9E5CB03ADB239ACC6789B96D6B931B1D5"
V2_FPR = "CBAB2C1032C6FF5078049EC0FA61D50C12CAD37E"
V2_KEY = V2_MIRRORS / "signed" / "build_cache" / "_pgp" / f"{V2_FPR}.pub"
V3_MANIFESTS = sorted(
    (SPACK_V3_SIGNED / "v3" / "manifests" / "spec").glob("*/*.spec.manifest.json")
)
V2_SIGNED = sorted((V2_MIRRORS / "signed" / "build_cache").glob("*.spec.json.sig"))


@pytest.fixture
def trust(tmp_path: Path) -> TrustStore:
    return TrustStore(tmp_path / "trust")


class TestFixtureSignatures:
    def test_fixture_sets_are_not_empty(self) -> None:
        assert len(V3_MANIFESTS) == 18
        assert len(V2_SIGNED) >= 3

    @pytest.mark.parametrize("path", V3_MANIFESTS, ids=lambda p: p.name[:40])
    def test_v3_manifest_fails_untrusted_then_verifies(self, trust: TrustStore, path: Path) -> None:
        text = path.read_text()
        with pytest.raises(VerificationError, match=r"789B96D6B931B1D5.*not trusted"):
            trust.verify_clearsigned(text, str(path))
        trust.trust(str(SPACK_V3_KEY))
        payload, signer = trust.verify_clearsigned(text, str(path))
        assert signer == V3_FPR
        manifest = parse_manifest(payload, str(path))
        assert manifest.tarball is not None
        assert manifest.spec_blob is not None
        assert not payload.startswith(b"-----BEGIN")

    @pytest.mark.parametrize("path", V2_SIGNED, ids=lambda p: p.name[-50:])
    def test_v2_specfile_verifies_with_published_key(self, trust: TrustStore, path: Path) -> None:
        text = path.read_text()
        with pytest.raises(VerificationError, match="FA61D50C12CAD37E"):
            trust.verify_clearsigned(text, str(path))
        trust.trust(str(V2_KEY))
        payload, signer = trust.verify_clearsigned(text, str(path))
        assert signer == V2_FPR
        spec = read_specfile(payload, str(path))
        assert spec.root.hash in path.name
        assert spec.tarball_sha256 is not None

    def test_other_key_is_not_enough(self, trust: TrustStore) -> None:
        trust.trust(str(V2_KEY))
        with pytest.raises(VerificationError, match="789B96D6B931B1D5"):
            trust.verify_clearsigned(V3_MANIFESTS[0].read_text(), "m")

    def test_old_signature_by_an_unpublished_key_names_the_key(self, trust: TrustStore) -> None:
        path = next((V2_MIRRORS.parent / "signed_json").glob("*.spec.json.sig"))
        trust.trust(str(V2_KEY))
        trust.trust(str(SPACK_V3_KEY))
        with pytest.raises(VerificationError, match="4344E0F76500AF9D") as info:
            trust.verify_clearsigned(path.read_text(), str(path))
        assert path.name in str(info.value)

    def test_unsigned_manifest_is_refused(self, trust: TrustStore) -> None:
        trust.trust(str(SPACK_V3_KEY))
        unsigned = next((SPACK_V3_UNSIGNED / "v3" / "manifests" / "spec").glob("*/*.json"))
        with pytest.raises(VerificationError, match="not signed"):
            trust.verify_clearsigned(unsigned.read_bytes(), str(unsigned))

    @pytest.mark.parametrize(
        ("old", "new"),
        [('"version":3', '"version":4'), ('"contentLength":', '"contentLength": ')],
    )
    def test_tampered_payload_is_a_bad_signature(
        self, trust: TrustStore, old: str, new: str
    ) -> None:
        trust.trust(str(SPACK_V3_KEY))
        text = V3_MANIFESTS[0].read_text()
        assert old in text
        with pytest.raises(VerificationError, match="BAD signature") as info:
            trust.verify_clearsigned(text.replace(old, new, 1), "https://m/x.json")
        assert info.value.exit_code == 4
        assert info.value.url == "https://m/x.json"


class TestKeyLifecycle:
    def test_expired_key_is_refused(
        self, trust: TrustStore, gpg_key_factory: Callable[..., GpgKey]
    ) -> None:
        key = gpg_key_factory(expire="1d", faked_system_time="20200101T000000")
        signed = key.clearsign('{"a": 1}\n', faked_system_time="20200101T000100")
        trust.trust(str(key.export_public(trust.directory.parent / "k.asc")))
        with pytest.raises(VerificationError, match="expired"):
            trust.verify_clearsigned(signed, "expired.json")

    def test_revoked_key_is_refused(
        self, trust: TrustStore, gpg_key_factory: Callable[..., GpgKey], tmp_path: Path
    ) -> None:
        key = gpg_key_factory()
        signed = key.clearsign('{"a": 1}\n')
        trust.trust(str(key.export_public(tmp_path / "good.asc")))
        assert trust.verify_clearsigned(signed, "x")[1] == key.fingerprint
        key.revoke()
        trust.trust(str(key.export_public(tmp_path / "revoked.asc")))
        with pytest.raises(VerificationError, match="revoked"):
            trust.verify_clearsigned(signed, "revoked.json")
        assert trust.trusted_keys()[0].revoked

    def test_payload_comes_from_the_verifier_with_dash_escapes_undone(
        self, trust: TrustStore, gpg_key: GpgKey, tmp_path: Path
    ) -> None:
        text = '{\n"a": "x"\n}\n-- trailing dashes\n- one\n'
        signed = gpg_key.clearsign(text)
        assert "- -- trailing" in signed
        trust.trust(str(gpg_key.export_public(tmp_path / "k.asc")))
        payload, signer = trust.verify_clearsigned(signed, "doc")
        assert signer == gpg_key.fingerprint
        assert payload.decode().rstrip("\n") == text.rstrip("\n")

    def test_untrust_by_key_id_and_unknown_key(self, trust: TrustStore) -> None:
        trust.trust(str(SPACK_V3_KEY))
        assert [k.fingerprint for k in trust.trusted_keys()] == [V3_FPR]
        removed = trust.untrust(V3_FPR[-16:].lower())
        assert removed.fingerprint == V3_FPR
        assert trust.trusted_keys() == []
        with pytest.raises(VerificationError, match="not trusted"):
            trust.verify_clearsigned(V3_MANIFESTS[0].read_text(), "m")
        with pytest.raises(UsageError, match="not trusted"):
            trust.untrust(V3_FPR)

    def test_trust_by_fingerprint_needs_a_fetched_key(self, trust: TrustStore) -> None:
        with pytest.raises(UsageError, match="keys fetch"):
            trust.trust(V3_FPR)

    def test_trust_rejects_a_file_without_keys(self, trust: TrustStore, tmp_path: Path) -> None:
        bogus = tmp_path / "not-a-key.asc"
        bogus.write_text("hello\n")
        with pytest.raises(UsageError, match=r"not-a-key\.asc"):
            trust.trust(str(bogus))
        with pytest.raises(UsageError, match="cannot read"):
            trust.trust(str(tmp_path / "missing.asc"))

    def test_users_gnupg_home_is_never_touched(
        self, trust: TrustStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        home = tmp_path / "user-gnupg"
        home.mkdir(mode=0o700)
        monkeypatch.setenv("GNUPGHOME", str(home))
        trust.trust(str(SPACK_V3_KEY))
        trust.verify_clearsigned(V3_MANIFESTS[0].read_text(), "m")
        assert list(home.iterdir()) == []
        assert (trust.directory / "trusted.gpg").stat().st_size > 0


class TestMirrorKeys:
    @pytest.mark.parametrize(
        ("mirror", "fpr"), [(SPACK_V3_SIGNED, V3_FPR), (V2_MIRRORS / "signed", V2_FPR)]
    )
    def test_fetched_keys_are_shown_but_not_trusted(
        self, trust: TrustStore, mirror: Path, fpr: str
    ) -> None:
        keys = fetch_mirror_keys(str(mirror), trust)
        assert [k.fingerprint for k in keys] == [fpr]
        assert trust.trusted_keys() == []
        assert [k.fingerprint for k in trust.fetched_keys()] == [fpr]
        assert not trust.is_trusted(fpr)
        trust.trust(fpr)
        assert trust.is_trusted(fpr)

    def test_mirror_without_keys(self, trust: TrustStore) -> None:
        with pytest.raises(MetadataError, match="publishes no keys"):
            fetch_mirror_keys(str(V2_MIRRORS / "unsigned"), trust)

    def test_key_blob_checksum_is_checked(self, trust: TrustStore, tmp_path: Path) -> None:
        files: dict[str, bytes] = {}
        base = SPACK_V3_SIGNED
        for path in (base / "v3" / "manifests" / "key").iterdir():
            files[str(path.relative_to(base))] = path.read_bytes()
        index = json.loads(files["v3/manifests/key/keys.manifest.json"])
        digest = index["data"][0]["checksum"]

        def read(rel: str) -> bytes | None:
            if rel in files:
                return files[rel]
            if rel.endswith(digest):
                return b'{"keys": {"' + V3_FPR.encode() + b'": {}}} '
            target = base / rel
            return target.read_bytes() if target.is_file() else None

        with pytest.raises(VerificationError, match="does not match"):
            fetch_mirror_keys("https://mirror.invalid", trust, read)
        assert not os.path.exists(trust.directory / "fetched")
