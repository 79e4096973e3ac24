"""Item 4 (T1): what mirrors send is bounded: size, time, encoding, ranges, text."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

from paths import SPACK_V3_SIGNED
from security.sectools import EXPECTED, TOOL_HASH, Sandbox, expect_error
from servers import Fault, FaultServer

MakeFaultServer = Callable[..., FaultServer]
TOOL_SPEC = next(s for s in EXPECTED["specs"] if s["dag_hash"] == TOOL_HASH)
MANIFEST = "/" + str(TOOL_SPEC["spec_manifest"]["path"])
TARBALL = "/" + str(TOOL_SPEC["tarball"]["path"])


@pytest.fixture
def faulty(tmp_path: Path, fault_server: MakeFaultServer) -> tuple[Sandbox, FaultServer]:
    server = fault_server(SPACK_V3_SIGNED)
    box = Sandbox(tmp_path, server.url)
    box.trust()
    return box, server


class TestBoundedMetadata:
    def test_a_trickling_server_does_not_hold_the_run(
        self, faulty: tuple[Sandbox, FaultServer]
    ) -> None:
        box, server = faulty
        server.inject(Fault(kind="trickle", path=MANIFEST, stall_seconds=0.5))
        result = box.cli(
            "fetch", "demo-tool@1.0.0", "--mirror", box.mirror, "--platform", "linux",
            "--os", "debian12", "--target", "x86_64_v4", "--store", str(box.store),
            env={"CACHECLIENT_DEADLINE": "2"},
        )  # fmt: skip
        expect_error(result, 5, MANIFEST.rsplit("/", 1)[1], "within 2s")
        server.clear_faults()
        assert box.fetch().code == 0
        box.finish()

    def test_an_oversized_manifest_is_refused(self, faulty: tuple[Sandbox, FaultServer]) -> None:
        box, server = faulty
        server.inject(Fault(kind="replace", path=MANIFEST, body=b"{" * (17 << 20)))
        expect_error(box.fetch(), 7, "exceeds the 16777216-byte cap")
        server.clear_faults()
        assert box.fetch().code == 0
        box.finish()

    def test_content_encoding_is_never_decoded(self, faulty: tuple[Sandbox, FaultServer]) -> None:
        box, server = faulty
        bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
        server.inject(Fault(kind="encoded", path=MANIFEST, body=bomb))
        expect_error(box.fetch(), 4, MANIFEST.rsplit("/", 1)[1], "not signed")
        assert all(r.headers.get("accept-encoding") == "identity" for r in server.requests())
        server.clear_faults()
        assert box.fetch().code == 0
        box.finish()

    def test_an_unasked_206_never_loops(self, faulty: tuple[Sandbox, FaultServer]) -> None:
        box, server = faulty
        server.inject(Fault(kind="bad_range", path=TARBALL, after_bytes=100))
        expect_error(box.fetch(), 5, "206")
        assert server.count(TARBALL) <= 10
        server.clear_faults()
        assert box.fetch().code == 0
        box.finish()

    def test_server_text_reaches_the_terminal_without_control_characters(
        self, faulty: tuple[Sandbox, FaultServer]
    ) -> None:
        box, server = faulty
        server.inject(
            Fault(kind="reason", path=MANIFEST, status=403, body=b"\x1b[2J\x1b]0;pwned\x07")
        )
        result = box.fetch()
        line = expect_error(result, 5, "HTTP 403", "\\x1b")
        assert "\x1b" not in result.err, line
        assert "\x07" not in result.err, line
        server.clear_faults()
        assert box.fetch().code == 0
        box.finish()
