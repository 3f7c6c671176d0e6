"""Tips and feedback reviewed (``review.tips``), as Mephisto's review_tips_for_task and
review_feedback_for_task do: an accepted tip is added once to the run's tips_location CSV, which the next
launch reads (``config.tips``); a rejected one is kept out; a feedback answer is marked reviewed; every
decision says who made it; a second decision changes nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from mephisto_dist.config.tips import read_tips
from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Agent, TaskRun, Unit
from mephisto_dist.domain.metadata import merge_metadata
from mephisto_dist.errors import ConfigError, NotFoundError
from mephisto_dist.review import tips
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration
from tests.factories import make_run, now


def _run_with_notes(engine: Engine, tips_location: Path | None) -> tuple[object, int, int]:
    """A run with two submitted units: ann's with two tips and a feedback answer, bob's with nothing."""
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=2, task_name="tips-task")
    ids = (f"n{i}" for i in itertools.count())
    units = []
    for worker in ("ann", "bob"):
        reg = Registration.from_request({"provider_data": {"worker_name": worker, "assignment_id": worker}})
        with transaction(factory) as session:
            details = claims.register_agent(session, run, reg, now=now())
            assert details.agent_id
            claims.submit_task(session, run, details.agent_id, {"answer": "yes"}, now=now())
            units.append(session.scalar(select(Unit.id).where(Unit.agent_id == details.agent_id)) or 0)
            if worker == "ann":
                agent = session.get(Agent, details.agent_id)
                assert agent is not None
                metadata = merge_metadata(None, {"tips": {"header": "Speed", "text": "Read the whole sentence, then rate."}}, lambda: next(ids))
                metadata = merge_metadata(metadata, {"tips": {"header": "", "text": "Spam, spam, spam"}}, lambda: next(ids))
                metadata = merge_metadata(metadata, {"feedback": {"data": [{"question": "Was it clear?", "text": "Mostly"}]}},
                                          lambda: next(ids))
                agent.task_metadata = metadata
    if tips_location is not None:
        with transaction(factory) as session:
            config = dict(session.scalar(select(TaskRun.config).where(TaskRun.id == run.run_id)) or {})
            config["blueprint"] = {**config.get("blueprint", {}), "tips_location": str(tips_location)}
            session.execute(update(TaskRun).where(TaskRun.id == run.run_id).values(config=config))
    return factory, run.run_id, units[0]


def test_an_accepted_tip_is_added_once_to_the_tips_file_the_next_launch_reads(engine: Engine, tmp_path: Path) -> None:
    location = tmp_path / "tips" / "tips.csv"
    factory, run_id, unit_id = _run_with_notes(engine, location)
    waiting = tips.pending(factory, run_id=run_id)
    assert [(n.kind, n.header, n.text) for n in waiting] == [
        ("tip", "Speed", "Read the whole sentence, then rate."), ("tip", "", "Spam, spam, spam"),
        ("feedback", "Was it clear?", "Mostly")]
    assert {n.tips_location for n in waiting if n.kind == "tip"} == {str(location)}
    good, spam, feedback = waiting

    assert tips.decide_tip(factory, unit_id, good.note_id, accept=True, reviewer="app:ada", now=now())
    assert not tips.decide_tip(factory, unit_id, good.note_id, accept=True, reviewer="app:ben", now=now())
    assert not tips.decide_tip(factory, unit_id, good.note_id, accept=False, reviewer="app:ben", now=now())
    assert tips.decide_tip(factory, unit_id, spam.note_id, accept=False, reviewer="app:ben", now=now())
    assert tips.mark_feedback_reviewed(factory, unit_id, feedback.note_id, reviewer="app:ada", now=now())
    assert not tips.mark_feedback_reviewed(factory, unit_id, feedback.note_id, reviewer="app:ada", now=now())
    assert tips.pending(factory, run_id=run_id) == []

    assert read_tips({"tips_location": str(location)}) == [
        {"header": "Speed", "text": "Read the whole sentence, then rate."}]
    with transaction(factory) as session:
        metadata = session.scalar(select(Agent.task_metadata).join(Unit, Unit.agent_id == Agent.id)
                                  .where(Unit.id == unit_id)) or {}
    decided = {t["text"]: t for t in metadata["tips"]}
    assert decided["Read the whole sentence, then rate."]["accepted"] is True
    assert decided["Read the whole sentence, then rate."]["decided_by"] == "app:ada"
    assert decided["Spam, spam, spam"]["removed"] is True and decided["Spam, spam, spam"]["accepted"] is False
    assert metadata["feedback"][0]["reviewed"] is True and metadata["feedback"][0]["decided_by"] == "app:ada"


def test_a_tip_already_in_the_file_is_not_written_twice(tmp_path: Path) -> None:
    location = tmp_path / "tips.csv"
    location.write_text("header,text\nSpeed,Read it all")  # hand-edited: no newline at the end
    assert not tips.add_tip_row(location, "Speed", "Read it all")
    assert tips.add_tip_row(location, "", "Look at the picture, too")
    assert read_tips({"tips_location": str(location)}) == [
        {"header": "Speed", "text": "Read it all"}, {"header": "", "text": "Look at the picture, too"}]


def test_a_tip_cannot_be_accepted_without_a_tips_file_nor_a_forged_one_decided(engine: Engine) -> None:
    factory, run_id, unit_id = _run_with_notes(engine, None)
    tip = tips.pending(factory, run_id=run_id)[0]
    assert tip.tips_location is None
    with pytest.raises(ConfigError, match="tips_location"):
        tips.decide_tip(factory, unit_id, tip.note_id, accept=True, reviewer="app:ada", now=now())
    with pytest.raises(NotFoundError, match="no tip 'forged'"):
        tips.decide_tip(factory, unit_id, "forged", accept=False, reviewer="app:ada", now=now())
    assert len(tips.pending(factory, run_id=run_id)) == 3  # nothing was decided
    assert tips.decide_tip(factory, unit_id, tip.note_id, accept=False, reviewer="app:ada", now=now())
