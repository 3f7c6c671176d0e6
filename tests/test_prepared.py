"""``db.prepared`` runs the hot path's statements past ``Connection.execute``: what it stores and what it
reads are what ``Connection.execute`` stores and reads (JSON, timestamps with their zone, booleans, NULL),
driver errors come out as SQLAlchemy's, listeners still hear each statement, and a statement it could
not run the same way is refused when it is first run. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Agent, Assignment, Unit, Worker
from mephisto_dist.db.prepared import Prepared, run
from mephisto_dist.db.transitions import _COMPLETE_AGENT, _COMPLETE_UNIT
from mephisto_dist.work.claims import _FIND_WORKER_STANDING, _OPEN_UNITS
from tests.factories import make_run

NOW = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)


@pytest.fixture
def ids(engine: Engine) -> Iterator[dict[str, Any]]:
    """A launched run with a worker and an agent of it working on its first unit."""
    factory = make_sessionmaker(engine)
    context = make_run(factory, assignments=3)
    with transaction(factory) as session:
        connection = session.connection()
        worker_id = connection.execute(insert(Worker).values(provider_type="mock", worker_name="w1", created_at=NOW)
                                       .returning(Worker.id)).scalar_one()
        unit_id, assignment_id = connection.execute(select(Unit.id, Unit.assignment_id).where(
            Unit.task_run_id == context.run_id).order_by(Unit.id).limit(1)).one()
        connection.execute(insert(Agent).values(
            id="agent-1", unit_id=unit_id, assignment_id=assignment_id, task_run_id=context.run_id,
            worker_id=worker_id, registration_id="a-w1", status="in task", provider_data={"k": "ü"},
            init_data={}, created_at=NOW, status_changed_at=NOW))
        connection.execute(update(Unit).where(Unit.id == unit_id).values(status="assigned", agent_id="agent-1",
                                                                          worker_id=worker_id))
    yield {"run_id": context.run_id, "worker_id": worker_id, "unit_id": unit_id, "assignment_id": assignment_id}


READS = [
    (_FIND_WORKER_STANDING, {"provider_type": "mock", "worker_name": "w1"}),
    (_FIND_WORKER_STANDING, {"provider_type": "mock", "worker_name": "nobody"}),
    (_OPEN_UNITS, {}),  # run_id filled in from the fixture
    (select(Agent.id, Agent.provider_data, Agent.created_at, Agent.outputs, Worker.is_blocked)
     .join(Worker, Worker.id == Agent.worker_id).where(Agent.id == bindparam("agent_id")), {"agent_id": "agent-1"}),
    (select(Assignment.data).where(Assignment.task_run_id == bindparam("run_id")).order_by(Assignment.id), {}),
    (text("SELECT count(*) AS n, max(id) AS top FROM unit WHERE task_run_id = :run_id"), {}),
]


@pytest.mark.parametrize("index", range(len(READS)))
def test_a_read_returns_what_connection_execute_returns(engine: Engine, ids: dict[str, Any], index: int) -> None:
    statement, params = READS[index]
    params = {"run_id": ids["run_id"], **params}
    with engine.connect() as connection:
        expected = connection.execute(statement, params).all()
        got = run(connection, statement, params).all()
    assert [tuple(row) for row in got] == [tuple(row) for row in expected]
    if expected:
        assert list(got[0]._fields) == list(expected[0]._fields)
        assert [type(value) for value in got[0]] == [type(value) for value in expected[0]]


def test_a_write_stores_what_connection_execute_stores(engine: Engine, ids: dict[str, Any]) -> None:
    outputs = {"rating": "é", "nested": [1, {"x": None}], "flag": True}
    params = {"v_id": "agent-1", "v_run_id": ids["run_id"], "v_outputs": outputs, "v_now": NOW}
    with engine.begin() as connection:
        done = run(connection, _COMPLETE_AGENT, params).first()
        assert (done.unit_id, done.worker_id) == (ids["unit_id"], ids["worker_id"])
        unit = run(connection, _COMPLETE_UNIT, {"v_unit_id": ids["unit_id"], "v_run_id": ids["run_id"],
                                                "v_now": NOW}).first()
        assert unit is not None and unit.max_concurrent_units == 0 and unit.is_completed is False
        assert unit.run_has_more  # the run's two other units are launched
        assert unit.shutdown_requested_at is None and unit.server_url == "http://localhost:3000"
        again = run(connection, _COMPLETE_AGENT, params)
        assert again.first() is None and again.rowcount == 0  # the compare-and-set: already completed
    with engine.connect() as connection:
        agent = connection.execute(select(Agent.status, Agent.outputs, Agent.submitted_at).where(
            Agent.id == "agent-1")).one()
        completed_at = connection.execute(select(Unit.completed_at).where(Unit.id == ids["unit_id"])).scalar_one()
        # The same values written by Connection.execute read back the same way.
        connection.execute(update(Unit).where(Unit.id == ids["unit_id"]).values(launched_at=NOW))
        launched_at = connection.execute(select(Unit.launched_at).where(Unit.id == ids["unit_id"])).scalar_one()
    assert agent.status == "completed" and agent.outputs == outputs
    assert agent.submitted_at == completed_at == launched_at
    assert agent.submitted_at.replace(tzinfo=UTC) == NOW


def test_listeners_hear_each_statement(engine: Engine, ids: dict[str, Any]) -> None:
    heard: list[str] = []

    def hear(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        heard.append(statement.split()[0])

    event.listen(engine, "before_cursor_execute", hear)
    try:
        with engine.connect() as connection:
            run(connection, _FIND_WORKER_STANDING, {"provider_type": "mock", "worker_name": "w1"})
    finally:
        event.remove(engine, "before_cursor_execute", hear)
    assert "SELECT" in heard


def test_a_driver_error_is_sqlalchemys(engine: Engine, ids: dict[str, Any]) -> None:
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        other = session.connection().execute(select(Unit.id).where(Unit.id != ids["unit_id"])).scalars().first()
    clash = update(Agent).where(Agent.id == bindparam("a")).values(unit_id=bindparam("u"), registration_id="a-w1")
    with engine.begin() as connection:
        connection.execute(insert(Agent).values(
            id="agent-2", unit_id=other, assignment_id=ids["assignment_id"] + 1, task_run_id=ids["run_id"],
            worker_id=ids["worker_id"], registration_id="a-w2", status="in task", provider_data={},
            init_data={}, created_at=NOW, status_changed_at=NOW + timedelta(seconds=1)))
    with pytest.raises(IntegrityError), engine.begin() as connection:
        run(connection, clash, {"a": "agent-2", "u": other})  # the registration id is unique in a run


def test_statements_it_cannot_run_the_same_way_are_refused(engine: Engine) -> None:
    with engine.connect() as connection:
        with pytest.raises(ValueError, match="IN list"):
            Prepared(select(Unit.id).where(Unit.status.in_(["a", "b"]))).execute(connection)
        with pytest.raises(ValueError, match="Python-side column defaults"):
            Prepared(insert(Worker).values(provider_type=bindparam("p"), worker_name=bindparam("w"))).execute(
                connection, {"p": "mock", "w": "x"})
        with pytest.raises(KeyError, match="worker_name"):
            run(connection, _FIND_WORKER_STANDING, {"provider_type": "mock"})


def test_the_hot_inserts_run_prepared_and_store_what_sqlalchemy_stores(engine: Engine, ids: dict[str, Any]) -> None:
    from mephisto_dist.db import unique_rows

    dialect = engine.dialect.name
    worker = {"provider_type": "mock", "worker_name": "w2", "created_at": NOW, "is_blocked": False}
    assert unique_rows._prepared(dialect, "worker", tuple(sorted(worker)), True) is not None
    # A column with a Python-side default left out: SQLAlchemy's own insert computes it.
    assert unique_rows._prepared(dialect, "worker", ("provider_type", "worker_name"), True) is None
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        new_id = unique_rows.insert_returning_id(session, "worker", worker)
        assert new_id is not None
        assert unique_rows.insert_returning_id(session, "worker", worker) is None  # exists: nothing inserted
        assert unique_rows.insert_returning_id(session, "worker", {**worker, "worker_name": "w3"}) is not None
        old_way = unique_rows.insert_returning_id(session, "worker", {"provider_type": "mock", "worker_name": "w4",
                                                                      "created_at": NOW})
        agent = {"id": "agent-9", "unit_id": ids["unit_id"] + 1, "assignment_id": ids["assignment_id"] + 1,
                 "task_run_id": ids["run_id"], "worker_id": new_id, "registration_id": "a-w2", "status": "in task",
                 "provider_data": {"hit": None, "ü": [1]}, "init_data": {}, "created_at": NOW,
                 "status_changed_at": NOW}
        assert unique_rows.insert_ignoring_conflicts(session, "agent", agent)
        assert not unique_rows.insert_ignoring_conflicts(session, "agent", {**agent, "id": "agent-10"})
    with engine.connect() as connection:
        rows = connection.execute(select(Worker.worker_name, Worker.is_blocked, Worker.created_at).where(
            Worker.id.in_([new_id, old_way])).order_by(Worker.id)).all()
        stored = connection.execute(select(Agent.provider_data, Agent.created_at).where(Agent.id == "agent-9")).one()
    assert [(name, blocked) for name, blocked, _ in rows] == [("w2", False), ("w4", False)]
    assert rows[0].created_at == rows[1].created_at
    assert stored.provider_data == agent["provider_data"] and stored.created_at.replace(tzinfo=UTC) == NOW


def _work_of(connection: Any, statement: Any, params: dict[str, Any]) -> list[str] | int:
    """What the database does for ``statement``: on PostgreSQL the rows its run read (EXPLAIN ANALYZE: those
    each step returned or filtered out), on SQLite the steps of its plan that scan a table rather than
    search an index."""
    sql = str(statement.params(params).compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    if connection.dialect.name == "postgresql":
        plan = connection.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)).scalar_one()
        return _rows_read(plan[0]["Plan"])
    steps = [row[3] for row in connection.execute(text("EXPLAIN QUERY PLAN " + sql))]
    return [step for step in steps if step.startswith("SCAN") and "CONSTANT ROW" not in step]


def _rows_read(node: dict[str, Any]) -> int:
    own = int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))
    return own + sum(_rows_read(child) for child in node.get("Plans", []))


def test_whether_a_run_has_more_does_not_read_its_done_units(engine: Engine) -> None:
    """The submission's question (``run_has_more``) looks up each open status in the run's index: with
    2,000 units done, a database with statistics (ANALYZE) reads a few rows for it, not the done units
    (the question ORed the statuses: PostgreSQL walked every done unit's index entry or the whole table at
    every submission, 934 buffers a submission by a run's 1,500th, and SQLite scanned the table)."""
    from mephisto_dist.db.transitions import _run_has_more

    factory = make_sessionmaker(engine)
    context = make_run(factory, assignments=2002, launch=False)
    with transaction(factory) as session:
        ids = list(session.scalars(select(Unit.id).where(Unit.task_run_id == context.run_id).order_by(Unit.id)))
        session.execute(update(Unit).where(Unit.id.in_(ids[:-1])).values(status="completed"))
        session.execute(update(Unit).where(Unit.id == ids[-1]).values(status="launched"))
    with engine.begin() as connection:
        connection.execute(text("ANALYZE unit"))  # this schema's table (the search path), not the database's
    question = select(_run_has_more(bindparam("v_unit_id")))
    with engine.connect() as connection:
        for unit_id, expected in ((ids[0], True), (ids[-1], False)):  # the launched unit: nothing else open
            params = {"v_unit_id": unit_id, "v_run_id": context.run_id}
            assert connection.execute(question, params).scalar_one() is expected
            work = _work_of(connection, question, params)
            if engine.dialect.name == "postgresql":
                assert isinstance(work, int) and work < 20, f"{work} rows read for one question"
            else:
                assert work == [], work
