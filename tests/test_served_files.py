"""What the worker pages ask of every request answered without redoing it: the served run from the
resolver's cache (no thread while it is fresh) and ``/task_config.json`` rendered once per run context,
the same body ``JSONResponse`` gave. The real app, called in-process, on a real run (SQLite, Redis)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from starlette.responses import JSONResponse

from mephisto_dist.agents import RunContext
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.launcher import create_run, prepare_run
from mephisto_dist.runtime import Runtime
from mephisto_dist.services import served
from mephisto_dist.services.served import RESOLVE_CACHE_S, RunResolver
from mephisto_dist.web.app import create_app
from mephisto_dist.web.frontend import RenderedFrontend, frontend_config
from mephisto_dist.web.routes.pages import STATIC_DIR
from tests.system import make_runtime
from tests.test_router_surface import react_task_dir


@pytest.fixture
def runtime(tmp_path: Path, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'db.sqlite'}", redis_url)
    yield rt
    rt.close()


@pytest.fixture
def run_id(tmp_path: Path, runtime: Runtime) -> int:
    return create_run(runtime, prepare_run(react_task_dir(tmp_path), "example", [], check_port=False))


def requests(runtime: Runtime, run_id: int, *calls: tuple[str, str, dict[str, str]]) -> list[httpx.Response]:
    """Each (method, path, headers) in turn, from one app (one web process's caches)."""
    async def go() -> list[httpx.Response]:
        app = create_app(runtime, run_id=run_id)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return [await client.request(method, path, headers=headers) for method, path, headers in calls]
    return asyncio.run(go())


def get(path: str, **headers: str) -> tuple[str, str, dict[str, str]]:
    return ("GET", path, {name.replace("_", "-"): value for name, value in headers.items()})


def served_run(runtime: Runtime, run_id: int) -> RunContext:
    return served.Served.for_runtime(runtime, run_id=run_id).run()


def test_task_config_is_frontend_config_as_json(runtime: Runtime, run_id: int) -> None:
    run = served_run(runtime, run_id)
    first, second, page = requests(runtime, run_id, get("/task_config.json"), get("/task_config.json"),
                                   get("/_mephisto_dist/shell.js"))
    expected = JSONResponse(frontend_config(run.config, run.hooks))
    for answer in (first, second):
        assert answer.status_code == 200 and answer.content == expected.body
        assert answer.headers["content-type"] == expected.headers["content-type"] == "application/json"
    assert page.status_code == 200 and page.content == (STATIC_DIR / "shell.js").read_bytes()


def test_the_frontend_is_rendered_again_for_a_new_run_context(runtime: Runtime, run_id: int) -> None:
    run = served_run(runtime, run_id)
    rendered = RenderedFrontend()
    assert rendered.body(run) is rendered.body(run)
    assert rendered.config(run)["task_title"] == "Router surface"
    config = {**run.config, "task": {**run.config["task"], "task_title": "Renamed"}}
    assert rendered.config(dataclasses.replace(run, config=config))["task_title"] == "Renamed"
    assert b'"task_title":"Renamed"' in rendered.body(dataclasses.replace(run, config=config))


def test_the_resolver_answers_from_its_cache_only_while_current_would(runtime: Runtime, run_id: int,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = RunResolver(runtime, run_id, None)
    assert fixed.cached() is None
    fixed_run = fixed.current()
    assert fixed.cached() is fixed_run
    with transaction(runtime.sessions) as session:
        session.execute(update(TaskRun).where(TaskRun.id == run_id).values(architect_type="local"))
    clock = [1000.0]
    monkeypatch.setattr(served.time, "monotonic", lambda: clock[0])
    by_port = RunResolver(runtime, None, None)
    assert by_port.cached() is None
    run = by_port.current()
    clock[0] += RESOLVE_CACHE_S / 2
    assert by_port.cached() is run and fixed.cached() is fixed_run
    clock[0] += RESOLVE_CACHE_S
    assert by_port.cached() is None and fixed.cached() is fixed_run
    assert by_port.current() is not run and by_port.cached() is not None  # read again, then cached
