"""Item 8 (T1/T2): verified means verified."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from cacheclient.errors import VerificationError
from cacheclient.trust import TrustStore
from gpgtools import GpgKey
from security.sectools import EXPECTED, TOOL_HASH, Sandbox, snapshot

TARBALL = next(s for s in EXPECTED["specs"] if s["dag_hash"] == TOOL_HASH)["tarball"]["sha256"]


def test_a_payload_holding_a_clear_signed_block_is_refused(tmp_path: Path, gpg_key: GpgKey) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "victim.txt").write_text("x\n")
    before = snapshot(sentinel)
    trust = TrustStore(tmp_path / "trust")
    trust.trust(str(gpg_key.export_public(tmp_path / "key.asc")))
    inner = gpg_key.clearsign('{"spec": "inner, never unwrapped"}\n')
    outer = gpg_key.clearsign(f"note: see below\n{inner}")
    assert trust.verify_clearsigned(gpg_key.clearsign('{"ok": 1}\n'), "plain")[0]
    with pytest.raises(VerificationError) as err:
        trust.verify_clearsigned(outer, "nested.json.sig")
    assert err.value.exit_code == 4
    message = str(err.value)
    assert "\n" not in message
    assert "nested.json.sig" in message
    assert "contains a clear-signed block" in message
    assert snapshot(sentinel) == before


def test_gc_never_removes_a_partial_a_live_process_is_writing(box: Sandbox) -> None:
    assert box.fetch().code == 0
    partial = box.store / ".cacheclient" / "partial" / f"{TARBALL}.partial"
    partial.write_bytes(b"half a download")
    os.utime(partial, (1, 1))  # very old
    lock_path = box.store / ".cacheclient" / "locks" / TARBALL[:2] / f"{TARBALL}.dl"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a downloading process holds it
        result = box.cli("gc", "--older-than", "1d", "--store", str(box.store))
        assert result.code == 0, result.err
        assert partial.read_bytes() == b"half a download"
    finally:
        os.close(fd)
    result = box.cli("gc", "--older-than", "1d", "--store", str(box.store))
    assert result.code == 0, result.err
    assert not partial.exists()  # the writer is gone: now it goes
    box.finish()
