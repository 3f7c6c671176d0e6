"""The layers around the worker-facing handlers, made cheap without changing what they do: one access-log
line and one latency observation per request (``web.request_log``), the hot routes matched first with
every path still reaching the handler it reached, uvicorn's configuration, the log's formatter and the
name check."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy.pool import QueuePool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route, WebSocketRoute
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mephisto_dist.domain.worker_input import check_name
from mephisto_dist.errors import RequestError
from mephisto_dist.web import request_log
from mephisto_dist.web.app import HOT_PATHS, ROUTE_GROUPS, route_table
from mephisto_dist.web.one_write import OneWriteHttpProtocol
from mephisto_dist.web.recorded_server import server_config, warm_up
from mephisto_dist.web.request_log import RequestLog
from mephisto_dist.web.server import LOG_FORMAT, LogFormatter
from mephisto_dist.work.served import Served
from tests.conftest import wait_for
from tests.factories import make_run
from tests.system import make_runtime

LINE = re.compile(r"^(GET|POST) (\S+) (\d{3}) \d+\.\dms$")


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def boom(request: Request) -> Response:
    raise RuntimeError("the handler failed")


async def missing(request: Request) -> Response:
    raise HTTPException(404)


def latency_app(histogram: Histogram) -> Starlette:
    class Recorded(RequestLog):
        def __init__(self, app: Any) -> None:
            super().__init__(app)
            self.histogram = histogram

    return Starlette(routes=[Route("/task_config.json", ok), Route("/submit_task", boom, methods=["POST"]),
                             Route("/gone.html", missing), Route("/{path:path}", ok)],
                     middleware=[Middleware(Recorded)])


def counts(histogram: Histogram) -> dict[str, float]:
    return {sample.labels["endpoint"]: sample.value for metric in histogram.collect() for sample in metric.samples
            if sample.name.endswith("_count")}


def test_each_request_is_logged_once_with_its_status_and_observed_once_under_its_endpoint(
        caplog: pytest.LogCaptureFixture) -> None:
    histogram = Histogram("test_request_seconds", "", ["endpoint"], registry=CollectorRegistry())
    app = latency_app(histogram)

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.request(method, path)).status_code for method, path in (
                ("GET", "/task_config.json"), ("GET", "/task_config.json"), ("POST", "/submit_task"),
                ("GET", "/gone.html"), ("GET", "/task.html"), ("GET", "/submit_task"))]

    with caplog.at_level(logging.INFO, logger=request_log.log.name):
        statuses = asyncio.run(go())
    assert statuses == [200, 200, 500, 404, 200, 200]
    lines = [LINE.match(record.getMessage()) for record in caplog.records if record.name == request_log.log.name]
    assert all(lines), [record.getMessage() for record in caplog.records]
    assert [(m.group(1), m.group(2), int(m.group(3))) for m in lines if m] == [
        ("GET", "/task_config.json", 200), ("GET", "/task_config.json", 200), ("POST", "/submit_task", 500),
        ("GET", "/gone.html", 404), ("GET", "/task.html", 200), ("GET", "/submit_task", 200)]
    assert counts(histogram) == {"/task_config.json": 2, "/submit_task": 2, "static": 2}


def test_a_websocket_is_neither_logged_nor_observed(caplog: pytest.LogCaptureFixture) -> None:
    histogram = Histogram("test_ws_seconds", "", ["endpoint"], registry=CollectorRegistry())
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    with caplog.at_level(logging.INFO, logger=request_log.log.name):
        middleware = RequestLog(inner)
        middleware.histogram = histogram
        asyncio.run(middleware({"type": "websocket", "path": "/"}, None, None))  # type: ignore[arg-type]
    assert seen == ["websocket"] and not caplog.records and counts(histogram) == {}


def in_groups_order() -> list[BaseRoute]:
    return [route for group in ROUTE_GROUPS for route in group]


def chosen(routes: Sequence[BaseRoute], scope: dict[str, Any]) -> BaseRoute | None:
    """The route Starlette's router hands the request to: the first full match, else the first partial."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def probes() -> list[dict[str, Any]]:
    paths = {re.sub(r"\{[^}]*\}", "x", route.path) for route in in_groups_order()}  # type: ignore[attr-defined]
    paths |= {"/task.html", "/a/b/c.js", "/favicon.ico", "/_mephisto_dist/shell.js", "/download_file/a/b",
              "/request_agent/", "/task_config.json/x", "/submit_taskx", "/"}
    scopes: list[dict[str, Any]] = [{"type": "http", "method": method, "path": path, "root_path": ""}
                                    for path in sorted(paths) for method in ("GET", "HEAD", "POST", "PUT")]
    return scopes + [{"type": "websocket", "path": path, "root_path": ""} for path in sorted(paths)]


def test_every_path_reaches_the_handler_it_reached_before_the_hot_routes_moved_first() -> None:
    table = route_table()
    assert sorted(map(id, table)) == sorted(map(id, in_groups_order()))
    assert [route.path for route in table[:len(HOT_PATHS)]] == list(HOT_PATHS)  # type: ignore[attr-defined]
    assert table[-1].path == "/{path:path}"  # type: ignore[attr-defined]
    for scope in probes():
        assert chosen(table, scope) is chosen(in_groups_order(), scope), scope
    # The probes reach every route, the websocket included.
    assert {id(chosen(table, scope)) for scope in probes()} - {id(None)} == set(map(id, table))
    assert isinstance(chosen(table, {"type": "websocket", "path": "/", "root_path": ""}), WebSocketRoute)


def test_uvicorn_runs_the_app_on_httptools_and_uvloop_without_its_own_access_log_or_proxy_rewriting() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    config = server_config(app, "127.0.0.1", 3000)
    assert (config.access_log, config.proxy_headers, config.http, config.loop) == (False, False,
                                                                                   OneWriteHttpProtocol, "uvloop")
    assert issubclass(OneWriteHttpProtocol, HttpToolsProtocol)
    config.load()
    assert not isinstance(config.loaded_app, ProxyHeadersMiddleware)


def test_an_idle_keep_alive_connection_outlives_a_balancers_reuse(tmp_path: Any) -> None:
    """nginx reuses an idle upstream connection for up to 60 s: one idle for longer than uvicorn's
    default 5 s must still answer (a close under the balancer took a healthy process out of its pool)."""
    import socket
    import threading
    import time

    import uvicorn

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(server_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout_s=10, message="uvicorn to start")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            connection.sendall(request)
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
            # The idle time is what is tested (past uvicorn's default 5 s keep-alive): no condition to await.
            time.sleep(6.5)
            connection.sendall(request)
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("codepoint", [0x00, 0x07, 0x1F, 0x20, 0x7E, 0x7F, 0x9F, 0xA0, 0xAD, 0xD7FF, 0xD800, 0xDFFF,
                                       0xE000, 0xFEFF, 0x10FFFF])
def test_a_name_is_refused_exactly_for_a_control_character_or_surrogate(codepoint: int) -> None:
    name = f"ab{chr(codepoint)}c\x01"
    if unicodedata.category(chr(codepoint)) in ("Cc", "Cs"):
        with pytest.raises(RequestError, match=rf"contains a control character \(U\+{codepoint:04X}\)"):
            check_name(name, "name")
    else:
        with pytest.raises(RequestError, match=r"\(U\+0001\)"):  # the first one is the one named
            check_name(name, "name")
        assert check_name(name[:-1], "name") == name[:-1]


def test_the_web_process_log_lines_are_loggings_own() -> None:
    plain, cached = logging.Formatter(LOG_FORMAT), LogFormatter(LOG_FORMAT)
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25, 1_767_225_599.9995):
        record = logging.LogRecord("mephisto_dist.web.access", logging.INFO, __file__, 1, "%s %s %d %.1fms",
                                   ("GET", "/", 200, 1.25), None)
        record.created, record.msecs = created, (created - int(created)) * 1000 // 1 + 0.0
        assert cached.format(record) == plain.format(record)
        assert cached.formatTime(record, "%H") == plain.formatTime(record, "%H")


def test_the_access_log_written_in_batches_is_the_text_the_log_formatter_writes() -> None:
    """What ``serve`` sets up (request_log.AccessLines): the lines a record per request would give, written
    together once a tenth of a second has gathered them."""
    times = [1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_767_225_599.9995, 1_767_225_600.25]
    formatter = LogFormatter(LOG_FORMAT)
    expected = []
    for created in times:
        record = logging.LogRecord(request_log.log.name, logging.INFO, __file__, 1, "%s %s %d %.1fms",
                                   ("POST", "/submit_task", 200, 12.25), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        expected.append(formatter.format(record) + "\n")
    stream = io.StringIO()
    clock = iter(times)
    lines = request_log.AccessLines(stream, LogFormatter(LOG_FORMAT).stamp, clock=lambda: next(clock))

    async def go() -> tuple[str, str]:
        for _ in times:
            lines.add("POST", "/submit_task", 200, 0.01225)
        written_at_once = stream.getvalue()
        await asyncio.sleep(request_log.GATHER_S * 3)
        return written_at_once, stream.getvalue()

    at_once, later = asyncio.run(go())
    assert at_once == ""  # gathered, not written line by line
    assert later == "".join(expected)


def test_warming_up_opens_the_hot_paths_connections_and_never_stops_the_server_starting(
        tmp_path: Any, database_url: str, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    runtime = make_runtime(tmp_path / "data", database_url, redis_url, WEB_THREADS="5")
    try:
        made = make_run(runtime.sessions)
        served = Served.for_runtime(runtime, run_id=made.run_id)
        warm_up(runtime, served)
        loaded = served.cached_run()  # the first request reads no database
        assert loaded is not None and loaded.run_id == made.run_id
        with caplog.at_level(logging.INFO, logger="mephisto_dist.web.recorded_server"):
            warm_up(runtime, Served.for_runtime(runtime, run_id=999))  # no such run (yet): serve anyway
        assert "serving without warming up first: no task run is being served here" in caplog.text
        pool = runtime.engine.pool
        if runtime.engine.dialect.name == "postgresql":
            assert isinstance(pool, QueuePool) and pool.checkedin() >= 5 and pool.checkedout() == 0
    finally:
        runtime.close()


@pytest.mark.parametrize(("task", "blueprint", "provider", "deployment_cap", "expected"), [
    ({}, {}, "mock", "0", True),  # a static task, no limits: SQLite's work only (web.context runs it on the loop)
    ({}, {}, "inhouse", "0", True),
    ({}, {}, "prolific", "0", True),
    ({"max_num_concurrent_units": 5}, {}, "mock", "0", False),  # its cap is kept in Redis
    ({}, {}, "mock", "20", False),  # so is the deployment's
    ({"allowed_concurrent": 1}, {}, "mock", "0", False),
    ({"maximum_units_per_worker": 3}, {}, "mock", "0", False),
    ({}, {"onboarding_qualification": "q"}, "mock", "0", False),
    ({}, {"block_qualification": "b"}, "mock", "0", False),  # the gate may send provider calls
    ({}, {"_blueprint_type": "remote_procedure"}, "mock", "0", False),  # a live runner
    ({}, {}, "mturk", "0", False),  # a HIT taken back gives its tokens back in the request
])
def test_which_runs_hot_path_calls_nothing_but_the_database(tmp_path: Any, task: dict[str, Any],
                                                            blueprint: dict[str, Any], provider: str,
                                                            deployment_cap: str, expected: bool) -> None:
    from mephisto_dist.work.claims import RunContext

    runtime = make_runtime(tmp_path / "data", f"sqlite:///{tmp_path / 'test.db'}", "redis://127.0.0.1:1/0",
                           MAX_CONCURRENT_UNITS=deployment_cap)
    try:
        run = RunContext.from_config(1, 1, "t", provider, "/b", {"task": task, "blueprint": blueprint})
        served = Served.for_runtime(runtime, run_id=1)
        assert served.database_only(run) is expected
        # A cap set on the run while it goes (limits), as the run was last read.
        capped = RunContext.from_config(1, 1, "t", provider, "/b", {"task": task, "blueprint": blueprint}, cap=5)
        assert not served.database_only(capped)
    finally:
        runtime.close()


def test_a_hook_choosing_units_keeps_the_run_off_the_loop(tmp_path: Any) -> None:
    from mephisto_dist.work.claims import RunContext

    hooks = tmp_path / "hooks.py"
    hooks.write_text("def worker_can_do_unit(worker_name, unit_data):\n    return True\n")
    runtime = make_runtime(tmp_path / "data", f"sqlite:///{tmp_path / 'test.db'}", "redis://127.0.0.1:1/0")
    try:
        run = RunContext.from_config(1, 1, "t", "mock", "/b", {"task": {}, "blueprint": {"hooks_module": str(hooks)}})
        assert not Served.for_runtime(runtime, run_id=1).database_only(run)
    finally:
        runtime.close()
