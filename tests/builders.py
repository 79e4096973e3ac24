"""Small builders several test modules share: a store that trusts a key, the blobs it holds, a
probe that runs a resolve in a fresh interpreter, a counter of index parses, the bench's
synthetic index."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cacheclient.metadata import database, database_fast
from cacheclient.store import Store
from cacheclient.trust import TrustStore
from paths import REPO_ROOT, SPACK_V3_KEY


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


RESOLVE_PROBE = (
    "import sys\n"
    "from cacheclient.mirrors import indexcache\n"
    "indexcache.STORED_INDEX_ABOVE = 0\n"
    "from cacheclient.cli.main import main\n"
    "code = main(['resolve', 'demo-zlib', '--mirror', sys.argv[1], '--platform', 'linux',"
    " '--os', 'debian12', '--target', 'x86_64_v4', '--store', sys.argv[2]])\n"
    "print(code, 'requests' in sys.modules)\n"
)
"""``python -c RESOLVE_PROBE MIRROR STORE``: resolves ``demo-zlib`` of the v3 fixture with the
index always kept parsed, and prints the exit code and whether ``requests`` was imported."""


class Parses:
    """Counts every JSON read of an index: the full reader (``database.load_json``) and the
    fast one (``database_fast.read_records``, which the parsed index imports when it builds)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for module, name in ((database, "load_json"), (database_fast, "read_records")):
            real = getattr(module, name)
            monkeypatch.setattr(module, name, self._counted(real))

    def _counted(self, real: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            self.count += 1
            return real(*args, **kwargs)

        return wrapper


def synthetic_index(records: int, seed: int) -> dict[str, Any]:
    """The Database JSON document ``bench/index_gen.py`` generates (records shaped like real
    ones), as the benchmarks use it."""
    spec = importlib.util.spec_from_file_location("index_gen", REPO_ROOT / "bench/index_gen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc: dict[str, Any] = module.generate(records, seed=seed)
    return doc
