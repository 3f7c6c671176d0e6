"""The page a worker opens, its assets, the run's built files and its front-end configuration."""

from __future__ import annotations

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


async def shell(request: Request) -> Response:
    context = context_of(request)
    try:
        run = await context.run()
        page = index_page(run.config)
        if page is not None:  # the blueprint's own page (a React task's index.html)
            return FileResponse(Path(run.build_dir) / page, headers={"Cache-Control": "no-store"})
        title = str(context.frontend.config(run).get("task_title") or DEFAULT_TITLE)
    except RequestError:
        title = DEFAULT_TITLE  # no run served yet: the page itself says so once it asks
    page = (STATIC_DIR / "shell.html").read_text(encoding="utf-8").replace("{{task_title}}", html.escape(title))
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


async def shell_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in SHELL_ASSETS:
        raise HTTPException(404)
    return FileResponse(STATIC_DIR / name)


async def task_config(request: Request) -> Response:
    context = context_of(request)
    return Response(context.frontend.body(await context.run()), media_type="application/json")


async def run_file(request: Request) -> Response:
    run = await context_of(request).run()
    root = Path(run.build_dir).resolve()
    path = (root / request.path_params["path"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        if request.path_params["path"] == "favicon.ico":
            # Browsers ask for it on their own: a task without one gets an empty answer, not a 404.
            return Response(status_code=204)
        raise HTTPException(404)
    return FileResponse(path)


ROUTES = [
    Route("/", shell),
    Route("/_mephisto_dist/{name}", shell_asset),
    Route("/task_config.json", task_config),
]
# Matches every path: it goes after every other group.
FALLBACK = [Route("/{path:path}", run_file)]
