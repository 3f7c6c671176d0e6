"""Serving a build of Mephisto's TaskReview client (``review-app --mephisto-client DIR``: ``DIR/index.html``
and ``DIR/static/``) beside our own pages: its pages (``/tasks...``, ``/qualifications...``) answer with its
``index.html``, its ``/static/`` files are found after ours, and the files at its root (``favicon.ico``,
``manifest.json``) are served as they are. Its JSON API is :mod:`.mephisto_api`.

The build's inline scripts (create-react-app inlines its runtime chunk) are allowed by their hashes, not
by ``'unsafe-inline'``; its components set styles at run time, so its pages allow inline styles.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from mephisto_dist.errors import ConfigError, NotFoundError

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)
PAGE_PREFIXES = ("/tasks", "/qualifications")


def file_under(root: Path, relative: str) -> Path | None:
    """``root/relative`` when it is a file inside ``root`` (no ``..`` or link out of it)."""
    try:
        path = (root / relative).resolve()
    except (OSError, ValueError):
        return None
    return path if path.is_file() and path.is_relative_to(root.resolve()) else None


class MephistoClient:
    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        index = self.directory / "index.html"
        if not index.is_file():
            raise ConfigError(f"--mephisto-client {directory}: no index.html there (give the folder of a "
                              "TaskReview client build: index.html and static/)")
        self.index_html = index.read_text(encoding="utf-8")
        hashes = " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
            for script in INLINE_SCRIPT.findall(self.index_html) if script.strip())
        self.csp = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                    f"script-src 'self' {hashes}; connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; "
                    "form-action 'self'").replace("  ", " ")

    def page(self, request: Request) -> Response:
        return HTMLResponse(self.index_html, headers={"Content-Security-Policy": self.csp,
                                                      "Cache-Control": "no-cache"})

    def static(self, relative: str) -> Path | None:
        return file_under(self.directory / "static", relative)

    def root_file(self, request: Request) -> Response:
        """A file at the build's root (``/favicon.ico``); its client routes get the page."""
        path = request.url.path
        if path.startswith(PAGE_PREFIXES):
            return self.page(request)
        found = file_under(self.directory, path.lstrip("/"))
        if found is None or found.name == "index.html":
            raise NotFoundError(f"{path} does not exist")
        return FileResponse(found)
