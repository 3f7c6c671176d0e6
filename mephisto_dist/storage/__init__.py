"""Object storage for what machines must share besides the database and Redis: run bundles and uploads.

The contract is a flat key space (``runs/bundles/<sha256>.tar``, ``uploads/<run>/<agent>/...``): put a
stream under a key, read it back whole or as a stream, ask whether it exists, delete it. Keys are
relative, ``/``-separated, with no empty, ``.`` or ``..`` parts, so every implementation maps them the
same way. ``locator`` names where a key lives for a person reading an export (a path or an ``s3://`` URL).

Implementations, picked by ``MEPHISTO_DIST_STORAGE_URL`` (see :func:`open_storage`):
- ``file.FileStorage`` (``file:///abs/path``; default: ``<data dir>/storage``),
- ``s3.S3Storage`` (``s3://BUCKET[/PREFIX]``, boto3 with the standard AWS configuration).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO, Final, Protocol
from urllib.parse import unquote, urlparse

from mephisto_dist.errors import ConfigError, NotFoundError, ServiceError

CHUNK_BYTES: Final = 1024 * 1024
_KEY_PART = re.compile(r"^[A-Za-z0-9._=+@,-]+$")


class StorageError(ServiceError):
    """The store failed (unreachable, access denied, disk full)."""


class MissingKey(NotFoundError):
    """No object is stored under the key."""


class Storage(Protocol):
    def put(self, key: str, data: BinaryIO) -> int:
        """Store the stream's bytes under ``key`` (replacing any), reading it in chunks; return the size."""
        ...

    def get(self, key: str) -> bytes:
        """The whole object; :class:`MissingKey` if absent."""
        ...

    def stream(self, key: str) -> Iterator[bytes]:
        """The object in chunks; :class:`MissingKey` (raised before the first chunk) if absent."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting an absent key is not an error."""
        ...

    def locator(self, key: str) -> str:
        """Where the key lives, for a person: a file path or an ``s3://`` URL."""
        ...


def check_key(key: str) -> str:
    """``key`` if it is a valid storage key, else ValueError (keys are built by our code, never by users)."""
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") or not _KEY_PART.match(part) for part in parts):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def open_storage(url: str) -> Storage:
    """The store a ``MEPHISTO_DIST_STORAGE_URL`` names; ConfigError naming the problem if it names none."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"MEPHISTO_DIST_STORAGE_URL={url!r}: a file:// URL takes an absolute path "
                              "(file:///srv/mephisto-dist/storage)")
        from mephisto_dist.storage.file import FileStorage

        return FileStorage(unquote(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"MEPHISTO_DIST_STORAGE_URL={url!r}: an s3:// URL names a bucket (s3://BUCKET/PREFIX)")
        from mephisto_dist.storage.s3 import S3Storage

        return S3Storage(parsed.netloc, parsed.path.strip("/"))
    raise ConfigError(f"MEPHISTO_DIST_STORAGE_URL={url!r}: use file:///PATH or s3://BUCKET/PREFIX")
