"""A database blip (a restart, a failover) costs a worker nothing: the web process waits it out and the
submit is recorded, once; only an outage longer than ``OUTAGE_WAIT_S`` reaches the worker, as the one-line
503, and the shell page then keeps the answers and sends them again by itself.

The blip is a TCP proxy of the test's own in front of PostgreSQL, which drops every connection and closes
new ones for a while: the shared PostgreSQL server is never restarted."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import Agent, Unit
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from mephisto_dist.web.errors import BACKEND_DOWN
from tests.conftest import wait_for
from tests.system import celery_worker, make_runtime, register, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

OUTAGE_WAIT_S = 6.0
BLIP_S = 3.0


class CuttableProxy:
    """Forwards TCP connections to ``upstream``; ``cut`` closes every one and closes each new one at
    once until ``restore``: what clients of a restarting server see."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self._down = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.refused = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._down.is_set():
                self.refused += 1
                _drop(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _drop(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()

    def cut(self) -> None:
        self._down.set()
        with self._lock:
            dropped, self._open = self._open, []
        for connection in dropped:
            _drop(connection)

    def restore(self) -> None:
        self._down.clear()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(5)
        self.listener.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        _drop(source)
        _drop(target)


def _drop(connection: socket.socket) -> None:
    with suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        connection.close()


@dataclass
class Blip:
    rt: Runtime
    proxy: CuttableProxy
    url: str
    run_id: int
    web_log: Path

    def outputs(self, agent_id: str) -> tuple[str, str, Any]:
        """(agent status, unit status, stored answer) read straight from PostgreSQL."""
        with read_transaction(self.rt.sessions) as session:
            agent = session.get(Agent, agent_id)
            assert agent is not None
            unit = session.get(Unit, agent.unit_id)
            assert unit is not None
            return agent.status, unit.status, agent.outputs


@pytest.fixture
def blip(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Blip]:
    """A static task's run on PostgreSQL, units launched by a Celery worker that reaches the database
    directly, served by a web process that reaches it through the proxy."""
    rt = make_runtime(tmp_path / "data", pg_url, redis_url, OUTAGE_WAIT_S=str(OUTAGE_WAIT_S))
    url = make_url(pg_url)
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    web_settings = replace(rt.settings, database_url=url.set(host="127.0.0.1", port=proxy.port)
                           .render_as_string(hide_password=False))
    try:
        task_dir = write_task_dir(tmp_path, rows=4, architect="mock")
        run_id = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))
        web_log = tmp_path / "web.log"
        with celery_worker(rt.settings, tmp_path / "worker.log"), \
                web_server(web_settings, run_id, web_log) as web_url:
            enqueue_launch(rt, run_id)

            def launched() -> bool:
                with read_transaction(rt.sessions) as session:
                    return list(session.scalars(select(Unit.status).where(Unit.task_run_id == run_id))) \
                        == ["launched"] * 4
            wait_for(launched, timeout_s=30, message="the units to be launched")
            yield Blip(rt, proxy, web_url, run_id, web_log)
    finally:
        proxy.close()
        rt.close()


def submit(blip: Blip, agent_id: str, answer: dict[str, str]) -> httpx.Response:
    return httpx.post(blip.url + "/submit_task", json={"USED_AGENT_ID": agent_id, "final_data": answer},
                      timeout=OUTAGE_WAIT_S + 20)


def test_a_blip_is_waited_out_and_a_longer_outage_is_the_one_line_503(blip: Blip) -> None:
    first = register(blip.url, "w1", "a1")["agent_id"]
    second = register(blip.url, "w2", "a2")["agent_id"]

    # A blip while a worker submits: every connection dropped, new ones closed, for BLIP_S.
    blip.proxy.cut()
    threading.Timer(BLIP_S, blip.proxy.restore).start()
    started = time.monotonic()
    done = submit(blip, first, {"rating": "5"})
    assert done.status_code == 200 and done.json()["status"] == "Submitted!", done.text
    assert time.monotonic() - started >= BLIP_S - 0.5  # it did meet the blip, and waited it out
    assert blip.proxy.refused > 0
    assert blip.outputs(first) == ("completed", "completed", {"rating": "5"})
    log = blip.web_log.read_text()
    assert f"waiting up to {OUTAGE_WAIT_S:g} s for it to come back" in log, log
    assert "submit_task: done after waiting out an outage" in log, log
    # Recorded once: the same submit again (a page retrying) keeps the first answer.
    again = submit(blip, first, {"rating": "1"})
    assert again.status_code == 200 and again.json()["status"] == "Already submitted", again.text
    assert blip.outputs(first) == ("completed", "completed", {"rating": "5"})

    # An outage longer than the wait reaches the worker, in one line, with nothing recorded.
    blip.proxy.cut()
    started = time.monotonic()
    refused = submit(blip, second, {"rating": "1"})
    assert refused.status_code == 503 and refused.json() == {"error": BACKEND_DOWN}, refused.text
    assert OUTAGE_WAIT_S - 1 <= time.monotonic() - started <= OUTAGE_WAIT_S + 5
    blip.proxy.restore()
    assert blip.outputs(second)[:2] == ("in task", "assigned")
    assert "the outage outlasted" in blip.web_log.read_text()
    later = submit(blip, second, {"rating": "1"})
    assert later.status_code == 200 and later.json()["status"] == "Submitted!", later.text
    assert blip.outputs(second) == ("completed", "completed", {"rating": "1"})


@pytest.mark.browser
def test_the_shell_page_keeps_the_answers_and_sends_them_again_after_a_long_outage(
    blip: Blip, browser: Any, tmp_path: Path,
) -> None:
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{blip.url}/?worker_id=w3&assignment_id=a3")
    page.wait_for_selector("#task-form:not([hidden]) #sentence")
    page.select_option("select[name=rating]", "5")

    blip.proxy.cut()
    page.click("#submit-button")
    # The server waits out OUTAGE_WAIT_S, answers 503, and the page says it will send the answers again.
    page.wait_for_selector("#shell-status.retrying >> text=will be sent again", timeout=(OUTAGE_WAIT_S + 10) * 1000)
    said = page.locator("#shell-status").inner_text()
    assert "Your answers are kept" in said, said
    assert page.locator("select[name=rating]").input_value() == "5"
    page.screenshot(path=str(tmp_path / "retrying.png"), full_page=True)
    blip.proxy.restore()
    page.wait_for_selector("#shell-status.done", timeout=(OUTAGE_WAIT_S + 40) * 1000)
    assert "Thank you" in page.locator("#shell-status").inner_text()
    page.screenshot(path=str(tmp_path / "submitted-after-retry.png"), full_page=True)
    agent_id = page.evaluate("window.mephistoAgentId")
    status, unit_status, outputs = blip.outputs(agent_id)
    assert (status, unit_status) == ("completed", "completed") and outputs["rating"] == "5", outputs
    context.close()
