"""``file://`` URLs and plain paths: :class:`FileTransport`."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import IO

from cacheclient.errors import DownloadError
from cacheclient.transport.base import Fetched, Stream, Transport, _NotFound

__all__ = ["FileTransport"]


def __dir__() -> list[str]:
    return __all__


def _local_path(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == "file":
        from urllib.request import url2pathname  # noqa: PLC0415 - it imports http.client

        return Path(url2pathname(urllib.parse.unquote(parts.netloc + parts.path)))
    return Path(url)


class _FileStream:
    def __init__(self, handle: IO[bytes], offset: int, validator: str, total: int) -> None:
        self._handle = handle
        self.offset = offset
        self.validator: str | None = validator
        self.etag: str | None = validator
        self.total: int | None = total

    def read(self, size: int) -> bytes:
        return self._handle.read(size)

    def close(self) -> None:
        self._handle.close()


class FileTransport(Transport):
    """Local directories: ``file:///path`` URLs and plain paths."""

    schemes = ("file",)

    @staticmethod
    def _validator(stat: os.stat_result) -> str:
        return f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}"

    def _get(self, url: str, etag: str | None, last_modified: str | None) -> Fetched:
        path = _local_path(url)
        try:
            stat = path.stat()
            tag = self._validator(stat)
            if etag is not None and etag == tag:
                return Fetched(status=304, body=b"", etag=tag)
            if not S_ISREG(stat.st_mode) and not S_ISDIR(stat.st_mode):  # never wait on a FIFO
                raise DownloadError(f"{url}: not a regular file", url=url)
            body = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise _NotFound(url) from None
        except IsADirectoryError:
            raise DownloadError(f"{url}: is a directory", url=url) from None
        except OSError as exc:
            raise DownloadError(f"{url}: {exc.strerror or exc}", url=url) from None
        return Fetched(status=200, body=body, etag=tag)

    def _open(self, url: str, offset: int, if_range: str | None) -> Stream:
        path = _local_path(url)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - owned by the stream
            stat = os.fstat(handle.fileno())
        except (FileNotFoundError, NotADirectoryError):
            raise _NotFound(url) from None
        except OSError as exc:
            raise DownloadError(f"{url}: {exc.strerror or exc}", url=url) from None
        tag = self._validator(stat)
        start = offset if (offset and if_range == tag and offset <= stat.st_size) else 0
        handle.seek(start)
        return _FileStream(handle, start, tag, stat.st_size)
