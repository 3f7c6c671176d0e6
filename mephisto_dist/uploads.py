"""Files workers upload with a submission: stored under the data directory, referenced from outputs."""

from __future__ import annotations

import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    base = Path(name.replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip("._")
    return cleaned[:120] or "upload"


@dataclass(frozen=True)
class StoredFile:
    field: str
    filename: str
    path: str
    relative_path: str
    size: int
    content_type: str | None

    def record(self) -> dict[str, Any]:
        return {"filename": self.filename, "path": self.path, "stored_as": self.relative_path,
                "size": self.size, "content_type": self.content_type}


class UploadStore:
    """Writes each submission attempt's files into a fresh folder, so a refused or repeated submission
    can be discarded without touching the accepted one."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def new_batch(self, run_id: int, agent_id: str) -> Path:
        folder = self.root / str(run_id) / safe_filename(agent_id) / secrets.token_hex(4)
        folder.mkdir(parents=True, exist_ok=False)
        return folder

    def save(self, batch: Path, field: str, filename: str, content_type: str | None, data: BinaryIO) -> StoredFile:
        name = safe_filename(filename)
        target = batch / name
        counter = 1
        while target.exists():
            target = batch / f"{counter}_{name}"
            counter += 1
        with target.open("wb") as out:
            shutil.copyfileobj(data, out)
        return StoredFile(field, filename, str(target.resolve()), str(target.relative_to(self.root)),
                          target.stat().st_size,
                          content_type)

    def discard(self, batch: Path) -> None:
        shutil.rmtree(batch, ignore_errors=True)

    def path_of(self, relative_path: str) -> Path:
        return self.root / relative_path
