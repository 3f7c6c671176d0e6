"""Storage in a local folder: the embedded default, or a mount every machine shares."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mephisto_dist.storage import CHUNK_BYTES, MissingKey, StorageError, check_key


class FileStorage:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: BinaryIO) -> int:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed, so a reader never sees half an object.
            handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            try:
                with os.fdopen(handle, "wb") as out:
                    shutil.copyfileobj(data, out, CHUNK_BYTES)
                os.chmod(staging, 0o644)
                os.replace(staging, target)
            except BaseException:
                Path(staging).unlink(missing_ok=True)
                raise
            return target.stat().st_size
        except OSError as error:
            raise StorageError(f"cannot store {key} under {self.root}: {error.strerror or error}") from None

    def get(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def stream(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise MissingKey(f"nothing stored under {key}") from None
        except OSError as error:
            raise StorageError(f"cannot read {path}: {error.strerror or error}") from None
        return _chunks(handle)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(f"cannot delete {key} under {self.root}: {error.strerror or error}") from None

    def locator(self, key: str) -> str:
        return str(self._path(key))


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk
