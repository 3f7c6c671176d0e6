"""Files workers upload with a submission: streamed to object storage, referenced from the outputs by key.

Each submission attempt's files go under a fresh prefix ``uploads/<run>/<agent>/<batch>/``, so a
refused or repeated submission can be discarded without touching the accepted one.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from mephisto_dist.storage import Storage

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
KEY_PREFIX = "uploads"


def safe_filename(name: str) -> str:
    base = Path(name.replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip("._")
    return cleaned[:120] or "upload"


@dataclass(frozen=True)
class StoredFile:
    field: str
    filename: str
    storage_key: str
    locator: str
    size: int
    content_type: str | None

    def record(self) -> dict[str, Any]:
        """What the outputs say about the file: ``storage_key`` for ``export --download``, and ``path``,
        where it lives (a file path, or an ``s3://`` URL)."""
        return {"filename": self.filename, "path": self.locator, "storage_key": self.storage_key,
                "size": self.size, "content_type": self.content_type}


@dataclass
class UploadBatch:
    prefix: str
    keys: list[str] = field(default_factory=list)


class UploadStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def new_batch(self, run_id: int, agent_id: str) -> UploadBatch:
        return UploadBatch(f"{KEY_PREFIX}/{run_id}/{safe_filename(agent_id)}/{secrets.token_hex(4)}")

    def save(self, batch: UploadBatch, field: str, filename: str, content_type: str | None,
             data: BinaryIO) -> StoredFile:
        name = safe_filename(filename)
        key = f"{batch.prefix}/{name}"
        counter = 1
        while key in batch.keys:
            key = f"{batch.prefix}/{counter}_{name}"
            counter += 1
        batch.keys.append(key)
        size = self.storage.put(key, data)
        return StoredFile(field, filename, key, self.storage.locator(key), size, content_type)

    def discard(self, batch: UploadBatch) -> None:
        for key in batch.keys:
            self.storage.delete(key)


def stored_keys(outputs: Any) -> list[str]:
    """The storage keys of the files a unit's outputs reference."""
    keys: list[str] = []
    values = outputs.values() if isinstance(outputs, dict) else []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and isinstance(item.get("storage_key"), str):
                keys.append(item["storage_key"])
    return keys
