"""Writing a lockfile to disk: atomically, readable by everyone, never a half-written file.

The text goes to a temporary file next to the lock, is flushed to disk, gets the lock's mode
(``0644`` for a new lock, the old file's permission bits when it is replaced, as editors do)
and is renamed over the old one, so a reader sees the old lock or the new one, never a mix,
and a failed write leaves the old lock as it was. An unchanged lock is not rewritten at all.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from cacheclient.ci.lock import Lock
from cacheclient.errors import UsageError

__all__ = ["LOCK_MODE", "write_lock"]


def __dir__() -> list[str]:
    return __all__


LOCK_MODE = 0o644
"""The mode of a new lockfile: a lock is shared (committed, cached by CI), not a secret."""


def write_lock(path: Path, lock: Lock) -> bool:
    """Write *lock* to *path*; False when the file already held exactly this lock.

    :raises UsageError: the file cannot be written (exit 2, naming ``--lock``).
    """
    text = lock.to_json()
    try:
        try:
            old = path.stat()
        except FileNotFoundError:
            mode = LOCK_MODE
        else:
            if path.read_text(encoding="utf-8") == text:
                return False
            mode = stat.S_IMODE(old.st_mode)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"--lock {path}: cannot write: {reason or exc}") from None
    return True
