"""``review-app``: the review pages (``mephisto_dist.review_app``)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Annotated

import typer

from mephisto_dist.cli.console import err_console, fail


def review_web(
    host: Annotated[str, typer.Option("--host", metavar="HOST",
                                      help="Address to bind (0.0.0.0 only behind a TLS proxy).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")] = 5600,
    secure_cookie: Annotated[bool, typer.Option(
        "--secure-cookie", help="Send the session cookie over HTTPS only (behind a TLS proxy).")] = False,
    mephisto_client: Annotated[Path | None, typer.Option(
        "--mephisto-client", metavar="DIR", file_okay=False, exists=True,
        help="Also serve this build of Mephisto's TaskReview client (index.html and static/) at /tasks, over "
             "Mephisto's JSON API (/api/...).")] = None,
) -> None:
    """Watch runs and review, pay and block workers in a browser.

    Needs MEPHISTO_DIST_REVIEW_USERS=reviewer:password (several: comma-separated); every decision records
    its reviewer. MEPHISTO_DIST_REVIEW_SECRET (32+ characters) signs the sessions, so that they outlive a
    restart and several processes share them. Mephisto's TaskReview JSON API is always served under
    /api/ (signed-in sessions only); --mephisto-client DIR serves a build of its client too."""
    from mephisto_dist.review_app.server import NO_REVIEWERS, serve
    from mephisto_dist.runtime import Runtime
    from mephisto_dist.settings import load_settings

    settings = load_settings()
    if not settings.review_users:
        fail(NO_REVIEWERS)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            taken = error.errno == errno.EADDRINUSE
            fail(f"{host}:{port} is already in use; choose another with --port" if taken
                 else f"cannot listen on {host}:{port}: {error.strerror}")
    err_console.print(f"review app on http://{host}:{port}/ (sign in as one of MEPHISTO_DIST_REVIEW_USERS)"
                      + (f"; Mephisto's TaskReview client on http://{host}:{port}/tasks" if mephisto_client else ""),
                      highlight=False)
    serve(Runtime(settings), host=host, port=port, secure_cookie=secure_cookie, mephisto_client=mephisto_client)
