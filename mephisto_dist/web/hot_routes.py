"""The two requests every worker makes for every unit, ``POST /request_agent`` and ``POST /submit_task``
with a JSON body, answered by one plain ASGI layer instead of Starlette's exception middleware, router,
``Request`` and ``JSONResponse`` (a share of a web process's CPU per unit of their own, for two fixed paths).
So are the two files every worker's page loads for every unit, when the run served is known without a
database read: ``GET /task_config.json`` and a plain ``GET`` of one of the run's built files kept in memory
(``web.served_files``; no range, no conditional request: those, and a file not kept, go to the route).
A run file's path is any path no other ``GET`` route of the app takes (read off the app's own routes).

The work and the answer are the routes' own (``routes.agents.agent_details``,
``routes.submissions.submitted``), sent as ``JSONResponse`` sends them, with every refusal mapped by the
same functions of ``web/errors.py``; the Starlette routes stay and serve what this layer hands on: any
other path or method, and ``/submit_task`` posted as a form. An error this layer does not map
goes up to Starlette's outermost layer, which answers 500 as it does for any handler.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mephisto_dist.errors import MephistoDistError
from mephisto_dist.web.bodies import MULTIPART, URLENCODED, json_object_body, read_body
from mephisto_dist.web.context import WebContext
from mephisto_dist.web.errors import DRIVER_ERRORS, driver_error_response, error_response
from mephisto_dist.web.routes import agents, submissions

JSON_HEADER = (b"content-type", b"application/json")


HOT_ROUTES: dict[str, Callable[[WebContext, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "/request_agent": agents.agent_details,
    "/submit_task": submissions.submitted,
}
FORMS = (MULTIPART.encode(), URLENCODED.encode())


TASK_CONFIG = "/task_config.json"
CONDITIONS = frozenset({b"range", b"if-none-match", b"if-modified-since", b"if-range"})


class HotRoutes:
    """ASGI middleware, inside ``RequestLog`` (which logs and times these requests as any other)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (whether the app's last route serves the run's files, the GET routes' paths, their prefixes)
        self._routed: tuple[bool, frozenset[str], tuple[str, ...]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            try:
                served = await self._served_file(scope, send)
            except MephistoDistError as error:
                await (await error_response(Request(scope, receive), error))(scope, receive, send)
                return
            if not served:
                await self.app(scope, receive, send)
            return
        handler = HOT_ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        length: str | None = None
        media_type: bytes | None = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"content-length" and length is None:
                length = value.decode("latin-1")
            elif name == b"content-type" and media_type is None:
                media_type = value.partition(b";")[0].strip().lower()
        if media_type in FORMS:
            await self.app(scope, receive, send)  # a form: the route's own parsing
            return
        context: WebContext = scope["app"].state.context
        try:
            raw = await read_body(receive, length, context.max_body_bytes)
            answer = await handler(context, json_object_body(raw))
        except MephistoDistError as error:
            await (await error_response(Request(scope, receive), error))(scope, receive, send)
            return
        except DRIVER_ERRORS as error:
            await (await driver_error_response(Request(scope, receive), error))(scope, receive, send)
            return
        body = json.dumps(answer, ensure_ascii=False, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("utf-8")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode("latin-1")), JSON_HEADER]})
        await send({"type": "http.response.body", "body": body})

    async def _served_file(self, scope: Scope, send: Send) -> bool:
        """Answer a GET of ``/task_config.json`` or of a run file kept in memory, as the routes would; False
        when it is the route's to answer."""
        app = scope["app"]
        context: WebContext = app.state.context
        run = context.served.cached_run()
        if run is None:
            return False
        path: str = scope["path"]
        if path == TASK_CONFIG:
            if scope["query_string"]:  # as Starlette's query_params.get: the last value, blank kept
                versions = [value for name, value in parse_qsl(scope["query_string"].decode("latin-1"),
                                                               keep_blank_values=True)
                            if name == "mephisto_task_version"]
                context.frontend.check_client_version(versions[-1] if versions else None)
            body = context.frontend.body(run)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode("latin-1")), JSON_HEADER]})
            await send({"type": "http.response.body", "body": body})
            return True
        files_last, exact, prefixes = self._routed or self._read_routes(app)
        if not files_last or path in exact or path.startswith(prefixes) or not path.startswith("/"):
            return False
        if any(name in CONDITIONS for name, _ in scope["headers"]):
            return False
        found = context.files.find(run.build_dir, path[1:])
        if found is None or found.body is None:
            return False
        await send({"type": "http.response.start", "status": 200, "headers": found.raw_headers})
        await send({"type": "http.response.body", "body": found.body})
        return True

    def _read_routes(self, app: Starlette) -> tuple[bool, frozenset[str], tuple[str, ...]]:
        """The paths (and the prefixes of paths with parameters) the app's GET routes take before its
        last route, the run's files (``pages.FALLBACK``, which takes every path); when the app does not end
        with that route, no file is served here."""
        exact: set[str] = set()
        prefixes: list[str] = []
        last = app.routes[-1] if app.routes else None
        if not (isinstance(last, Route) and last.path == "/{path:path}"):
            self._routed = (False, frozenset(), ())
            return self._routed
        for route in app.routes[:-1]:
            if not isinstance(route, Route) or (route.methods is not None and "GET" not in route.methods):
                continue
            if "{" in route.path:
                prefixes.append(route.path[:route.path.index("{")])
            else:
                exact.add(route.path)
        self._routed = (True, frozenset(exact), tuple(prefixes))
        return self._routed
