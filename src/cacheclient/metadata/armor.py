"""OpenPGP ASCII armour (RFC 4880 §6) of a binary public key, as ``gpg --armor --export`` writes.

Mirrors publish public keys armoured (``build_cache/_pgp/<FPR>.pub``, the ``application/pgp-keys``
blob of v3). Pure logic: base64 in 64-column lines and the CRC-24 checksum line.
"""

from __future__ import annotations

import base64

__all__ = ["armor_public_key", "crc24"]


def __dir__() -> list[str]:
    return __all__


_CRC24_INIT = 0xB704CE
_CRC24_POLY = 0x1864CFB


def crc24(data: bytes) -> int:
    """The CRC-24 of RFC 4880 §6.1.

    >>> hex(crc24(b""))
    '0xb704ce'
    """
    crc = _CRC24_INIT
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= _CRC24_POLY
    return crc & 0xFFFFFF


def armor_public_key(data: bytes) -> str:
    """*data* (binary OpenPGP packets) as a ``PUBLIC KEY BLOCK``; already armoured text is
    returned unchanged."""
    if data.lstrip().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"):
        return data.decode("ascii")
    body = base64.b64encode(data).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    checksum = base64.b64encode(crc24(data).to_bytes(3, "big")).decode("ascii")
    return "\n".join(
        [
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "",
            *lines,
            f"={checksum}",
            "-----END PGP PUBLIC KEY BLOCK-----",
            "",
        ]
    )
