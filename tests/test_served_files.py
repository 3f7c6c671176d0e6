"""What the worker pages ask of every request, answered without redoing it: the served run from the
resolver's cache (no thread while it is fresh), ``/task_config.json`` rendered once per run context, and
the run's built files and the shell's assets from memory, with the bodies and headers ``JSONResponse`` and
``FileResponse`` gave, conditional requests answered 304, ranges 206, traversal still refused, and each
folder's own files. The real app, called in-process, on a real run (SQLite, Redis)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from starlette.datastructures import Headers
from starlette.responses import FileResponse, JSONResponse
from starlette.types import Scope

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.runs.preparation import create_run, prepare_run
from mephisto_dist.runtime import Runtime
from mephisto_dist.web.app import create_app
from mephisto_dist.web.frontend import RenderedFrontend, frontend_config
from mephisto_dist.web.routes.pages import STATIC_DIR
from mephisto_dist.web.served_files import ServedFiles
from mephisto_dist.work import served
from mephisto_dist.work.claims import RunContext
from mephisto_dist.work.served import RESOLVE_CACHE_S, RunResolver
from tests.system import make_runtime
from tests.test_router_surface import BUNDLE, react_task_dir


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


def file_response_headers(path: Path) -> dict[str, str]:
    """The headers FileResponse sends for a file, read from the response it starts."""
    sent: list[Any] = []

    async def go() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)
        scope: Scope = {"type": "http", "method": "GET", "headers": [], "asgi": {"spec_version": "2.4"}}
        await FileResponse(path)(scope, receive, send)
    asyncio.run(go())
    return dict(Headers(raw=sent[0]["headers"]))


def test_a_built_file_answers_as_file_response_did(runtime: Runtime, run_id: int) -> None:
    build = Path(served_run(runtime, run_id).build_dir)
    expected = file_response_headers(build / "bundle.js")
    first, second, head = requests(runtime, run_id, get("/bundle.js"), get("/bundle.js"), ("HEAD", "/bundle.js", {}))
    for answer in (first, second):
        assert answer.status_code == 200 and answer.text == BUNDLE
        assert dict(answer.headers) == expected
    assert expected["content-type"].startswith("text/javascript") and expected["etag"].startswith('"')
    assert head.status_code == 200 and head.content == b"" and dict(head.headers) == expected


def test_conditional_requests_get_304_and_ranges_206(runtime: Runtime, run_id: int) -> None:
    first, = requests(runtime, run_id, get("/bundle.js"))
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    by_tag, weak, by_date, other, ranged, bad_range = requests(
        runtime, run_id, get("/bundle.js", if_none_match=etag), get("/bundle.js", if_none_match=f'"x", W/{etag}'),
        get("/bundle.js", if_modified_since=modified), get("/bundle.js", if_none_match='"other"'),
        get("/bundle.js", range="bytes=0-4"), get("/bundle.js", range=f"bytes={len(BUNDLE) + 10}-"))
    for answer in (by_tag, weak, by_date):
        assert answer.status_code == 304 and answer.content == b"" and answer.headers["etag"] == etag
    assert other.status_code == 200 and other.text == BUNDLE
    assert ranged.status_code == 206 and ranged.text == BUNDLE[:5]
    assert ranged.headers["content-range"] == f"bytes 0-4/{len(BUNDLE)}"
    assert bad_range.status_code == 416


def test_traversal_missing_files_and_the_favicon_answer_as_before(tmp_path: Path, runtime: Runtime,
                                                                   run_id: int) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    build = Path(served_run(runtime, run_id).build_dir)
    outside = os.path.relpath(tmp_path / "secret.txt", build)
    answers = requests(runtime, run_id, get("/..%2F..%2Fsecret.txt"), get(f"/{outside}"),
                       get("/" + outside.replace("/", "%2F")), get("/nope.js"), get("/favicon.ico"),
                       get("/bundle.js"), get("/..%2Fbuild%2Fbundle.js"))
    assert [answer.status_code for answer in answers[:4]] == [404, 404, 404, 404]
    assert answers[4].status_code == 204
    assert answers[5].text == BUNDLE and answers[6].text == BUNDLE  # a path back into the folder is served


def test_the_task_page_is_its_built_index_never_stored_nor_answered_304(runtime: Runtime, run_id: int) -> None:
    index = Path(served_run(runtime, run_id).build_dir) / "index.html"
    first, again = requests(runtime, run_id, get("/"), get("/", if_none_match="*"))
    for answer in (first, again):
        assert answer.status_code == 200 and answer.content == index.read_bytes()
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["content-type"] == "text/html; charset=utf-8"


def test_task_config_is_frontend_config_as_json(runtime: Runtime, run_id: int) -> None:
    run = served_run(runtime, run_id)
    first, second, page = requests(runtime, run_id, get("/task_config.json"), get("/task_config.json"),
                                   get("/_mephisto_dist/shell.js"))
    expected = JSONResponse(frontend_config(run.config, run.hooks))
    for answer in (first, second):
        assert answer.status_code == 200 and answer.content == expected.body
        assert answer.headers["content-type"] == expected.headers["content-type"] == "application/json"
    assert page.status_code == 200 and page.content == (STATIC_DIR / "shell.js").read_bytes()


def test_each_folder_serves_its_own_files_and_an_edited_file_is_read_again(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
        (folder / "page.html").write_text(f"<p>{folder.name}</p>")
    files = ServedFiles()
    for _ in range(2):
        for folder in (one, two):
            found = files.find(str(folder), "page.html")
            assert found is not None and found.body == f"<p>{folder.name}</p>".encode()
    # A run made before bundles serves its recorded folder, which can be edited.
    (one / "page.html").write_text("<p>edited, longer</p>")
    found = files.find(str(one), "page.html")
    assert found is not None and found.body == b"<p>edited, longer</p>"
    assert found.headers["content-length"] == str(len(b"<p>edited, longer</p>"))
    (one / "page.html").unlink()
    assert files.find(str(one), "page.html") is None
    assert files.find(str(one), "../two/page.html") is None


def test_large_files_are_streamed_and_the_total_kept_is_bounded(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode() * 40)
    (tmp_path / "big").write_bytes(b"x" * 200)
    files = ServedFiles(max_file_bytes=100, max_total_bytes=100)
    big = files.find(str(tmp_path), "big")
    assert big is not None and big.body is None and big.headers["content-length"] == "200"
    for name in ("a", "b", "c"):
        assert files.find(str(tmp_path), name) is not None
    # The least recently used go first: the big file's headers, then a.
    assert files._total_bytes == 80 and list(files._files) == [(str(tmp_path), name) for name in ("b", "c")]


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
