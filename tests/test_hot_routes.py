"""``web.hot_routes`` answers ``POST /request_agent`` and a JSON ``POST /submit_task`` outside Starlette's
router: every answer (status, headers, body) is the byte-for-byte answer of the Starlette routes it
stands in front of, for good requests and for each kind of refusal, on SQLite and PostgreSQL; what it
does not serve (a form, another method) still reaches the routes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from mephisto_dist.runtime import Runtime
from mephisto_dist.web.app import create_app
from mephisto_dist.web.hot_routes import HotRoutes
from mephisto_dist.work.claims import RunContext
from tests.factories import make_run
from tests.system import make_runtime

LIMIT_BYTES = 4096

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", database_url, redis_url, MAX_UPLOAD_BYTES=str(LIMIT_BYTES))
    yield rt
    rt.close()


@pytest.fixture
def run(runtime: Runtime) -> RunContext:
    return make_run(runtime.sessions, assignments=3)


def apps(runtime: Runtime, run: RunContext) -> tuple[Starlette, Starlette]:
    """The app as served, and the same app without the hot layer (the Starlette routes answer all)."""
    served = create_app(runtime, run_id=run.run_id)
    reference = create_app(runtime, run_id=run.run_id)
    reference.user_middleware = [m for m in reference.user_middleware if m.cls is not HotRoutes]
    assert len(reference.user_middleware) == len(served.user_middleware) - 1
    return served, reference


def ask(app: Starlette, path: str, method: str = "POST", **kwargs: Any) -> Answer:
    async def go() -> Answer:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.request(method, path, **kwargs)
            return response.status_code, list(response.headers.raw), response.content
    return asyncio.run(go())


def registration(worker: str, assignment: str = "a1") -> dict[str, Any]:
    return {"provider_data": {"worker_name": worker, "assignment_id": assignment,
                              "agent_registration_id": f"{assignment}-{worker}", "provider_type": "mock"}}


REFUSED_REQUEST_AGENT: list[dict[str, Any]] = [
    {"content": b"not json"},
    {"content": b"[1, 2]"},
    {"content": b""},
    {"content": b"\xff\xfe"},
    {"content": b"[" * 100 + b"]" * 100},
    {"json": {"provider_data": "x"}},
    {"json": {"provider_data": {"worker_name": ""}}},
    {"json": {"provider_data": {"worker_name": "w\x00"}}},
    {"json": {"provider_data": {"worker_name": "w", "assignment_id": 5}}},
    {"content": b"{}", "headers": {"content-length": "x2"}},
    {"content": b"x" * (LIMIT_BYTES + 1)},
]


@pytest.mark.parametrize("request_kwargs", REFUSED_REQUEST_AGENT)
def test_a_refused_request_agent_is_answered_as_the_route_answers_it(
        runtime: Runtime, run: RunContext, request_kwargs: dict[str, Any]) -> None:
    served, reference = apps(runtime, run)
    hot = ask(served, "/request_agent", **request_kwargs)
    assert hot[0] in (400, 413), hot
    assert hot == ask(reference, "/request_agent", **request_kwargs)


def test_request_agent_and_submit_task_answer_as_the_routes_answer(runtime: Runtime, run: RunContext) -> None:
    served, reference = apps(runtime, run)
    # A new agent (the hot layer), then the same registration again, which reconnects to it: both ways.
    first = ask(served, "/request_agent", json=registration("alice"))
    assert first[0] == 200 and b'"agent_id":"' in first[2], first
    again = ask(served, "/request_agent", json=registration("alice"))
    assert again == first == ask(reference, "/request_agent", json=registration("alice"))
    agent_id = httpx.Response(200, content=first[2]).json()["data"]["agent_id"]

    for body in ({"USED_AGENT_ID": agent_id}, {"USED_AGENT_ID": "nobody", "final_data": {}},
                 {"final_data": {"a": 1}}, {"USED_AGENT_ID": 12, "final_data": {}}):
        hot = ask(served, "/submit_task", json=body)
        assert hot[0] in (400, 404), hot
        assert hot == ask(reference, "/submit_task", json=body)

    submitted = ask(served, "/submit_task", json={"USED_AGENT_ID": agent_id, "final_data": {"rating": "é"}})
    assert submitted[0] == 200 and b'"status":"Submitted!"' in submitted[2], submitted
    repeat = {"USED_AGENT_ID": agent_id, "final_data": {"rating": "other"}}
    assert ask(served, "/submit_task", json=repeat) == ask(reference, "/submit_task", json=repeat)
    assert b"Already submitted" in ask(served, "/submit_task", json=repeat)[2]
    # Refused after the submission: the route's words.
    done = ask(served, "/request_agent", json=registration("alice"))
    assert done == ask(reference, "/request_agent", json=registration("alice")) and b"already submitted" in done[2]


def test_what_the_hot_layer_does_not_serve_reaches_the_routes(runtime: Runtime, run: RunContext) -> None:
    served, reference = apps(runtime, run)
    agent_id = httpx.Response(200, content=ask(served, "/request_agent", json=registration("bob"))[2]).json()[
        "data"]["agent_id"]
    # A form: the route's form parsing (the answers as JSON text in final_string_data).
    form = ask(served, "/submit_task", data={"USED_AGENT_ID": agent_id, "final_string_data": '{"rating": "5"}'})
    assert form[0] == 200 and b'"status":"Submitted!"' in form[2], form
    refused = ask(served, "/submit_task", data={"USED_AGENT_ID": agent_id})
    assert refused[0] == 400 and b"final_string_data" in refused[2], refused

    async def get(app: Starlette) -> tuple[int, bytes]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/request_agent")
            return response.status_code, response.content
    assert asyncio.run(get(served)) == asyncio.run(get(reference))


def test_the_run_is_completed_by_its_last_submission_only(runtime: Runtime, run: RunContext) -> None:
    """The submission's own statement says whether another unit is still open (``run_has_more``): the
    run is closed by the last submission, not before."""
    from sqlalchemy import select

    from mephisto_dist.db.engine import transaction
    from mephisto_dist.db.models import TaskRun

    def completed() -> bool:
        with transaction(runtime.sessions) as session:
            return bool(session.scalar(select(TaskRun.is_completed).where(TaskRun.id == run.run_id)))

    served, _ = apps(runtime, run)
    agents = [httpx.Response(200, content=ask(served, "/request_agent", json=registration(f"w{i}", f"a{i}"))[2])
              .json()["data"]["agent_id"] for i in range(3)]
    assert all(agents)
    for i, agent_id in enumerate(agents):
        assert not completed(), i
        answer = ask(served, "/submit_task", json={"USED_AGENT_ID": agent_id, "final_data": {"i": i}})
        assert answer[0] == 200, answer
    assert completed()


def get_answer(app: Starlette, path: str, headers: dict[str, str] | None = None) -> Answer:
    return ask(app, path, "GET", headers=headers)


@pytest.fixture
def built_run(runtime: Runtime, tmp_path: Path) -> RunContext:
    """A React task's run, its build folder holding a page, a script and a file in a subfolder."""
    from mephisto_dist.runs.preparation import create_run, prepare_run
    from mephisto_dist.work.served import Served
    from tests.test_router_surface import react_task_dir

    task_dir = react_task_dir(tmp_path)
    build = task_dir / "static"  # the blueprint's extra_source_dir: copied into the run's build folder
    (build / "css").mkdir()
    (build / "task.html").write_text("<p>Rate ${sentence}</p>\n", encoding="utf-8")
    (build / "big.js").write_bytes(b"console.log('x');\n" * 200)
    (build / "css" / "page.css").write_text("p { color: red }\n", encoding="utf-8")
    (build / "request_agent").write_text("a file named as a POST route\n", encoding="utf-8")
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    return Served.for_runtime(runtime, run_id=run_id).run()


def test_the_pages_files_are_answered_as_the_routes_answer(runtime: Runtime, built_run: RunContext) -> None:
    served, reference = apps(runtime, built_run)
    etag = dict(get_answer(reference, "/task.html")[1])[b"etag"].decode()
    for path, headers in [
            ("/task_config.json", {}),
            ("/task_config.json?mephisto_task_version=2.0.3", {}),
            ("/task_config.json?mephisto_task_version=1.0&mephisto_task_version=", {}),
            ("/task.html", {}), ("/big.js", {}), ("/css/page.css", {}), ("/request_agent", {}),
            ("/big.js", {"range": "bytes=0-9"}), ("/task.html", {"if-none-match": etag}),
            ("/missing.js", {}), ("/favicon.ico", {}), ("/css", {}), ("/../../etc/passwd", {}),
            ("/", {}), ("/is_alive", {}), ("/_mephisto_dist/shell.js", {}), ("/download_file/x", {})]:
        # Twice: the first may find the run not yet read (the route reads it), the second is the hot layer's.
        for _ in range(2):
            hot = get_answer(served, path, headers)
            assert hot == get_answer(reference, path, headers), (path, headers)
    assert get_answer(served, "/task.html")[2] == b"<p>Rate ${sentence}</p>\n"


def test_the_run_files_kept_in_memory_and_the_config_never_reach_the_routes(
        runtime: Runtime, built_run: RunContext) -> None:
    from starlette.routing import Route

    served, _ = apps(runtime, built_run)
    assert get_answer(served, "/task_config.json")[0] == 200  # the run read (by the route, this first time)

    async def refuse(request: Any) -> Any:
        raise AssertionError(f"{request.url.path} reached the route")

    # The routes of the run's files and of the config now fail: what the hot layer serves never gets there.
    routes = served.router.routes
    routes[-1] = Route("/{path:path}", refuse)
    routes[[getattr(r, "path", None) for r in routes].index("/task_config.json")] = Route("/task_config.json", refuse)
    for path in ("/task_config.json", "/task.html", "/css/page.css", "/request_agent"):
        assert get_answer(served, path)[0] == 200, path
    assert get_answer(served, "/missing.js")[0] == 500  # not kept: the (failing) route's
