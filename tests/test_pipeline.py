"""The pipeline's choice of error when the builds of a closure, verified at once, fail in
different ways (pure logic: the fetcher is a stub that returns the outcomes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cacheclient.errors import (
    CacheClientError,
    DownloadError,
    MissingBuildError,
    VerificationError,
)
from cacheclient.model import BuildRecord
from cacheclient.pipeline import Client, Settings
from cacheclient.resolution.resolve import ClosureHole


def _rec(name: str) -> BuildRecord:
    return BuildRecord(
        name=name, version="1", hash=name * 32, platform="linux", os="debian12", target="x86_64"
    )


class _Outcomes:
    """A fetcher whose ``verify_all`` fails each build as told."""

    def __init__(self, errors: dict[str, CacheClientError]) -> None:
        self.errors = errors

    def verify_all(
        self, records: Sequence[BuildRecord]
    ) -> tuple[dict[str, Any], dict[str, CacheClientError]]:
        return {}, {r.hash: self.errors[r.hash] for r in records if r.hash in self.errors}


def _verify(tmp_path: Path, errors: dict[str, CacheClientError]) -> None:
    records = [_rec("a"), _rec("b"), _rec("c")]
    with Client(Settings(store=tmp_path)) as client:
        client._fetcher = _Outcomes(errors)  # type: ignore[assignment]
        client._verify(records, {})


def test_a_bad_signature_is_reported_over_a_mirror_skipped_because_of_it(
    tmp_path: Path,
) -> None:
    # "a" was attempted after the mirror had failed three signatures: skipped, not verified
    skipped = DownloadError("a: every mirror was skipped after repeated failures (m)")
    bad = VerificationError("b: the signature is not from a trusted key")
    with pytest.raises(VerificationError, match="trusted key"):
        _verify(tmp_path, {"a" * 32: skipped, "b" * 32: bad, "c" * 32: bad})


def test_a_missing_first_node_is_a_hole_in_the_closure(tmp_path: Path) -> None:
    missing = MissingBuildError("a: not found on any mirror (m)")
    bad = VerificationError("c: bad signature")
    with pytest.raises(ClosureHole, match="a/aaaaaaa has no binary"):
        _verify(tmp_path, {"a" * 32: missing, "c" * 32: bad})


def test_one_failure_is_raised_as_it_is(tmp_path: Path) -> None:
    skipped = DownloadError("c: every mirror was skipped after repeated failures (m)")
    with pytest.raises(DownloadError, match="skipped"):
        _verify(tmp_path, {"c" * 32: skipped})
