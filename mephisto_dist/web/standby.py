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


def preload() -> None:
    """Load what serving needs, up to the event loop and HTTP parser uvicorn picks."""
    import uvicorn.loops.uvloop
    import uvicorn.protocols.http.httptools_impl  # noqa: F401

    import mephisto_dist.metrics
    import mephisto_dist.web.app
    import mephisto_dist.web.recorded_server
    import mephisto_dist.web.server  # noqa: F401


def serve_when_told(orders: IO[bytes]) -> int:
    """In the forked child: preload, wait for where to serve and with which settings (a JSON object:
    ``host``, ``port``, ``env`` the environment variables), then serve the newest open run on that port
    until told to stop. Returns the exit code.

    What was inherited lives as long as this process: frozen first, the collection the server makes
    before serving walks only what it loaded itself (over the CLI's heap too it took ~0.1 s)."""
    gc.freeze()
    gc.disable()  # loading modules sets off full collections that find next to nothing (see cli.app)
    try:
        preload()
    finally:
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
