"""Work after a commit is never lost, and done once: a unit's TaskRunner event is an outbox row written
with the submission, so a broker that is down at that moment delays the gold's score (beat re-sends the
row) but never loses it; and an event delivered twice counts the gold once (the handler claims the row,
the count is one statement guarded by the unit's counted marker)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist import queue
from mephisto_dist.db import outbox
from mephisto_dist.db.engine import make_engine, read_transaction, transaction
from mephisto_dist.db.migrate import upgrade
from mephisto_dist.db.models import Agent, OutboxMessage, Unit
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import KillableRedis, celery_beat, celery_worker, make_runtime, web_server
from tests.test_golds_system import GOLDS, launch
from tests.test_screening_system import grants, sentence
from tests.test_task_scripts_system import register, submit

FAST_SWEEPS = {"OUTBOX_SWEEP_EVERY_S": "0.5", "OUTBOX_RETRY_BASE_S": "0.5", "POOL_RENEW_EVERY_S": "0.5",
               "RUN_SWEEP_EVERY_S": "0.5"}


def messages(rt: Runtime) -> list[tuple[int, str, str, int]]:
    with read_transaction(rt.sessions) as session:
        return [(int(i), str(key), str(status), int(attempts)) for i, key, status, attempts in session.execute(
            select(OutboxMessage.id, OutboxMessage.key, OutboxMessage.status, OutboxMessage.attempts)
            .order_by(OutboxMessage.id))]


@pytest.mark.system
def test_a_gold_submitted_while_the_broker_is_down_is_scored_once_beat_resends(
        tmp_path: Path, database_url: str) -> None:
    server = KillableRedis(tmp_path / "redis")
    server.start()
    rt = make_runtime(tmp_path / "data", database_url, server.url, **FAST_SWEEPS)
    try:
        run_id = launch(tmp_path, rt, GOLDS)
        with web_server(rt.settings, run_id, tmp_path / "web.log") as url:
            with celery_worker(rt.settings, tmp_path / "worker.log"):
                ann = wait_for(lambda: (a := register(url, "ann", "a1"))["agent_id"] and a, timeout_s=30,
                               message="a unit for ann")
                assert sentence(ann) == "a gold sentence"
                # The launch of the real units done too: a worker stopped in the middle of it leaves them
                # to beat's stalled-launch repair, which this test is not about.
                wait_for(lambda: _created_units(rt) == 0, timeout_s=30, message="the run's units launched")
            # The broker goes away with no task in flight (kombu's worker does not always survive losing
            # Redis mid-task): the submit is what meets it.
            server.kill()
            done = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": ann["agent_id"],
                                                         "final_data": {"rating": "5"}}, timeout=30)
            assert done.status_code == 200 and done.json()["status"] == "Submitted!", done.text
            # The event is in the database, committed with the answer, though it could not be sent.
            assert [(key, status) for _, key, status, _ in messages(rt)] == [
                (f"unit_submitted:{_unit_of(rt, ann['agent_id'])}", "pending")]
            server.start()  # empty: the task that was never sent is not in it
            with celery_worker(rt.settings, tmp_path / "worker.log"), \
                    celery_beat(rt.settings, tmp_path / "beat.log"):
                wait_for(lambda: grants(rt, "ann").get("g-correct-golds") == 1, timeout_s=60,
                         message="beat to re-send the event and the validator to score the gold")
                wait_for(lambda: [status for _, _, status, _ in messages(rt)] == ["done"], timeout_s=30,
                         message="the event marked done")
                # Scored once, and ann goes on to real units.
                real = wait_for(lambda: (a := register(url, "ann", "a2"))["agent_id"] and a, timeout_s=30,
                                message="a real unit for ann")
                assert sentence(real) == "python sentence 0"
                assert grants(rt, "ann").get("g-correct-golds") == 1
    finally:
        rt.close()
        server.stop()


def _created_units(rt: Runtime) -> int:
    with read_transaction(rt.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(Unit).where(Unit.status == "created")) or 0)


def _unit_of(rt: Runtime, agent_id: str) -> int:
    with read_transaction(rt.sessions) as session:
        return int(session.scalar(select(Agent.unit_id).where(Agent.id == agent_id)) or 0)


@pytest.mark.system
def test_an_event_delivered_twice_counts_a_gold_once(tmp_path: Path, database_url: str, redis_url: str) -> None:
    rt = make_runtime(tmp_path / "data", database_url, redis_url)
    try:
        run_id = launch(tmp_path, rt, GOLDS)
        with celery_worker(rt.settings, tmp_path / "worker.log", concurrency=2), \
                web_server(rt.settings, run_id, tmp_path / "web.log") as url:
            ann = wait_for(lambda: (a := register(url, "ann", "a1"))["agent_id"] and a, timeout_s=30,
                           message="a unit for ann")
            submit(url, ann["agent_id"], "5")
            wait_for(lambda: [s for _, _, s, _ in messages(rt)] == ["done"], timeout_s=30, message="the gold's event")
            assert grants(rt, "ann").get("g-correct-golds") == 1
            real = register(url, "ann", "a2")
            submit(url, real["agent_id"], "2")
            wait_for(lambda: [s for _, _, s, _ in messages(rt)] == ["done", "done"], timeout_s=30,
                     message="the real unit's event")
            assert grants(rt, "ann").get("g-completed-count") == 1
            # Both events again, each twice at once: as if their handler had died after the hook ran
            # (its claim gone stale) and the sweep's re-send raced a re-delivery.
            with transaction(rt.sessions) as session:
                session.execute(update(OutboxMessage).values(status=outbox.PENDING))
            for message_id, _, _, _ in messages(rt):
                rt.queue.enqueue(queue.OUTBOX_MESSAGE, message_id)
                rt.queue.enqueue(queue.OUTBOX_MESSAGE, message_id)
            wait_for(lambda: [s for _, _, s, _ in messages(rt)] == ["done", "done"], timeout_s=30,
                     message="the events carried out again")
            assert [attempts for _, _, _, attempts in messages(rt)] == [2, 2]  # one claim each
            assert {k: v for k, v in grants(rt, "ann").items() if k.startswith("g-")} == {
                "g-correct-golds": 1, "g-completed-count": 1}
    finally:
        rt.close()


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """A migrated database of the ledger's own, without processes."""
    engine = make_engine(database_url)
    upgrade(engine)
    try:
        yield sessionmaker(engine, expire_on_commit=False)
    finally:
        engine.dispose()


def test_a_message_that_keeps_failing_is_failed_then_resent(sessions: sessionmaker[Session]) -> None:
    """The ledger's states without processes: claim, a duplicate claim refused, backoff, failed after
    the last attempt, made pending again by ``review resend``."""
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        first = outbox.add(session, outbox.UNIT_SUBMITTED, "7", run_id=None, payload={"unit_id": 7}, now=now)
        again = outbox.add(session, outbox.UNIT_SUBMITTED, "7", run_id=None, payload={"unit_id": 7}, now=now)
    assert first is not None and again is None  # one message per change
    with transaction(sessions) as session:
        assert outbox.due(session, now=now, retry_base_s=1.0) == []  # its first send is under way
        assert outbox.due(session, now=now + timedelta(seconds=5), retry_base_s=1.0) == [first]
    for attempt in (1, 2):
        with transaction(sessions) as session:
            claimed = outbox.claim(session, first, now=now)
            assert claimed is not None and claimed.attempt == attempt
            assert outbox.claim(session, first, now=now) is None  # a duplicate delivery
            assert outbox.due(session, now=now, retry_base_s=1.0) == []
            failed = outbox.give_up_or_retry(session, claimed, "boom", max_attempts=2, now=now)
        assert failed == (attempt == 2)
        with transaction(sessions) as session:
            later = now + timedelta(seconds=60)
            assert outbox.due(session, now=later, retry_base_s=1.0) == ([] if failed else [first])
    with transaction(sessions) as session:
        assert session.scalar(select(OutboxMessage.status)) == outbox.FAILED
        assert outbox.reset_failed(session, None) == [first]
    with transaction(sessions) as session:
        claimed = outbox.claim(session, first, now=now)
        assert claimed is not None and claimed.attempt == 1
        assert outbox.finish(session, claimed, now=now)
        assert outbox.claim(session, first, now=now + timedelta(hours=1)) is None  # done stays done


def test_a_message_settled_by_the_work_it_asked_for_is_done_once_and_not_resent(
        sessions: sessionmaker[Session]) -> None:
    """A hosted runner's start marks its ``assignment_ready`` message done in the start's own transaction
    (``outbox.settle``): pending or claimed by another delivery, it is done after, and only the first
    settle says it did it; a rolled-back start leaves it to be sent again."""
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        ready = outbox.add(session, outbox.ASSIGNMENT_READY, "1:ab", run_id=None,
                           payload={"assignment_id": 1, "agent_ids": ["a", "b"]}, now=now)
        claimed_elsewhere = outbox.add(session, outbox.ASSIGNMENT_READY, "2:cd", run_id=None,
                                       payload={"assignment_id": 2, "agent_ids": ["c", "d"]}, now=now)
    assert ready is not None and claimed_elsewhere is not None
    with read_transaction(sessions) as session:
        assert outbox.unfinished(session, ready) == (outbox.ASSIGNMENT_READY,
                                                     {"assignment_id": 1, "agent_ids": ["a", "b"]})
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        assert outbox.settle(session, ready, now=now)
        raise RuntimeError("the start failed: its agents' moves and the settle roll back together")
    with transaction(sessions) as session:
        assert outbox.due(session, now=now + timedelta(seconds=5), retry_base_s=1.0) == [ready, claimed_elsewhere]
        assert outbox.claim(session, claimed_elsewhere, now=now) is not None  # the default queue's delivery
    with transaction(sessions) as session:
        assert outbox.settle(session, ready, now=now)
        assert outbox.settle(session, claimed_elsewhere, now=now)
        assert not outbox.settle(session, ready, now=now), "done once"
    with transaction(sessions) as session:
        assert outbox.unfinished(session, ready) is None
        assert outbox.due(session, now=now + timedelta(hours=1), retry_base_s=1.0) == []
        assert outbox.claim(session, ready, now=now + timedelta(hours=1)) is None
