"""One worker's record for the review app's worker page (``review.workers.worker_detail``): approval rate,
median time per unit from start to submission, units per run, newest units first. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Qualification, Unit, Worker
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.errors import ConfigError, NotAllowed, NotFoundError
from mephisto_dist.review import reviewing
from mephisto_dist.review.decisions import Decision
from mephisto_dist.review.workers import grant_by_id, revoke_by_id, worker_detail
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration
from tests.factories import make_run, now


def test_a_workers_record_says_how_they_were_judged_and_how_long_they_took(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    first, second = make_run(factory, assignments=3, task_name="one"), make_run(factory, assignments=2, task_name="two")
    start = now()
    units = []
    for run, assignment, seconds in ((first, "a", 30), (first, "b", 90), (first, "c", 60), (second, "d", 240)):
        reg = Registration.from_request({"provider_data": {"worker_name": "ann", "assignment_id": assignment}})
        with transaction(factory) as session:
            details = claims.register_agent(session, run, reg, now=start)
            assert details.agent_id
            claims.submit_task(session, run, details.agent_id, {"a": 1}, now=start + timedelta(seconds=seconds))
            units.append(session.scalar(select(Unit.id).where(Unit.agent_id == details.agent_id)) or 0)
    reviewing.decide_units(factory, Decision.APPROVE, units[:2], now=now(), note=None, bonus=None, by="test")
    reviewing.decide_units(factory, Decision.REJECT, [units[2]], now=now(), note="off topic", bonus=None, by="test")
    with transaction(factory) as session:
        ann = session.scalar(select(Worker.id).where(Worker.worker_name == "ann"))
    assert ann is not None

    detail = worker_detail(factory, ann, limit=3)
    assert (detail.history.submitted, detail.history.accepted, detail.history.rejected) == (4, 2, 1)
    assert detail.median_seconds == pytest.approx(75.0)  # of 30, 60, 90 and 240
    assert [(t.run_id, t.task_name, t.submitted, t.accepted, t.rejected) for t in detail.runs] == [
        (second.run_id, "two", 1, 0, 0), (first.run_id, "one", 3, 2, 1)]
    assert [u.unit_id for u in detail.units] == units[::-1][:3]
    assert detail.units[0].status == UnitStatus.COMPLETED.value and detail.units[0].seconds == pytest.approx(240.0)
    with pytest.raises(NotFoundError):
        worker_detail(factory, ann + 1000)


def test_qualifications_are_granted_and_revoked_by_worker_id(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1, task_name="quals")
    reg = Registration.from_request({"provider_data": {"worker_name": "cy", "assignment_id": "q"}})
    with transaction(factory) as session:
        assert claims.register_agent(session, run, reg, now=now()).agent_id
        cy = session.scalar(select(Worker.id).where(Worker.worker_name == "cy"))
    assert cy is not None
    assert grant_by_id(factory, cy, " trusted ", 3, now=now()) == ()  # the mock provider copies nothing
    grant_by_id(factory, cy, "trusted", 5, now=now())  # a new value, not a second grant
    grant_by_id(factory, cy, "fluent", 1, now=now())
    assert worker_detail(factory, cy).qualifications == (("fluent", 1), ("trusted", 5))
    revoke_by_id(factory, cy, "trusted")
    assert worker_detail(factory, cy).qualifications == (("fluent", 1),)
    with pytest.raises(NotAllowed, match="does not hold 'trusted'"):
        revoke_by_id(factory, cy, "trusted")
    with pytest.raises(NotFoundError):
        grant_by_id(factory, cy + 1000, "brand-new", 1, now=now())
    with pytest.raises(ConfigError):
        grant_by_id(factory, cy, "   ", 1, now=now())
    with transaction(factory) as session:  # the failed grant created nothing
        assert session.scalar(select(Qualification.id).where(Qualification.name == "brand-new")) is None
