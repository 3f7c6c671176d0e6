"""The rest of Mephisto's router surface, answered as its routers answer: ``/is_alive``,
``/get_timestamp`` (milliseconds, as the default node router says), ``/task_index`` (the task page, as
``/``) and ``/download_file/<name>``, which serves only the run's own built files (Mephisto's routers
served whatever was in their ``/tmp``)."""

from __future__ import annotations

import time
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from mephisto_dist.web.context import context_of
from mephisto_dist.web.routes.pages import shell


async def is_alive(request: Request) -> Response:
    return JSONResponse({"status": "Alive!"})


async def get_timestamp(request: Request) -> Response:
    return JSONResponse({"timestamp": int(time.time() * 1000)})


async def download_file(request: Request) -> Response:
    name = request.path_params["name"]
    run = await context_of(request).run()
    root = Path(run.build_dir).resolve()
    path = (root / name).resolve()
    if name.startswith(".") or path.parent != root or not path.is_file():
        raise HTTPException(404)
    return FileResponse(path, filename=name)


ROUTES = [
    Route("/is_alive", is_alive),
    Route("/get_timestamp", get_timestamp),
    Route("/task_index", shell),
    Route("/download_file/{name}", download_file),
]
