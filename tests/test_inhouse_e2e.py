"""A run on the ``inhouse`` provider end to end: the lab's annotators open the task URL with Mephisto's
inhouse identity (``?worker_id=NAME&id=ASSIGNMENT``), do the static task over HTTP at a real web server,
are reviewed (an approval with a bonus recorded, nothing paid anywhere), and a blocked annotator is
refused new work; export carries their work."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import ProviderCall, Unit
from mephisto_dist.providers import make_provider
from mephisto_dist.queue import PROVIDER_CALL
from mephisto_dist.review import workers as worker_accounts
from mephisto_dist.review.decisions import Decision, decide
from mephisto_dist.review.export import export_results
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from tests.conftest import wait_for
from tests.system import celery_worker, free_port, make_runtime, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system


def opens(server: str, url: str) -> dict[str, Any]:
    """An annotator opens ``url`` (the inhouse URL): the page asks for an agent as Mephisto's inhouse
    wrap_crowd_source.js registers one."""
    params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert set(params) == {"worker_id", "id"}
    answer = httpx.post(f"{server}/request_agent", json={"provider_data": {
        "worker_name": params["worker_id"], "assignment_id": params["id"],
        "agent_registration_id": f"{params['id']}-{params['worker_id']}", "provider_type": "inhouse"}})
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def test_lab_annotators_do_review_and_blocks_work_on_an_inhouse_run(tmp_path: Path, redis_url: str,
                                                                   sqlite_url: str) -> None:
    runtime = make_runtime(tmp_path / "data", sqlite_url, redis_url)
    port = free_port()
    task_dir = write_task_dir(tmp_path, rows=3, port=port)
    run_id = create_run(runtime, prepare_run(task_dir, "example", ["mephisto/provider=inhouse"], check_port=False))
    logs = tmp_path / "logs"
    logs.mkdir()
    with celery_worker(runtime.settings, logs / "worker.log"), \
            web_server(runtime.settings, run_id, logs / "web.log", port=port) as server:
        enqueue_launch(runtime, run_id)
        wait_for(lambda: len(_units(runtime, run_id, "launched")) == 3, timeout_s=30, message="units launched")
        provider = make_provider("inhouse")
        for number, name in enumerate(("ann", "bob"), start=1):
            agent = opens(server, str(provider.worker_url(server, name, str(number))))
            assert agent["agent_id"], agent
            sent = httpx.post(f"{server}/submit_task",
                              json={"USED_AGENT_ID": agent["agent_id"], "final_data": {"rating": "5"}})
            assert sent.status_code == 200, sent.text
        completed = wait_for(lambda: _units(runtime, run_id, "completed"), message="two units completed")
        assert len(completed) == 2

        now = datetime.now(UTC)
        with transaction(runtime.sessions) as session:
            calls = [*decide(session, completed[0], Decision.APPROVE, now=now, bonus=2.0, note="careful").call_ids,
                     *decide(session, completed[1], Decision.REJECT, now=now, note="off topic").call_ids]
        for call_id in calls:
            runtime.queue.enqueue(PROVIDER_CALL, call_id)

        def receipts() -> list[tuple[str, str | None]] | None:
            with transaction(runtime.sessions) as session:
                rows = session.execute(select(ProviderCall.action, ProviderCall.receipt)
                                       .where(ProviderCall.status == "done").order_by(ProviderCall.id)).all()
            return [(a, r) for a, r in rows] if len(rows) == 3 else None

        done = wait_for(receipts, timeout_s=30, message="the review calls")
        assert [a for a, _ in done] == ["approve", "bonus", "reject"]
        assert all(r and r.startswith("inhouse:") for _, r in done)  # recorded, nothing sent anywhere

        worker_accounts.block(runtime.sessions, "bob", "inhouse", reason="spam", qualification=None, now=now)
        refused = opens(server, str(provider.worker_url(server, "bob", "9")))
        assert not refused["agent_id"] and refused["failure_reason"]
    records: list[dict[str, Any]] = []

    def write(rows: Any) -> int:
        records.extend(rows)
        return len(records)

    export_results(runtime.sessions, write, task_name=None, run_id=run_id)
    assert sorted(r["worker_name"] for r in records) == ["ann", "bob"]
    runtime.close()


def _units(runtime: Any, run_id: int, status: str) -> list[int]:
    with transaction(runtime.sessions) as session:
        return list(session.scalars(select(Unit.id).where(Unit.task_run_id == run_id, Unit.status == status)
                                    .order_by(Unit.id)))
