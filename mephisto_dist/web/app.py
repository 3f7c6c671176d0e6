"""The ASGI application: the route table of the worker-facing server.

Routes live in ``web/routes/``, one module per group; each handler parses the request, calls one
function of ``mephisto_dist.work`` and answers. Errors become statuses in ``web/errors.py``. To add a
group, write its module with a ``ROUTES`` list and name it in ``ROUTE_GROUPS``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from mephisto_dist import metrics
from mephisto_dist.db.engine import holding_connections
from mephisto_dist.errors import MephistoDistError
from mephisto_dist.runners.live.hub import LiveHub
from mephisto_dist.runtime import Runtime
from mephisto_dist.web import request_log
from mephisto_dist.web.context import SQLITE_SPARE_AFTER_S, SQLITE_THREADS, WebContext
from mephisto_dist.web.errors import DRIVER_ERRORS, driver_error_response, error_response
from mephisto_dist.web.hot_routes import HotRoutes
from mephisto_dist.web.request_log import RequestLog
from mephisto_dist.web.routes import agents, live, pages, router, submissions
from mephisto_dist.work.served import Served

# In matching order; pages.FALLBACK (the run's built files, any path) comes last.
ROUTE_GROUPS: tuple[Sequence[BaseRoute], ...] = (pages.ROUTES, router.ROUTES, agents.ROUTES, submissions.ROUTES,
                                                 live.ROUTES, pages.FALLBACK)
# What every worker asks for every unit: matched first, as Starlette tries each route's regex in turn.
# Moving them is safe because each is one fixed path, which no other route but the fallback matches.
HOT_PATHS: tuple[str, ...] = ("/request_agent", "/submit_task", "/task_config.json")


def route_table() -> list[BaseRoute]:
    """``ROUTE_GROUPS`` in order, except the ``HOT_PATHS`` routes, which go first."""
    def rank(route: BaseRoute) -> int:
        path = getattr(route, "path", None)
        return HOT_PATHS.index(path) if path in HOT_PATHS else len(HOT_PATHS)

    return sorted((route for group in ROUTE_GROUPS for route in group), key=rank)  # stable: the rest keep order


def create_app(runtime: Runtime, *, run_id: int | None = None, port: int | None = None) -> Starlette:
    metrics.enable(runtime.settings)
    hub = LiveHub(runtime.settings.effective_redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            # The event loop's thread runs SQLite's hot-path work when the write lock is free
            # (WebContext.call): on a connection it holds from one call to the next, as the hot threads.
            with holding_connections():
                yield
        finally:
            await hub.close()
            await app.state.context.aclose()
            request_log.flush_lines()
            # What the last submissions queued to give back (a thread join: not on the event loop).
            await anyio.to_thread.run_sync(app.state.context.served.releases.close)

    app = Starlette(routes=route_table(),
                    exception_handlers={MephistoDistError: error_response,
                                        **dict.fromkeys(DRIVER_ERRORS, driver_error_response)},
                    middleware=[Middleware(RequestLog), Middleware(HotRoutes)], lifespan=lifespan)
    app.state.live = hub
    sqlite = runtime.engine.dialect.name == "sqlite"
    app.state.context = WebContext(Served.for_runtime(runtime, run_id=run_id, port=port),
                                   hot_threads=SQLITE_THREADS if sqlite else runtime.settings.web_threads,
                                   spare_after_s=SQLITE_SPARE_AFTER_S if sqlite else None,
                                   on_loop_when_free=sqlite,
                                   statements_on_loop=runtime.engine.dialect.driver == "psycopg")
    return app
