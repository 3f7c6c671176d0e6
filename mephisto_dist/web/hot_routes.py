"""The two requests every worker makes for every unit, ``POST /request_agent`` and ``POST /submit_task``
with a JSON body, answered by one plain ASGI layer instead of Starlette's exception middleware, router,
``Request`` and ``JSONResponse`` (a share of a web process's CPU per unit of their own, for two fixed paths).

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

from starlette.requests import Request
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


class HotRoutes:
    """ASGI middleware, inside ``RequestLog`` (which logs and times these requests as any other)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
