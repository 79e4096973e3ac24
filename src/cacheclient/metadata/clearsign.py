"""The OpenPGP cleartext signature framework (RFC 4880 §7), as gpg ``--clearsign`` writes it.

Spack signs v2 spec files and v3 spec manifests this way. This module only *parses* the
wrapper (verification is :mod:`cacheclient.trust`'s job)::

    -----BEGIN PGP SIGNED MESSAGE-----
    Hash: SHA512                      <- one or more, values may be comma-separated

    <dash-escaped text: a line starting with "-" is written as "- -...">
    -----BEGIN PGP SIGNATURE-----
    ...
    -----END PGP SIGNATURE-----

Lines may end in LF or CRLF. The line ending just before ``-----BEGIN PGP SIGNATURE-----``
belongs to the framing, not to the payload.
"""

from __future__ import annotations

from dataclasses import dataclass

from cacheclient.errors import MetadataError

__all__ = [
    "BEGIN_MESSAGE",
    "BEGIN_SIGNATURE",
    "END_SIGNATURE",
    "ClearSigned",
    "is_clearsigned",
    "split_clearsigned",
]


def __dir__() -> list[str]:
    return __all__


BEGIN_MESSAGE = "-----BEGIN PGP SIGNED MESSAGE-----"
BEGIN_SIGNATURE = "-----BEGIN PGP SIGNATURE-----"
END_SIGNATURE = "-----END PGP SIGNATURE-----"


@dataclass(frozen=True, kw_only=True, slots=True)
class ClearSigned:
    """A parsed clear-signed message.

    ``payload`` is the signed text with dash-escapes removed and LF line endings;
    ``hashes`` the digest names from the ``Hash:`` headers (e.g. ``("SHA512",)``);
    ``signature`` the ASCII-armoured signature block, armour lines included.
    """

    payload: str
    hashes: tuple[str, ...]
    signature: str


def is_clearsigned(text: str) -> bool:
    """Whether *text* starts (after leading whitespace) with the cleartext armour header."""
    return text.lstrip("\ufeff \t\r\n").startswith(BEGIN_MESSAGE)


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def split_clearsigned(text: str, source: str) -> ClearSigned:
    """Split a clear-signed message into payload, hash names and signature.

    >>> msg = ("-----BEGIN PGP SIGNED MESSAGE-----\\nHash: SHA256\\n\\n- -x\\n{}\\n"
    ...        "-----BEGIN PGP SIGNATURE-----\\n\\nabc\\n-----END PGP SIGNATURE-----\\n")
    >>> split_clearsigned(msg, "m").payload
    '-x\\n{}'

    :raises MetadataError: when the framing is malformed (names *source*).
    """
    lines = _lines(text.lstrip("\ufeff \t\r\n"))
    if not lines or lines[0].rstrip() != BEGIN_MESSAGE:
        raise MetadataError(source, "", f"not a clear-signed message (no {BEGIN_MESSAGE!r})")
    i = 1
    hashes: list[str] = []
    while i < len(lines) and lines[i].strip():
        key, sep, value = lines[i].partition(":")
        if not sep or key.strip() != "Hash":
            raise MetadataError(
                source, f"line {i + 1}", f"unexpected armour header {lines[i][:60]!r}"
            )
        names = [v.strip() for v in value.split(",")]
        if not all(names):
            raise MetadataError(source, f"line {i + 1}", "empty Hash: header value")
        hashes.extend(names)
        i += 1
    if i >= len(lines):
        raise MetadataError(source, "", "clear-signed message ends inside its headers")
    i += 1  # the blank line after the headers
    body: list[str] = []
    while True:
        if i >= len(lines):
            raise MetadataError(source, "", f"clear-signed message has no {BEGIN_SIGNATURE!r}")
        line = lines[i]
        if line.rstrip() == BEGIN_SIGNATURE:
            break
        if line.startswith("- "):
            line = line[2:]
        elif line.startswith("-----"):
            raise MetadataError(
                source, f"line {i + 1}", f"unexpected armour line {line[:60]!r} in signed text"
            )
        body.append(line)
        i += 1
    sig_start = i
    while i < len(lines) and lines[i].rstrip() != END_SIGNATURE:
        i += 1
    if i >= len(lines):
        raise MetadataError(source, "", f"signature block has no {END_SIGNATURE!r}")
    if any(rest.strip() for rest in lines[i + 1 :]):
        raise MetadataError(source, f"line {i + 2}", "text after the end of the signature")
    if not hashes:
        hashes.append("MD5")  # RFC 4880: no Hash header means MD5
    return ClearSigned(
        payload="\n".join(body),
        hashes=tuple(hashes),
        signature="\n".join(lines[sig_start : i + 1]) + "\n",
    )
