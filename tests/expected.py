"""The ``*.expected.json`` files beside the Spack-written fixture mirrors, and a check of a
:class:`~cacheclient.model.BuildRecord` against one of their entries."""

from __future__ import annotations

import json
from typing import Any

from cacheclient.model import BuildRecord
from paths import SPACK_V3


def expected_records(kind: str) -> dict[str, dict[str, Any]]:
    data = json.loads((SPACK_V3 / f"{kind}.expected.json").read_text())
    return {s["dag_hash"]: s for s in data["specs"]}


def assert_matches_expected(record: BuildRecord, spec: dict[str, Any]) -> None:
    assert record.name == spec["name"]
    assert record.version == spec["version"]
    assert record.hash == spec["dag_hash"]
    assert (record.platform, record.os, record.target) == (
        spec["platform"],
        spec["os"],
        spec["target"],
    )
    assert record.namespace == spec["namespace"]
    want_variants = {
        k: tuple(sorted(v)) if isinstance(v, list) else v for k, v in spec["variants"].items()
    }
    assert dict(record.variants) == want_variants
    deps = {(d.name, d.hash, tuple(sorted(d.deptypes)), d.virtuals) for d in record.dependencies}
    assert deps == {
        (d["name"], d["dag_hash"], tuple(sorted(d["types"])), tuple(d["virtuals"]))
        for d in spec["dependencies"]
    }
    assert record.compiler is None
