"""Review batches (``review.batches``), in this process against a real database and Redis: a batch is
refused whole when a unit is wrong, worked chunk by chunk, handed to a message of its own after its time
slice, skips a unit someone else decided meanwhile, and a delivery of a finished batch decides nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from mephisto_dist.db import outbox
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import OutboxMessage, ProviderCall, ReviewBatch, Unit, UnitReview
from mephisto_dist.errors import NotFoundError
from mephisto_dist.review import batches, reviewing
from mephisto_dist.review.decisions import Decision, NotReviewable, ReviewError
from mephisto_dist.runners import events
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration
from tests.factories import make_run, now


def completed_units(runtime: Any, count: int) -> tuple[int, list[int]]:
    run = make_run(runtime.sessions, assignments=count + 1, task_name="batches")
    unit_ids = []
    with transaction(runtime.sessions) as session:
        for index in range(count):
            reg = Registration.from_request({"provider_data": {"worker_name": f"w{index % 3}",
                                                               "assignment_id": f"a{index}"}})
            details = claims.register_agent(session, run, reg, now=now())
            assert details.agent_id
            claims.submit_task(session, run, details.agent_id, {"n": index}, now=now())
            unit_ids.append(int(session.scalar(select(Unit.id).where(Unit.agent_id == details.agent_id)) or 0))
    return run.run_id, unit_ids


def counts(runtime: Any) -> tuple[int, int, int]:
    with transaction(runtime.sessions) as session:
        return (int(session.scalar(select(func.count()).select_from(ReviewBatch)) or 0),
                int(session.scalar(select(func.count()).select_from(OutboxMessage)
                                   .where(OutboxMessage.kind == outbox.REVIEW_BATCH)) or 0),
                int(session.scalar(select(func.count()).select_from(UnitReview)) or 0))


def test_a_batch_with_a_wrong_unit_or_decision_is_refused_whole(runtime: Any) -> None:
    run_id, unit_ids = completed_units(runtime, 2)
    with transaction(runtime.sessions) as session:
        launched = int(session.scalar(select(Unit.id).where(Unit.task_run_id == run_id, Unit.status == "launched"))
                       or 0)
    refusals: list[tuple[list[int], dict[str, Any], type[Exception], str]] = [
        ([*unit_ids, 999999], {}, NotFoundError, "unit 999999 does not exist"),
        ([*unit_ids, launched], {}, NotReviewable, f"unit {launched} is launched"),
        (unit_ids, {"bonus": 1.0}, ReviewError, "a bonus needs a reason"),
        ([], {}, ReviewError, "no unit to decide"),
    ]
    for ids, extra, error, message in refusals:
        with pytest.raises(error, match=message):
            batches.start_batch(runtime.sessions, Decision.APPROVE, ids, run_id=run_id, note=extra.get("note"),
                                bonus=extra.get("bonus"), by="app:ada", now=now())
    assert counts(runtime) == (0, 0, 0)


def test_a_batch_is_worked_in_chunks_handed_over_and_skips_what_was_decided_meanwhile(runtime: Any) -> None:
    run_id, unit_ids = completed_units(runtime, 7)
    started = batches.start_batch(runtime.sessions, Decision.APPROVE, unit_ids, run_id=run_id, note=None,
                                  bonus=None, by="app:ada", now=now())
    assert (started.batch.total, started.batch.worked, started.batch.finished) == (7, 0, False)
    reviewing.decide_unit(runtime.sessions, unit_ids[4], Decision.REJECT, now=now(), note="off topic",
                          bonus=None, by="cli:ben")  # another reviewer, meanwhile

    # A slice of no time: one chunk, then the rest goes to a message of its own (sent to Redis).
    first = batches.work_batch(runtime, started.batch.batch_id, slice_s=0.0, chunk_units=3)
    assert (first.worked, first.decided, first.skipped, first.finished) == (3, 3, 0, False)
    with transaction(runtime.sessions) as session:
        keys = sorted(session.scalars(select(OutboxMessage.key).where(OutboxMessage.kind == outbox.REVIEW_BATCH)))
    batch_id = started.batch.batch_id
    assert keys == sorted([f"review_batch:{batch_id}:0", f"review_batch:{batch_id}:3"])

    rest = batches.work_batch(runtime, batch_id, slice_s=None, chunk_units=3)
    assert (rest.worked, rest.decided, rest.skipped, rest.finished) == (7, 6, 1, True)
    assert rest.last_skip == f"unit {unit_ids[4]} was decided by someone else meanwhile (it is rejected)"

    # Both messages delivered late (a re-sent sweep, a duplicate): the batch is finished, nothing is decided.
    with transaction(runtime.sessions) as session:
        message_ids = list(session.scalars(select(OutboxMessage.id).where(OutboxMessage.kind == outbox.REVIEW_BATCH)))
    for message_id in message_ids:
        assert events.deliver(runtime, message_id, batches.EVENTS) is not None
    with transaction(runtime.sessions) as session:
        reviews = sorted(session.execute(select(UnitReview.unit_id, UnitReview.status, UnitReview.decided_by)).all())
        approvals = list(session.scalars(select(ProviderCall.idempotency_key).where(ProviderCall.action == "approve")))
        statuses = set(session.scalars(select(OutboxMessage.status).where(OutboxMessage.kind == outbox.REVIEW_BATCH)))
    assert reviews == sorted([(u, "accepted", "app:ada") for i, u in enumerate(unit_ids) if i != 4]
                             + [(unit_ids[4], "rejected", "cli:ben")])
    assert sorted(approvals) == sorted(f"approve:{u}" for i, u in enumerate(unit_ids) if i != 4)
    assert statuses == {"done"}
    assert batches.batch_progress(runtime.sessions, batch_id).decided == 6
