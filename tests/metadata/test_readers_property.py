"""Property tests: no reader raises anything but MetadataError on mutated real files.

Mutations: byte flips, truncation, inserted bytes, and JSON-level key deletion and type swaps.
Index blobs opened through :func:`open_catalog` may also raise VerificationError (checksum).
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cacheclient.errors import MetadataError, VerificationError
from cacheclient.metadata.clearsign import split_clearsigned
from cacheclient.metadata.database import parse_database
from cacheclient.metadata.layout import INDEX_V3
from cacheclient.metadata.manifest import parse_manifest
from cacheclient.metadata.page import read_page
from cacheclient.metadata.specfile import read_specfile
from cacheclient.mirrors.open import open_catalog
from paths import REALDATA, SEED_PAGE, SPACK_V3_SIGNED, SPACK_V3_UNSIGNED, V2_MIRRORS

SETTINGS = settings(
    max_examples=60,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

V3_INDEX_BLOB = "blobs/sha256/40/4075443c79bc36c23b7cc05ba002af7e4153e3a7245822909c655cc7d21d82d8"


def _files(paths: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in sorted(paths)]


MANIFESTS = _files(list((SPACK_V3_SIGNED / "v3/manifests/spec").rglob("*.json"))[:4])
MANIFESTS += _files([SPACK_V3_UNSIGNED / INDEX_V3])
SPECFILES = _files(list(V2_MIRRORS.rglob("*.spec.json*"))[:6])
SPECFILES += _files(list((REALDATA / "spack-test-mirrors/signed_json").iterdir()))
SPEC_BLOBS = [
    (SPACK_V3_UNSIGNED / f"blobs/sha256/{c[:2]}/{c}").read_bytes()
    for c in (
        "0ee2eca629943f1750bf6589bda94d1c4dedfccd5d83c06c6e3443c77726d5db",
        "087cd58052e6466c26281373a600681db86c6a2eafa562fa87db25681525d751",
    )
]
INDEXES = _files([V2_MIRRORS / "signed/build_cache/index.json", SPACK_V3_UNSIGNED / V3_INDEX_BLOB])
PAGE = SEED_PAGE.read_bytes()

JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.just([]),
    st.just({}),
    st.lists(st.text(max_size=5), max_size=3),
    st.just("a" * 32),
)


@st.composite
def byte_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
    if not data:
        return data
    pos = draw(st.integers(min_value=0, max_value=len(data) - 1))
    if kind == "flip":
        value = draw(st.integers(min_value=1, max_value=255))
        return data[:pos] + bytes([data[pos] ^ value]) + data[pos + 1 :]
    if kind == "truncate":
        return data[:pos]
    if kind == "insert":
        return data[:pos] + draw(st.binary(min_size=1, max_size=8)) + data[pos:]
    end = draw(st.integers(min_value=pos, max_value=min(len(data), pos + 64)))
    return data[:pos] + data[end:]


def _containers(obj: Any, out: list[Any]) -> list[Any]:
    if isinstance(obj, (dict, list)):
        out.append(obj)
        for value in obj.values() if isinstance(obj, dict) else obj:
            _containers(value, out)
    return out


@st.composite
def json_mutation(draw: st.DrawFn, obj: Any) -> Any:
    obj = copy.deepcopy(obj)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        containers = _containers(obj, [])
        if not containers:
            return draw(JSON_VALUES)
        target = containers[draw(st.integers(min_value=0, max_value=len(containers) - 1))]
        if not target:
            continue
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        key = keys[draw(st.integers(min_value=0, max_value=len(keys) - 1))]
        if draw(st.booleans()):
            del target[key]
        else:
            target[key] = draw(JSON_VALUES)
    return obj


def _only_metadata_errors(func: Callable[[], object], *, verification: bool = False) -> None:
    allowed: tuple[type[Exception], ...] = (MetadataError,)
    if verification:
        allowed = (MetadataError, VerificationError)
    message = None
    try:
        func()
    except allowed as exc:
        message = str(exc)
    if message is not None:
        assert message
        assert "\n" not in message


def _consume_catalog(data: bytes | str) -> None:
    catalog = parse_database(data, "idx")
    for record in catalog:
        record.to_dict()


class TestByteMutations:
    @SETTINGS
    @given(data=st.data())
    def test_manifest(self, data: st.DataObject) -> None:
        raw = data.draw(byte_mutation(data.draw(st.sampled_from(MANIFESTS))))
        _only_metadata_errors(lambda: parse_manifest(raw, "m"))

    @SETTINGS
    @given(data=st.data())
    def test_specfile(self, data: st.DataObject) -> None:
        raw = data.draw(byte_mutation(data.draw(st.sampled_from(SPECFILES + SPEC_BLOBS))))
        _only_metadata_errors(lambda: read_specfile(raw, "s"))

    @SETTINGS
    @given(data=st.data())
    def test_clearsign(self, data: st.DataObject) -> None:
        raw = data.draw(byte_mutation(MANIFESTS[0]))
        text = raw.decode("utf-8", errors="replace")
        _only_metadata_errors(lambda: split_clearsigned(text, "c"))

    @SETTINGS
    @given(data=st.data())
    def test_index(self, data: st.DataObject) -> None:
        raw = data.draw(byte_mutation(data.draw(st.sampled_from(INDEXES))))
        _only_metadata_errors(lambda: _consume_catalog(raw))

    @SETTINGS
    @given(data=st.data())
    def test_page(self, data: st.DataObject) -> None:
        raw = data.draw(byte_mutation(PAGE))
        text = raw.decode("utf-8", errors="replace")
        _only_metadata_errors(lambda: list(read_page(text, "p")))

    @SETTINGS
    @given(data=st.data())
    def test_open_catalog_with_mutated_index(self, data: st.DataObject) -> None:
        files = {
            INDEX_V3: (SPACK_V3_UNSIGNED / INDEX_V3).read_bytes(),
            V3_INDEX_BLOB: (SPACK_V3_UNSIGNED / V3_INDEX_BLOB).read_bytes(),
        }
        which = data.draw(st.sampled_from(sorted(files)))
        files[which] = data.draw(byte_mutation(files[which]))

        def consume() -> None:
            for record in open_catalog("mem://m", files.get):
                record.to_dict()

        _only_metadata_errors(consume, verification=True)


class TestJsonMutations:
    @SETTINGS
    @given(data=st.data())
    def test_index(self, data: st.DataObject) -> None:
        doc = json.loads(data.draw(st.sampled_from(INDEXES)))
        mutated = data.draw(json_mutation(doc))
        _only_metadata_errors(lambda: _consume_catalog(json.dumps(mutated)))

    @SETTINGS
    @given(data=st.data())
    def test_specfile(self, data: st.DataObject) -> None:
        sources = [gzip.decompress(b) for b in SPEC_BLOBS] + SPECFILES[:2]
        doc = json.loads(split_payload(data.draw(st.sampled_from(sources))))
        mutated = data.draw(json_mutation(doc))
        _only_metadata_errors(lambda: read_specfile(json.dumps(mutated), "s"))

    @SETTINGS
    @given(data=st.data())
    def test_manifest(self, data: st.DataObject) -> None:
        doc = json.loads(split_payload(data.draw(st.sampled_from(MANIFESTS))))
        mutated = data.draw(json_mutation(doc))
        _only_metadata_errors(lambda: parse_manifest(json.dumps(mutated), "m"))

    @SETTINGS
    @given(data=st.data())
    def test_page(self, data: st.DataObject) -> None:
        text = PAGE.decode()
        lines = text.splitlines()
        meta = json.loads(lines[4].removeprefix("meta: "))
        details = json.loads(lines[5].removeprefix("spec_details: "))
        doc = data.draw(json_mutation({"meta": meta, "spec_details": details}))
        page = "\n".join(
            [*lines[:4], *(f"{k}: {json.dumps(v)}" for k, v in doc.items()), "---", ""]
        )
        _only_metadata_errors(lambda: list(read_page(page, "p")))


def split_payload(raw: bytes) -> str:
    text = raw.decode()
    if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return split_clearsigned(text, "x").payload
    return text
