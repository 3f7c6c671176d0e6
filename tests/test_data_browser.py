"""Results in Python (issue 22): ``DataBrowser`` answers Mephisto's DataBrowser calls from the same
records export writes, on SQLite and PostgreSQL, without SQL on the caller's side."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.db.transitions import move_units
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.errors import NotFoundError
from mephisto_dist.review.browser import DataBrowser
from mephisto_dist.review.qualifications import create_qualification, find_worker, grant
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration, RunContext
from tests.factories import make_run, now


def build(factory: Any) -> RunContext:
    """Three units of 'browse-task': ann and bob submitted, one expired; ann holds 'good-annotator'."""
    run = make_run(factory, assignments=3, task_name="browse-task")
    for worker, answer in (("ann", "yes"), ("bob", "no")):
        reg = Registration.from_request({"provider_data": {"worker_name": worker, "assignment_id": worker}})
        with transaction(factory) as session:
            details = claims.register_agent(session, run, reg, now=now())
            assert details.agent_id
            claims.submit_task(session, run, details.agent_id, {"answer": answer}, now=now())
    with transaction(factory) as session:
        left = list(session.scalars(select(Unit.id).where(Unit.status == UnitStatus.LAUNCHED.value)))
        move_units(session, left, UnitStatus.LAUNCHED, UnitStatus.EXPIRED, now=now())
        qualification_id, _ = create_qualification(session, "good-annotator", now=now())
        grant(session, qualification_id, find_worker(session, "ann").id, 1, now=now())
    return run


def test_mephisto_names_answer_from_the_export_records(engine: Engine) -> None:
    run = build(make_sessionmaker(engine))
    url = engine.url.render_as_string(hide_password=False)
    with DataBrowser(url) as browser:
        assert browser.get_task_name_list() == ["browse-task"]
        units = browser.get_units_for_task_name("browse-task")
        assert [(u.worker_name, u.get_status()) for u in units] == [("ann", "completed"), ("bob", "completed")]
        assert [u.db_id for u in browser.get_units_for_run_id(run.run_id)] == [u.db_id for u in units]
        data = browser.get_data_from_unit(units[1])
        assert data["unit_id"] == units[1].db_id and data["status"] == "completed"
        assert data["data"]["outputs"] == {"answer": "no"} and data["data"]["inputs"]["text"].startswith("item")
        assert data["task_start"] is not None and data["task_end"] is not None
        assert data["worker_name"] == "bob" and data["payment"]["reward_pending"] == 0.5
        assert browser.get_worker_with_qualification("good-annotator") == ["ann"]

        every = list(browser.iter_units(run_id=run.run_id, statuses=None))
        assert sorted(u.status for u in every) == ["completed", "completed", "expired"]
        (summary,) = browser.get_runs("browse-task")
        assert summary.run_id == run.run_id and summary.units == {"completed": 2, "expired": 1}
        assert {w.worker_name: w.submitted for w in browser.get_workers("browse-task")} == {"ann": 1, "bob": 1}


def test_unknown_names_are_one_line_errors(engine: Engine) -> None:
    build(make_sessionmaker(engine))
    with DataBrowser(engine.url.render_as_string(hide_password=False)) as browser:
        with pytest.raises(NotFoundError, match="no task named 'nope'; known task names: browse-task"):
            browser.get_units_for_task_name("nope")
        with pytest.raises(NotFoundError, match="task run 999 does not exist"):
            browser.get_units_for_run_id(999)
        with pytest.raises(NotFoundError, match="missing-qual"):
            browser.get_worker_with_qualification("missing-qual")
