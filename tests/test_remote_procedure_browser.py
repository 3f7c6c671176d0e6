"""examples/remote_procedure_task in Chromium: its run_task.py (SharedRemoteProcedureTaskState with a
closure in its function_registry) launched with --detach, served by two web processes and worked by two
Celery workers; the React page on mephisto-task's useMephistoRemoteProcedureTask (2.0.4 from npm) calls
the slow Python function over the websocket; a page reloaded mid-task gets its past calls back; the
calls are exported with the unit."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mephisto_dist.compat.bundle import build_bundle
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import RemoteCall
from mephisto_dist.review.export import unit_records
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import ROOT, celery_worker, child_env, free_port, make_runtime, web_server

pytestmark = [pytest.mark.browser, pytest.mark.system]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "remote_procedure_task"
PAGE_MS = 30_000


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example, its webapp built once (npm install from the registry, npm run dev)."""
    target = tmp_path_factory.mktemp("rp") / "remote_procedure_task"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("node_modules", "build"))
    build_bundle(target, force_rebuild=True, post_install_script=None, log_path=target / "npm.log",
                 say=lambda text: None)
    return target


@pytest.fixture
def runtime(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url)
    yield rt
    rt.close()


def open_task(browser: Any, base_url: str, worker: str) -> Any:
    page = browser.new_context().new_page()
    page.set_default_timeout(PAGE_MS)
    page.goto(f"{base_url}/?worker_id={worker}&assignment_id={uuid.uuid4().hex[:6]}")
    page.wait_for_selector("#ask")
    return page


def test_pages_on_two_web_processes_call_the_slow_function_and_submit(
        tmp_path: Path, task_dir: Path, runtime: Runtime, browser: Any) -> None:
    launched = subprocess.run(
        [sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir), "--detach", "--quiet",
         f"mephisto.task.task_name=rp-{uuid.uuid4().hex[:6]}", f"mephisto.architect.port={free_port()}"],
        cwd=ROOT, env=child_env(runtime.settings), capture_output=True, text=True, timeout=120, check=False)
    assert launched.returncode == 0, launched.stderr
    run_id = int(launched.stdout.strip().splitlines()[-1])
    with ExitStack() as stack:
        webs = [stack.enter_context(web_server(runtime.settings, run_id, tmp_path / f"web{i}.log")) for i in (1, 2)]
        for tag in ("w1", "w2"):
            stack.enter_context(celery_worker(runtime.settings, tmp_path / f"{tag}.log", concurrency=1, name=tag))
        pages = [open_task(browser, web, f"worker{i}") for i, web in enumerate(webs)]
        for page in pages:
            assert page.inner_text("#calls-before") == "0 earlier call(s)"
            page.fill("#text", "What a wonderful and happy day")
            page.click("#ask")
        for page in pages:
            page.wait_for_selector("#answer")
            assert page.inner_text("#answer") == "positive (2)"
        # A reload mid-task is a reconnection: the same agent, its earlier call in its init data.
        pages[0].reload()
        pages[0].wait_for_selector("#ask")
        assert pages[0].inner_text("#calls-before") == "1 earlier call(s)"
        pages[0].fill("#text", "An awful, terrible soup")
        pages[0].click("#ask")
        # Clicked at once, the call is queued while the new socket is still opening: it may reach the
        # server before the socket's alive (tests/test_live.py checks that order on purpose).
        pages[0].wait_for_selector("#answer")
        assert pages[0].inner_text("#answer") == "negative (-2)"
        for page in pages:
            page.click("#submit")
            page.wait_for_selector("#done")
        wait_for(lambda: len(_records(runtime, run_id)) == 2, timeout_s=20, message="both submissions")
    records = _records(runtime, run_id)
    calls = sorted(len(record["data"]["requests"]) for record in records)
    assert calls == [1, 2]
    for record in records:
        assert record["data"]["outputs"]["model_answer"]["label"] in ("positive", "negative")
        assert all(call["status"] == "answered" for call in record["data"]["requests"])
    with transaction(runtime.sessions) as session:
        assert set(session.scalars(select(RemoteCall.target))) == {"classify"}


def _records(rt: Runtime, run_id: int) -> list[dict[str, Any]]:
    with transaction(rt.sessions) as session:
        return list(unit_records(session, [run_id]))
