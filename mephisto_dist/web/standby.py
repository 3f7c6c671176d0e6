"""A web server forked by ``mephisto-dist run`` before its services exist, to answer the first worker
sooner: forked from the CLI, it shares the modules the CLI has already loaded (SQLAlchemy, Redis, the
models), loads its own (Starlette, uvicorn) while the CLI starts Redis and checks the database, then
waits for one line on a pipe: the settings to serve with. An empty line or the pipe closed (the run did
not start) ends it without serving.

Forked, not spawned: a new interpreter would load every module again (most of a second on two cores),
and the first unit is claimable only once this server answers. It is forked before the CLI opens a
connection or starts a thread, so it inherits neither.
"""

from __future__ import annotations

import gc
import json
import os
from typing import IO


def before_fork() -> None:
    """In the CLI, just before it forks the server: what both processes would otherwise each do on first
    use, done once for both. The models' mappers are configured (the first query of each process did
    it, ~20 ms) and prometheus-client is loaded (the CLI records its launch's provider calls, the
    server its first request: ~20 ms each); which storage it writes to is chosen later by
    ``metrics.enable``, in the server."""
    import prometheus_client  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    import mephisto_dist.db.models  # noqa: F401

    configure_mappers()


def preload() -> None:
    """Load what serving needs, up to what the first request loads: the event loop, HTTP and websocket
    protocols and lifespan uvicorn picks, and the thread pool's backend (anyio's, for the handlers
    that run in threads). Loaded after the release, these were ~50 ms before the first answer."""
    import anyio._backends._asyncio  # noqa: F401
    import uvicorn.lifespan.on
    import uvicorn.loops.uvloop
    import uvicorn.protocols.http.httptools_impl
    import uvicorn.protocols.websockets.auto  # noqa: F401

    import mephisto_dist.metrics
    import mephisto_dist.web.app
    import mephisto_dist.web.recorded_server
    import mephisto_dist.web.server  # noqa: F401


def serve_when_told(orders: IO[bytes]) -> int:
    """In the forked child: preload, wait for where to serve and with which settings (a JSON object:
    ``host``, ``port``, ``env`` the environment variables), then serve the newest open run on that port
    until told to stop. Returns the exit code.

    What was inherited, and what it loads, lives as long as this process: frozen, the collection the
    server makes before serving walks only what serving set up (over the CLI's heap too it took ~0.1 s,
    over the modules loaded here ~10 ms)."""
    gc.freeze()
    gc.disable()  # loading modules sets off full collections that find next to nothing (see cli.app)
    try:
        preload()
    finally:
        gc.freeze()
        gc.enable()
    line = orders.readline().strip()
    orders.close()
    if not line:
        return 0
    told = json.loads(line)
    os.environ.update(told["env"])
    from mephisto_dist.runtime import Runtime
    from mephisto_dist.settings import load_settings
    from mephisto_dist.web.server import serve

    serve(Runtime(load_settings()), run_id=None, host=str(told["host"]), port=int(told["port"]))
    return 0
