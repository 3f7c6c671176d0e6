"""The page a worker opens, its assets, the run's built files and its front-end configuration."""

from __future__ import annotations

import functools
import html
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from mephisto_dist.errors import RequestError
from mephisto_dist.web.context import context_of
from mephisto_dist.web.frontend import index_page

STATIC_DIR = Path(__file__).parent.parent / "static"
SHELL_ASSETS = frozenset({"shell.js", "shell.css"})
DEFAULT_TITLE = "Task"
NO_STORE = {"Cache-Control": "no-store"}


@functools.cache
def shell_template() -> str:
    """The shell page's HTML, read once: it is the package's own file."""
    return (STATIC_DIR / "shell.html").read_text(encoding="utf-8")


async def shell(request: Request) -> Response:
    context = context_of(request)
    try:
        run = await context.run()
        page = index_page(run.config)
        if page is not None:  # the blueprint's own page (a React task's index.html)
            found = context.files.find(run.build_dir, page)
            if found is None:  # FileResponse's own error, as before
                return FileResponse(Path(run.build_dir) / page, headers=NO_STORE)
            return found.response(request, NO_STORE, conditional=False)
        title = str(context.frontend.config(run).get("task_title") or DEFAULT_TITLE)
    except RequestError:
        title = DEFAULT_TITLE  # no run served yet: the page itself says so once it asks
    return HTMLResponse(shell_template().replace("{{task_title}}", html.escape(title)), headers=NO_STORE)


async def shell_asset(request: Request) -> Response:
    name = request.path_params["name"]
    found = context_of(request).files.find(str(STATIC_DIR), name) if name in SHELL_ASSETS else None
    if found is None:
        raise HTTPException(404)
    return found.response(request)


async def task_config(request: Request) -> Response:
    context = context_of(request)
    context.frontend.check_client_version(request.query_params.get("mephisto_task_version"))
    return Response(context.frontend.body(await context.run()), media_type="application/json")


async def run_file(request: Request) -> Response:
    context = context_of(request)
    run = await context.run()
    found = context.files.find(run.build_dir, request.path_params["path"])
    if found is None:
        if request.path_params["path"] == "favicon.ico":
            # Browsers ask for it on their own: a task without one gets an empty answer, not a 404.
            return Response(status_code=204)
        raise HTTPException(404)
    return found.response(request)


ROUTES = [
    Route("/", shell),
    Route("/_mephisto_dist/{name}", shell_asset),
    Route("/task_config.json", task_config),
]
# Matches every path: it goes after every other group.
FALLBACK = [Route("/{path:path}", run_file)]
