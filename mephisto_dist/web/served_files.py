"""The files a web process serves from disk (a run's built files, the shell's assets), kept in memory.

Every worker's page asks for the same few files of its run's build folder. Resolving each request's path
(realpath: a syscall per path component) and answering with a ``FileResponse`` (a stat and a thread to
open and read the file) cost more CPU than the answer is worth, so the first request of a file resolves
and checks it and keeps what its answer needs: the resolved path, its stat, the headers ``FileResponse``
sends for it and, for a small file, its bytes (least recently used dropped past a total).

A run's build folder comes from its content-addressed bundle and does not change while it is served, but
a run made before bundles served its build folder where it was recorded, which can be edited: a kept
file is checked with one ``stat`` per request and read again when it changed. Only files found are
kept; a missing file is looked for again on each request.

Used from the event loop only (no locks): the reads it does on a first request are of small local files.
"""

from __future__ import annotations

import functools
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import parsedate
from pathlib import Path
from typing import Final

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse

MAX_FILE_BYTES: Final = 512 * 1024
"""Files larger than this are streamed from disk by ``FileResponse`` (only their headers are kept)."""
MAX_TOTAL_BYTES: Final = 64 * 1024 * 1024
MAX_FILES: Final = 4096
MAX_ROOTS: Final = 64


def _identity(found: os.stat_result) -> tuple[int, int, int, int]:
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


@dataclass(frozen=True)
class ServedFile:
    """A file found under a served folder, and what its answer needs."""

    path: Path
    stat_result: os.stat_result
    headers: dict[str, str]
    """What ``FileResponse`` sends for it: content-type, accept-ranges, content-length, last-modified, etag."""
    body: bytes | None
    """Its bytes, or None for a file streamed from disk."""

    @functools.cached_property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """``headers`` as the ASGI answer of its plain GET carries them (``response``'s 200, unconditional)."""
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]

    def response(self, request: Request, headers: dict[str, str] | None = None, *,
                 conditional: bool = True) -> Response:
        """The answer to ``request``: 304 when the client's copy is current (``conditional``), the kept
        bytes, or a ``FileResponse`` for a large file or a range request (206 and its edge cases)."""
        if conditional and not_modified(self.headers, request.headers):
            return NotModifiedResponse(Headers(self.headers))
        if self.body is None or "range" in request.headers:
            return FileResponse(self.path, headers=headers, stat_result=self.stat_result)
        body = b"" if request.method == "HEAD" else self.body
        return Response(body, headers={**headers, **self.headers} if headers else self.headers)


def not_modified(response_headers: dict[str, str], request_headers: Headers) -> bool:
    """Whether the client's conditional request names this version (as starlette's StaticFiles decides)."""
    if if_none_match := request_headers.get("if-none-match"):
        if if_none_match.strip() == "*":
            return True
        return response_headers["etag"] in [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    if if_modified_since := request_headers.get("if-modified-since"):
        since = parsedate(if_modified_since)
        modified = parsedate(response_headers["last-modified"])
        return since is not None and modified is not None and since >= modified
    return False


class ServedFiles:
    """The files found under served folders, by (folder, relative path as requested)."""

    def __init__(self, *, max_file_bytes: int = MAX_FILE_BYTES, max_total_bytes: int = MAX_TOTAL_BYTES) -> None:
        self._max_file_bytes = max_file_bytes
        self._max_total_bytes = max_total_bytes
        self._roots: dict[str, Path] = {}
        self._files: OrderedDict[tuple[str, str], tuple[tuple[int, int, int, int], ServedFile]] = OrderedDict()
        self._total_bytes = 0

    def find(self, folder: str, relative: str) -> ServedFile | None:
        """The regular file at ``relative`` under ``folder`` (symlinks followed), or None when there is
        none or it resolves outside the folder."""
        key = (folder, relative)
        kept = self._files.get(key)
        if kept is not None:
            identity, found = kept
            try:
                current = os.stat(found.path)
            except OSError:
                current = None
            if current is not None and _identity(current) == identity:
                self._files.move_to_end(key)
                return found
            self._forget(key)
        fresh = self._read(folder, relative)
        if fresh is not None:
            self._keep(key, fresh)
        return fresh

    def _root(self, folder: str) -> Path:
        root = self._roots.get(folder)
        if root is None:
            if len(self._roots) >= MAX_ROOTS:
                self._roots.clear()
            root = self._roots[folder] = Path(folder).resolve()
        return root

    def _read(self, folder: str, relative: str) -> ServedFile | None:
        root = self._root(folder)
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            return None
        try:
            found = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(found.st_mode):
            return None
        headers = dict(FileResponse(path, stat_result=found).headers)
        body: bytes | None = None
        if found.st_size <= self._max_file_bytes:
            try:
                body = path.read_bytes()
            except OSError:
                return None
            if len(body) != found.st_size:  # written to while read: stream it, keep nothing
                return ServedFile(path, found, headers, None)
        return ServedFile(path, found, headers, body)

    def _keep(self, key: tuple[str, str], found: ServedFile) -> None:
        size = len(found.body) if found.body is not None else 0
        if size > self._max_total_bytes:
            return
        self._files[key] = (_identity(found.stat_result), found)
        self._total_bytes += size
        while self._total_bytes > self._max_total_bytes or len(self._files) > MAX_FILES:
            self._forget(next(iter(self._files)))

    def _forget(self, key: tuple[str, str]) -> None:
        _, found = self._files.pop(key)
        self._total_bytes -= len(found.body) if found.body is not None else 0
