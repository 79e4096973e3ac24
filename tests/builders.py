"""Small builders several test modules share: a store that trusts a key, the blobs it holds."""

from __future__ import annotations

from pathlib import Path

from cacheclient.store import Store
from cacheclient.trust import TrustStore
from paths import SPACK_V3_KEY


def trust_key(store: Path, key: Path = SPACK_V3_KEY) -> Path:
    """Make the store at *store* trust *key* (the fixture signer by default); returns *store*."""
    opened = Store(store)
    try:
        TrustStore(opened.trust_dir).trust(str(key))
    finally:
        opened.close()
    return store


def blob_files(store: Path) -> list[Path]:
    """Every file under the store's ``blobs/``, sorted."""
    return sorted(p for p in (store / "blobs").rglob("*") if p.is_file())
