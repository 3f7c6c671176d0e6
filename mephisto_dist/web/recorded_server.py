"""A web process's server record (what the ``local`` architect starts, or a Procfile's ``web``): the process on this machine records itself before it listens,
leaves a heartbeat on its record while it runs, and stops itself when its run has ended or its record
is marked stopping (by ``mephisto-dist`` or beat's server reconciler, from any machine)."""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import uvicorn
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp

from mephisto_dist.architects.servers import (
    NewServer,
    heartbeat,
    mark_stopped,
    record_server,
    should_stop,
)
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Server
from mephisto_dist.errors import MephistoDistError
from mephisto_dist.runtime import Runtime
from mephisto_dist.storage.bundle_cache import BundleMissing
from mephisto_dist.web.one_write import OneWriteHttpProtocol

if TYPE_CHECKING:
    from mephisto_dist.work.served import Served

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class ServerKeeper(threading.Thread):
    """Beats every ``every_s`` and asks uvicorn for its graceful stop once the server must stop. A
    database error skips one beat: the reconciler tolerates a few."""

    def __init__(self, runtime: Runtime, server_id: int, every_s: float, server: uvicorn.Server) -> None:
        super().__init__(name="server-heartbeat", daemon=True)
        self._runtime = runtime
        self._server_id = server_id
        self._every_s = every_s
        self._server = server
        self._done = threading.Event()
        self.stop_reason: str | None = None

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.beat_once()
            except Exception:  # a missed beat is harmless; a dead keeper thread is not
                log.exception("server %s could not leave its heartbeat", self._server_id)
            if self.stop_reason is not None:
                log.warning("server %s stops: %s", self._server_id, self.stop_reason)
                self._server.should_exit = True
                return
            self._done.wait(self._every_s)

    def beat_once(self) -> None:
        now = _now()
        with transaction(self._runtime.sessions) as session:
            heartbeat(session, self._server_id, now=now)
            # Three heartbeats after its run ended: the last workers' pages have had their answers.
            self.stop_reason = should_stop(session, self._server_id, now=now, grace_s=3 * self._every_s)

    def finish(self) -> None:
        self._done.set()


def _address(host: str, port: int) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def adopt_or_record(runtime: Runtime, *, run_id: int | None, host: str, port: int, server_id: int | None) -> int:
    """This process's server record: the one an architect made before starting it (``server_id``), or a
    new one, written before the server listens."""
    with transaction(runtime.sessions) as session:
        if server_id is None:
            return record_server(session, NewServer(run_id, "local", socket.gethostname(), _address(host, port),
                                                    pid=os.getpid()), now=_now())
        server = session.get(Server, server_id)
        if server is None:
            raise MephistoDistError(f"server {server_id} is not recorded")
        server.pid = os.getpid()
        return server_id


KEEP_ALIVE_S = 75
"""How long an idle keep-alive connection stays open: longer than a balancer's own idle timeout."""


def server_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """How uvicorn runs the worker-facing app: its C parser and loop (``uvicorn[standard]``), our logging."""
    # uvicorn's own access log would repeat ours (web.request_log), without the time taken. No
    # X-Forwarded-* rewriting (a middleware on every request): nothing reads the client's address or
    # scheme, and the paths a balancer passes on are the worker's own.
    # Idle keep-alive connections are closed by the balancer first (nginx keeps an upstream one 60 s):
    # closed here after uvicorn's default 5 s, nginx could send a request down one just as it closed,
    # get "upstream prematurely closed", and take this healthy process out of its pool (max_fails=1).
    # The live channel's packets are small JSON: compressing each (permessage-deflate, which browsers offer)
    # cost more CPU on both ends than it saved, and Mephisto's router (Tornado's default) does not either.
    # One write per answer, its head and body together (web.one_write): uvicorn's httptools protocol.
    return uvicorn.Config(app, host=host, port=port, loop="uvloop", http=OneWriteHttpProtocol, log_level="warning",
                          access_log=False, log_config=None, proxy_headers=False,
                          timeout_keep_alive=KEEP_ALIVE_S, ws_per_message_deflate=False)


def serve_recorded(runtime: Runtime, *, run_id: int | None, host: str, port: int, public_port: int | None = None,
                   server_id: int | None = None) -> None:
    """Record, serve with heartbeats until told to stop (or killed), and close the record on the way out.
    ``public_port``: the run's port when a balancer listens on it and this process behind it."""
    from mephisto_dist.web.app import create_app

    server_id = adopt_or_record(runtime, run_id=run_id, host=host, port=port, server_id=server_id)
    run_port = public_port or port
    app = create_app(runtime, run_id=run_id, port=run_port)
    server = uvicorn.Server(server_config(app, host, port))
    keeper = ServerKeeper(runtime, server_id, runtime.settings.heartbeat_every_s, server)
    keeper.start()
    failure: str | None = None
    try:
        try:
            warm_up(runtime, app.state.context.served)
        except BundleMissing as error:  # no request could be served: stop, and say why
            failure = str(error)
            raise
        # What startup made (modules, the app, the run, SQLAlchemy's caches) lives as long as the process.
        # Kept out of the collector, a full collection walks only what serving made since: one over the
        # whole startup heap takes ~100 ms here, a stop every request in flight would wait out.
        gc.collect()
        gc.freeze()
        server.run()
    finally:
        keeper.finish()
        try:
            with transaction(runtime.sessions) as session:
                mark_stopped(session, server_id, failure or keeper.stop_reason or "the server exited", now=_now())
        except Exception:  # the reconciler closes the record of a server that died
            log.exception("server %s could not record that it stopped", server_id)


def warm_up(runtime: Runtime, served: Served) -> None:
    """Before the first worker comes: the served run read and its files fetched, and the connections the
    hot path's threads use opened (a PostgreSQL connection costs a backend start, several milliseconds),
    so the first second of load waits for neither. A run not there yet is read on first use instead; a
    run whose bundle is not in this machine's storage is an error (no request could be served)."""
    try:
        if runtime.engine.dialect.name != "sqlite":
            with ExitStack() as held:
                for _ in range(runtime.settings.web_threads):
                    held.enter_context(runtime.engine.connect())
        served.run()
    except BundleMissing:
        raise
    except (MephistoDistError, SQLAlchemyError) as error:  # each request meets it then, as before
        log.warning("serving without warming up first: %s", error)
