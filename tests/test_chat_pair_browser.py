"""examples/chat_pair_task in Chromium: its run_task.py (a registered blueprint whose concurrent TaskRunner
relays messages) launched with --detach, a Celery worker, the runner worker and a web process; its
hand-written page (chat.js, no build step) on two tabs with two workers: the first waits for a partner, both
chat two turns, submit when the runner says task_done, and the export has the conversation."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mephisto_dist.db.engine import transaction
from mephisto_dist.review.export import unit_records
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import ROOT, celery_worker, child_env, free_port, make_runtime, runner_worker, web_server

pytestmark = [pytest.mark.browser, pytest.mark.system]

EXAMPLE = ROOT / "examples" / "chat_pair_task"
PAGE_MS = 30_000


@pytest.fixture
def runtime(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url)
    yield rt
    rt.close()


def open_chat(browser: Any, base_url: str, worker: str) -> Any:
    page = browser.new_context(viewport={"width": 900, "height": 700}).new_page()
    page.set_default_timeout(PAGE_MS)
    page.goto(f"{base_url}/?worker_id={worker}&assignment_id={uuid.uuid4().hex[:6]}")
    page.wait_for_selector("#messages")
    return page


def status_of(page: Any) -> str:
    return str(page.get_attribute("#status", "data-status") or "")


def say(page: Any, text: str) -> None:
    page.fill("#message", text)
    page.click("#send")


def partner_lines(page: Any) -> list[str]:
    return [str(t) for t in page.locator(".message.partner").all_inner_texts()]


def test_two_workers_pair_chat_two_turns_and_submit(tmp_path: Path, runtime: Runtime, browser: Any) -> None:
    launched = subprocess.run(
        [sys.executable, "-m", "mephisto_dist.cli.app", "run", str(EXAMPLE), "--detach", "-q",
         f"mephisto.task.task_name=chat-{uuid.uuid4().hex[:6]}", f"mephisto.architect.port={free_port()}"],
        cwd=ROOT, env=child_env(runtime.settings), capture_output=True, text=True, timeout=120, check=False)
    assert launched.returncode == 0, launched.stderr
    run_id = int(launched.stdout.strip().splitlines()[-1])
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            runner_worker(runtime.settings, tmp_path / "runner.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as web:
        alice = open_chat(browser, web, "alice")
        wait_for(lambda: status_of(alice) == "waiting", timeout_s=20, message="alice to wait for a partner")
        assert "Waiting for a partner" in alice.inner_text("#status")
        assert alice.is_disabled("#message")
        alice.screenshot(path=str(tmp_path / "chat-waiting.png"))
        bob = open_chat(browser, web, "bob")
        for page in (alice, bob):
            wait_for(lambda page=page: status_of(page) == "in task", timeout_s=30, message="the chat to start")
            page.wait_for_selector("text=You are speaker")
        # The runner asks speaker 0 (the first to claim) first, then speaker 1, for each of two turns.
        for turn, (first, second) in enumerate([("How is the weather where you are?", "Sunny and warm."),
                                                ("Lucky you, it rains here.", "Bring an umbrella then!")]):
            say(alice, first)
            wait_for(lambda first=first: first in " ".join(partner_lines(bob)), message=f"turn {turn}: to bob")
            say(bob, second)
            wait_for(lambda second=second: second in " ".join(partner_lines(alice)), message=f"turn {turn}: to alice")
        for page in (alice, bob):
            page.wait_for_selector("#submit", state="visible")
        alice.screenshot(path=str(tmp_path / "chat-done.png"))
        bob.fill("#rating", "4")
        for page in (alice, bob):
            page.click("#submit")
            page.wait_for_selector("#thanks")
    with transaction(runtime.sessions) as session:
        records = list(unit_records(session, [run_id]))
    submitted = {r["worker_name"]: r for r in records if r["status"] == "completed"}
    assert set(submitted) == {"alice", "bob"}
    assert submitted["alice"]["data"]["outputs"] == {"rating": 5}
    assert submitted["bob"]["data"]["outputs"] == {"rating": 4}
    transcript = [(m["direction"], m["data"].get("text")) for m in submitted["alice"]["data"]["messages"]]
    assert transcript == [("out", "You are speaker 0."),
                          ("in", "How is the weather where you are?"), ("out", "Sunny and warm."),
                          ("in", "Lucky you, it rains here."), ("out", "Bring an umbrella then!"),
                          ("out", None)]  # the runner's task_done
    said = [m["data"]["text"] for m in submitted["bob"]["data"]["messages"] if m["direction"] == "in"]
    assert said == ["Sunny and warm.", "Bring an umbrella then!"]
