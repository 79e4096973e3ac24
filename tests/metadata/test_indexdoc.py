"""Index documents in the form their database version allows; OpenPGP armour of public keys."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from cacheclient.errors import MetadataError
from cacheclient.metadata.armor import armor_public_key, crc24
from cacheclient.metadata.clearsign import split_clearsigned
from cacheclient.metadata.indexdoc import (
    IndexedSpec,
    db_version_for,
    index_document,
    indexed_spec,
    node_for_db,
)
from gpgtools import GPG
from paths import SPACK_V3_KEY, V2_MIRRORS

V2 = V2_MIRRORS / "signed" / "build_cache"
CORE2_LIBDWARF = V2 / (
    "test-debian6-core2-gcc-10.2.1-libdwarf-20130729-sk2gqqz4n5njmvktycnd25wq25jxiqkr.spec.json.sig"
)
M1_LIBDWARF = V2 / (
    "test-debian6-m1-gcc-10.2.1-libdwarf-20130729-u5uz3dcch5if4eve4sef67o2rf2lbfgh.spec.json.sig"
)


def _spec(path: Path) -> IndexedSpec:
    return indexed_spec(path.read_bytes(), str(path))


def _installs(doc: bytes) -> dict[str, dict[str, object]]:
    return json.loads(doc)["database"]["installs"]  # type: ignore[no-any-return]


class TestForms:
    def test_format4_specs_alone_stay_at_db7_with_their_compiler(self) -> None:
        spec = _spec(CORE2_LIBDWARF)
        assert spec.format_version == 4
        version, doc = index_document([spec], {spec.root_hash})
        assert version == "7"
        installs = _installs(doc)
        assert set(installs) == {
            "sk2gqqz4n5njmvktycnd25wq25jxiqkr",
            "rqh2vuf6fqwkmipzgi2wjx352mq7y7ez",
        }
        node = installs["sk2gqqz4n5njmvktycnd25wq25jxiqkr"]["spec"]
        assert node["compiler"] == {"name": "gcc", "version": "10.2.1"}  # type: ignore[index]

    def test_one_format5_spec_lifts_the_index_to_db8_and_rewrites_old_nodes(self) -> None:
        old, new = _spec(CORE2_LIBDWARF), _spec(M1_LIBDWARF)
        version, doc = index_document([old, new], {old.root_hash, new.root_hash})
        assert version == "8"
        installs = _installs(doc)
        assert not [h for h, r in installs.items() if "compiler" in r["spec"]]  # type: ignore[operator]
        node = installs["sk2gqqz4n5njmvktycnd25wq25jxiqkr"]["spec"]
        # The form Spack 1.x itself gives such nodes (its own v2 fixture index shows it).
        fixture = json.loads((V2 / "index.json").read_text())["database"]["installs"]
        assert node == fixture["sk2gqqz4n5njmvktycnd25wq25jxiqkr"]["spec"]

    def test_in_buildcache_and_ref_count(self) -> None:
        spec = _spec(M1_LIBDWARF)
        _, doc = index_document([spec], {spec.root_hash})
        installs = _installs(doc)
        assert [h for h, r in installs.items() if r["in_buildcache"]] == [spec.root_hash]
        assert installs[spec.root_hash]["ref_count"] == 0
        assert installs["jr3yipyxyjulcdvckwwwjrrumis7glpa"]["ref_count"] == 1  # libelf
        assert db_version_for([]) == "8"

    def test_format3_edges_are_respelled(self) -> None:
        node = {"name": "a", "hash": "a" * 32, "dependencies": [{"name": "b", "hash": "b" * 32,
                "type": ["build", "link"]}]}  # fmt: skip
        out = node_for_db(node, 3, "7")
        assert out["dependencies"] == [
            {"name": "b", "hash": "b" * 32, "parameters": {"deptypes": ["build", "link"],
             "virtuals": []}}
        ]  # fmt: skip
        assert node_for_db(node, 3, "6") == node

    def test_unknown_version_is_refused(self) -> None:
        with pytest.raises(ValueError, match="database version"):
            node_for_db({"hash": "a" * 32}, 5, "9")

    @pytest.mark.parametrize(
        "data",
        [b"{}", b'{"spec": {"_meta": {"version": 9}, "nodes": []}}', b"\x1f\x8bnot gzip", b"[1]"],
    )
    def test_bad_spec_documents(self, data: bytes) -> None:
        with pytest.raises(MetadataError):
            indexed_spec(data, "x.spec.json")

    def test_clearsigned_spec_files_are_read(self) -> None:
        text = CORE2_LIBDWARF.read_text()
        plain = split_clearsigned(text, "x").payload.encode()
        assert indexed_spec(plain, "x") == _spec(CORE2_LIBDWARF)


class TestArmor:
    def test_matches_what_gpg_dearmors(self, tmp_path: Path) -> None:
        binary = subprocess.run(
            [GPG, "--batch", "--dearmor"],
            input=SPACK_V3_KEY.read_bytes(),
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        armored = armor_public_key(binary)
        again = subprocess.run(
            [GPG, "--batch", "--dearmor"],
            input=armored.encode(),
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        assert again == binary
        assert re.search(r"^=[A-Za-z0-9+/]{4}$", armored, re.MULTILINE)
        assert armor_public_key(SPACK_V3_KEY.read_bytes()) == SPACK_V3_KEY.read_text()

    def test_crc24_known_value(self) -> None:
        assert crc24(b"") == 0xB704CE
        assert crc24(b"123456789") == 0x21CF02  # the CRC-24/OPENPGP check value
