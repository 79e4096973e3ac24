"""Item 6 (T1/T4): user:password@ in a mirror URL is never printed and never persisted."""

from __future__ import annotations

from pathlib import Path

import pytest

from cacheclient.errors import redact
from security.sectools import Sandbox, expect_error

SECRET = "s3cr3t-Pa55"  # noqa: S105 - a throwaway test credential


def _files_holding(top: Path, needle: bytes) -> list[str]:
    return [
        str(p)
        for p in top.rglob("*")
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    ]


def test_credentials_are_used_never_printed_or_persisted(box: Sandbox) -> None:
    with_auth = box.mirror.replace("http://", f"http://builder:{SECRET}@")
    box.mirror = with_auth
    fetched = box.fetch()
    assert fetched.code == 0, fetched.err
    assert "***@" in fetched.out  # the mirror is still named, without its password
    result = box.install("--json")
    assert result.code == 0, result.err
    for text in (fetched.out, fetched.err, result.out, result.err):
        assert SECRET not in text
    assert _files_holding(box.store, SECRET.encode()) == []
    assert _files_holding(box.root, SECRET.encode()) == []
    box.finish()


def test_credentials_are_not_in_error_lines(box: Sandbox) -> None:
    box.mirror = f"http://builder:{SECRET}@127.0.0.1:9/"
    result = box.fetch()
    line = expect_error(result, 5, "127.0.0.1:9")
    assert SECRET not in result.err, line
    box.finish()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://me:pw@m.example/c", "https://***@m.example/c"),
        ("oci+https://u@ghcr.io/x and s3://k:s@b/p", "oci+https://***@ghcr.io/x and s3://***@b/p"),
        (
            '{"source": "http://a:b@h:8080/x",\n "at": "v@1"}',
            '{"source": "http://***@h:8080/x",\n "at": "v@1"}',
        ),
        ("no url: me@example.org, gcc@=13.2.0", "no url: me@example.org, gcc@=13.2.0"),
        ("://x@y with no scheme", "://x@y with no scheme"),
        (
            "https://host/path@v1 (the @ is past the authority)",
            "https://host/path@v1 (the @ is past the authority)",
        ),
    ],
)
def test_redact_hides_userinfo_of_every_url(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_redact_keeps_a_large_document_whole() -> None:
    doc = "\n".join(
        f'{{"hash": "{i:032d}", "name": "pkg-{i}", "source": "https://u:p@m/{i}"}}'
        for i in range(5000)
    )
    hidden = redact(doc)
    assert "u:p@" not in hidden
    assert hidden == doc.replace("https://u:p@", "https://***@")
