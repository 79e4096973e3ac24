"""The install database of a root: ``<root>/.cacheclient/installed.json``.

One JSON document, ``{"version": 1, "installs": {hash: record}}``, written atomically
(temporary file + ``os.replace``) while holding an exclusive ``fcntl`` lock on
``<root>/.cacheclient/lock``. The installer keeps the lock for a whole run, so concurrent
installers into the same root take turns; the database only lists prefixes that are
complete on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cacheclient import safefs
from cacheclient.errors import StoreError, redact

__all__ = ["DB_DIR", "InstallDB", "InstallRecord", "locked_db", "read_db"]


def __dir__() -> list[str]:
    return __all__


DB_DIR = ".cacheclient"
_DB_FILE = "installed.json"
_LOCK_FILE = "lock"
_VERSION = 1
_DB_LIMIT = 1 << 30


@dataclass(frozen=True, kw_only=True, slots=True)
class InstallRecord:
    """One installed build."""

    hash: str
    name: str
    version: str
    prefix: str
    spec: str
    installed_at: str
    mirror: str | None = None
    tarball_sha256: str | None = None
    signer: str | None = None
    old_prefix: str | None = None
    dependencies: tuple[str, ...] = ()
    verified: Mapping[str, Any] = field(default_factory=dict)
    """What was checked when the prefix was extracted (tarball sha256 and size, how, signer)."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hash": self.hash,
            "name": self.name,
            "version": self.version,
            "prefix": self.prefix,
            "spec": self.spec,
            "installed_at": self.installed_at,
            "mirror": None if self.mirror is None else redact(self.mirror),
            "tarball_sha256": self.tarball_sha256,
            "signer": self.signer,
            "old_prefix": self.old_prefix,
            "dependencies": list(self.dependencies),
        }
        if self.verified:
            out["verified"] = dict(self.verified)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> InstallRecord:
        try:
            known = {
                "hash", "name", "version", "prefix", "spec", "installed_at", "mirror",
                "tarball_sha256", "signer", "old_prefix", "dependencies", "verified",
            }  # fmt: skip
            verified = data.get("verified")
            return cls(
                hash=str(data["hash"]),
                name=str(data["name"]),
                version=str(data["version"]),
                prefix=str(data["prefix"]),
                spec=str(data.get("spec", "")),
                installed_at=str(data.get("installed_at", "")),
                mirror=data.get("mirror"),
                tarball_sha256=data.get("tarball_sha256"),
                signer=data.get("signer"),
                old_prefix=data.get("old_prefix"),
                dependencies=tuple(str(d) for d in data.get("dependencies") or ()),
                verified=dict(verified) if isinstance(verified, dict) else {},
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"{source}: malformed install record: {exc}") from None


class InstallDB:
    """The records of one root; mutate only inside :func:`locked_db`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / DB_DIR / _DB_FILE
        self.records: dict[str, InstallRecord] = {}
        self._dirty = False

    def load(self) -> None:
        try:  # never through a planted symlink, never waiting on a FIFO
            raw = safefs.read_file(self.path, base=self.root, limit=_DB_LIMIT)
        except StoreError:
            raise
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        if raw is None:
            self.records = {}
            return
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise StoreError(f"{self.path}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise StoreError(
                f"{self.path}: not valid JSON: {exc.msg} (line {exc.lineno})"
            ) from None
        except RecursionError:
            raise StoreError(f"{self.path}: JSON nested too deeply") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("installs"), dict):
            raise StoreError(f"{self.path}: not a cacheclient install database")
        if doc.get("version") != _VERSION:
            raise StoreError(f"{self.path}: unsupported database version {doc.get('version')!r}")
        records: dict[str, InstallRecord] = {}
        for h, r in doc["installs"].items():
            if not isinstance(r, dict):
                raise StoreError(f"{self.path}: malformed install record {h!r}")
            records[h] = InstallRecord.from_dict(r, str(self.path))
        self.records = records

    def get(self, dag_hash: str) -> InstallRecord | None:
        return self.records.get(dag_hash)

    def put(self, record: InstallRecord) -> None:
        self.records[record.hash] = record
        self._dirty = True

    def remove(self, dag_hash: str) -> None:
        if self.records.pop(dag_hash, None) is not None:
            self._dirty = True

    def save(self) -> None:
        """Write the database atomically (no-op when nothing changed)."""
        if not self._dirty:
            return
        doc = {
            "version": _VERSION,
            "installs": {h: self.records[h].to_dict() for h in sorted(self.records)},
        }
        data = json.dumps(doc, indent=1, sort_keys=False).encode() + b"\n"
        try:
            fd, tmp = tempfile.mkstemp(prefix=".installed.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write: {exc.strerror or exc}") from None
        self._dirty = False


@contextlib.contextmanager
def locked_db(root: Path) -> Iterator[InstallDB]:
    """Create the root if needed, lock it exclusively and yield its loaded database.

    The database is saved when the block exits (also after an error, so installs that
    completed before the error stay recorded).
    """
    meta = root / DB_DIR
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock_fd = safefs.open_file(meta / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644, base=root)
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"{root}: cannot use as install root: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise StoreError(f"{meta / _LOCK_FILE}: cannot lock: {exc.strerror or exc}") from None
        db = InstallDB(root)
        db.load()
        try:
            yield db
        finally:
            db.save()
    finally:
        os.close(lock_fd)


def read_db(root: Path) -> InstallDB:
    """A snapshot of the database without locking (for listings and dry runs)."""
    db = InstallDB(root)
    db.load()
    return db
