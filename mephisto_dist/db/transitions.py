"""The one place statuses are written.

Every write checks the change against ``domain.status`` and applies it as a compare-and-set
(``UPDATE ... WHERE status IN (:old)``), so two processes can never both move the same row: the loser's
write matches no row and it is told so (``False`` / an empty list).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Table,
    Update,
    bindparam,
    exists,
    false,
    func,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from mephisto_dist.db import outbox
from mephisto_dist.db.models import (
    Agent,
    Assignment,
    Base,
    OnboardingAgent,
    OutboxMessage,
    RemoteCall,
    Server,
    TaskRun,
    Unit,
    Worker,
)
from mephisto_dist.db.prepared import run as run_prepared
from mephisto_dist.domain.servers import ServerStatus, check_server_transition
from mephisto_dist.domain.status import (
    AGENT_SUBMITTING,
    UNIT_DONE,
    AgentStatus,
    RemoteCallStatus,
    UnitStatus,
    check_agent_transition,
    check_remote_call_transition,
    check_unit_transition,
)

_UNIT_STAMPS = {
    UnitStatus.LAUNCHED: "launched_at",
    UnitStatus.ASSIGNED: "assigned_at",
    UnitStatus.COMPLETED: "completed_at",
}


def _as_set(old: UnitStatus | AgentStatus | Collection[Any]) -> list[Any]:
    if isinstance(old, (UnitStatus, AgentStatus)):
        return [old]
    return list(old)


@lru_cache(maxsize=256)
def _unit_update(olds: tuple[str, ...], new: str, names: tuple[str, ...]) -> Update:
    """One compiled compare-and-set per shape (old statuses, new status, fields written), built once:
    the hot path re-executes it with new parameters instead of building and compiling it each time."""
    table = _table(Unit)
    values: dict[str, Any] = {"status": new, **{name: bindparam(f"v_{name}") for name in names}}
    return (update(table)
            .where(table.c.id.in_(bindparam("v_ids", expanding=True)), table.c.status.in_(olds))
            .values(**values)
            .returning(table.c.id))


@lru_cache(maxsize=256)
def _one_unit_update(olds: tuple[str, ...], new: str, names: tuple[str, ...]) -> Update:
    """:func:`_unit_update` for one unit: ``id = :v_id`` needs no per-execution expansion of an IN list."""
    table = _table(Unit)
    values: dict[str, Any] = {"status": new, **{name: bindparam(f"v_{name}") for name in names}}
    return update(table).where(table.c.id == bindparam("v_id"), _status_in(table, olds)).values(**values)


def _status_in(table: Table, olds: tuple[str, ...]) -> Any:
    # Comparisons joined by OR, not IN: IN renders as a list expanded at every execution, which the hot
    # path's statements do without (``db.prepared``).
    return or_(*(table.c.status == old for old in olds))


@lru_cache(maxsize=256)
def _agent_update(table_name: str, olds: tuple[str, ...], new: str, names: tuple[str, ...]) -> Update:
    table = Base.metadata.tables[table_name]
    values: dict[str, Any] = {"status": new, **{name: bindparam(f"v_{name}") for name in names}}
    return update(table).where(table.c.id == bindparam("v_id"), _status_in(table, olds)).values(**values)


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_UNITS = _table(Unit)


def _unit_change(old: UnitStatus | Collection[UnitStatus], new: UnitStatus, now: datetime,
                 fields: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The checked old statuses (sorted values) and the fields a move to ``new`` writes, its stamp included."""
    olds = _as_set(old)
    for status in olds:
        check_unit_transition(status, new)
    values: dict[str, Any] = {"status_changed_at": now, **fields}
    stamp = _UNIT_STAMPS.get(new)
    if stamp is not None and stamp not in values:
        values[stamp] = now
    return tuple(sorted(s.value for s in olds)), values


def move_units(
    session: Session,
    unit_ids: Sequence[int],
    old: UnitStatus | Collection[UnitStatus],
    new: UnitStatus,
    *,
    now: datetime,
    **fields: Any,
) -> list[int]:
    """Move every listed unit that is still in one of ``old`` to ``new``; return the ids moved."""
    olds, values = _unit_change(old, new, now, fields)
    if not unit_ids:
        return []
    names = tuple(sorted(values))
    statement = _unit_update(olds, new.value, names)
    params = {"v_ids": list(unit_ids), **{f"v_{name}": values[name] for name in names}}
    return [row[0] for row in session.connection().execute(statement, params)]


def move_units_each(
    session: Session,
    changes: Sequence[tuple[int, dict[str, Any]]],
    old: UnitStatus,
    new: UnitStatus,
    *,
    now: datetime,
) -> list[int]:
    """Like :func:`move_units`, with fields of each unit's own (a provider's id, say); return the ids
    moved. One executemany compare-and-set for the batch, then one read of which rows it moved (they
    carry this call's ``now``)."""
    check_unit_transition(old, new)
    if not changes:
        return []
    if len(changes) == 1:  # one row: the RETURNING statement says directly whether it moved
        unit_id, fields = changes[0]
        return move_units(session, [unit_id], old, new, now=now, **fields)
    names = sorted({name for _, fields in changes for name in fields})
    values: dict[str, Any] = {"status": new.value, "status_changed_at": now}
    stamp = _UNIT_STAMPS.get(new)
    if stamp is not None:
        values[stamp] = now
    values.update({name: bindparam(f"v_{name}") for name in names})
    table = _table(Unit)
    statement = (update(table).where(table.c.id == bindparam("v_unit_id"), table.c.status == old.value)
                 .values(**values))
    params = [{"v_unit_id": unit_id, **{f"v_{n}": fields.get(n) for n in names}} for unit_id, fields in changes]
    session.connection().execute(statement, params)
    ids = [unit_id for unit_id, _ in changes]
    return list(session.scalars(select(Unit.id).where(
        Unit.id.in_(ids), Unit.status == new.value, Unit.status_changed_at == now)))


def move_unit(
    session: Session,
    unit_id: int,
    old: UnitStatus | Collection[UnitStatus],
    new: UnitStatus,
    *,
    now: datetime,
    **fields: Any,
) -> bool:
    """:func:`move_units` for one unit (the hot path's claims and submissions)."""
    olds, values = _unit_change(old, new, now, fields)
    names = tuple(sorted(values))
    statement = _one_unit_update(olds, new.value, names)
    params = {"v_id": unit_id, **{f"v_{name}": values[name] for name in names}}
    return bool(run_prepared(session.connection(), statement, params).rowcount)


_NEW_AGENT_COLUMNS = ("id", "unit_id", "assignment_id", "task_run_id", "worker_id", "registration_id", "status",
                      "provider_data", "init_data", "created_at", "status_changed_at")


@lru_cache(maxsize=1)
def _assign_with_new_agent() -> Update:
    # PostgreSQL's alone (its engine loads the dialect anyway): SQLite processes never import it.
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    agents = _table(Agent)
    new_agent = (postgresql_insert(agents)
                 .values({name: bindparam(f"a_{name}", type_=agents.c[name].type) for name in _NEW_AGENT_COLUMNS})
                 .on_conflict_do_nothing()
                 .returning(agents.c.id)
                 .cte("new_agent"))
    return (update(_UNITS)
            .where(_UNITS.c.id == bindparam("a_unit_id"), _UNITS.c.status == UnitStatus.LAUNCHED.value,
                   exists(select(new_agent.c.id)))
            .values(status=UnitStatus.ASSIGNED.value, agent_id=bindparam("a_id"), worker_id=bindparam("a_worker_id"),
                    status_changed_at=bindparam("a_created_at"), assigned_at=bindparam("a_created_at"))
            .returning(_UNITS.c.id))


def assign_unit_to_new_agent(session: Session, agent: dict[str, Any]) -> bool:
    """PostgreSQL, in one round trip: insert the agent (``agent``: its row, keyed by column; nothing when
    its registration, or its worker on that assignment, exists already) and, only if it was inserted,
    move its unit ``launched -> assigned`` to it. False when either did not happen: an agent inserted
    for a unit that was no longer launched is the caller's to delete."""
    check_unit_transition(UnitStatus.LAUNCHED, UnitStatus.ASSIGNED)
    params = {f"a_{name}": agent[name] for name in _NEW_AGENT_COLUMNS}
    return run_prepared(session.connection(), _assign_with_new_agent(), params).first() is not None


@lru_cache(maxsize=1)
def _claim_alone() -> Any:
    """PostgreSQL, a claim that needs nothing else in its transaction, as one statement atomic by itself:
    the run's lowest launched unit in an assignment the worker has not worked on (locked, skipping the
    units other claims hold), when no agent of the run has this registration id and the worker is not
    blocked; the worker's row made if it is new (only once there is a unit for them); the agent inserted
    (nothing on a conflict) and the unit moved ``launched -> assigned`` to it. Every step depends on the
    one before, so the statement writes all of its rows or none; the row locked is the one moved.

    The worker is looked up once (a materialised CTE, read by one-time filters): an unknown worker does
    not make the statement walk the run's launched units."""
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    workers, agents, units, assignments = _table(Worker), _AGENTS, _UNITS, _table(Assignment)
    found = (select(workers.c.id, workers.c.is_blocked)
             .where(workers.c.provider_type == bindparam("a_provider_type"),
                    workers.c.worker_name == bindparam("a_worker_name"))
             .cte("found_worker"))
    registered = agents.alias("registered")
    mine = agents.alias("mine")
    free_unit = (select(units.c.id, units.c.assignment_id)
                 .where(units.c.task_run_id == bindparam("a_task_run_id"),
                        units.c.status == UnitStatus.LAUNCHED.value,
                        ~exists().where(registered.c.task_run_id == bindparam("a_task_run_id"),
                                        registered.c.registration_id == bindparam("a_registration_id")),
                        ~exists(select(found.c.id).where(found.c.is_blocked.is_not(False))),
                        ~exists().where(mine.c.assignment_id == units.c.assignment_id,
                                        mine.c.worker_id == select(found.c.id).scalar_subquery()))
                 .order_by(units.c.id).limit(1)
                 .with_for_update(of=units, skip_locked=True)
                 .cte("free_unit"))
    made = (postgresql_insert(workers)
            .from_select(["provider_type", "worker_name", "created_at", "is_blocked"],
                         select(bindparam("a_provider_type", type_=workers.c.provider_type.type),
                                bindparam("a_worker_name", type_=workers.c.worker_name.type),
                                bindparam("a_created_at", type_=workers.c.created_at.type), false())
                         .where(exists(select(free_unit.c.id)), ~exists(select(found.c.id))),
                         include_defaults=False)
            .on_conflict_do_nothing()
            .returning(workers.c.id)
            .cte("made_worker"))
    worker = union_all(select(found.c.id), select(made.c.id)).cte("the_worker")
    given = {"unit_id": free_unit.c.id, "assignment_id": free_unit.c.assignment_id, "worker_id": worker.c.id}
    new_agent = (postgresql_insert(agents)
                 .from_select(list(_NEW_AGENT_COLUMNS),
                              select(*(given.get(name, bindparam(f"a_{name}", type_=agents.c[name].type))
                                       for name in _NEW_AGENT_COLUMNS))
                              .select_from(free_unit.join(worker, true())),
                              include_defaults=False)
                 .on_conflict_do_nothing()
                 .returning(agents.c.id, agents.c.unit_id, agents.c.worker_id)
                 .cte("new_agent"))
    assigned = (update(units)
                .where(units.c.id == new_agent.c.unit_id, units.c.status == UnitStatus.LAUNCHED.value)
                .values(status=UnitStatus.ASSIGNED.value, agent_id=new_agent.c.id, worker_id=new_agent.c.worker_id,
                        status_changed_at=bindparam("a_created_at"), assigned_at=bindparam("a_created_at"))
                .returning(units.c.id, units.c.assignment_id, units.c.worker_id)
                .cte("assigned_unit"))
    return (select(assigned.c.id.label("unit_id"), assigned.c.worker_id, assignments.c.data)
            .select_from(assigned.join(assignments, assignments.c.id == assigned.c.assignment_id)))


def claim_alone_statement(agent: dict[str, Any], worker_name: str, provider_type: str) -> tuple[Any, dict[str, Any]]:
    """PostgreSQL: :func:`_claim_alone` and its parameters for the new agent ``agent`` (its row, keyed by
    column, but for its unit, assignment and worker, which the statement finds, the worker made if new),
    to run in autocommit (``engine.single_statement``, or ``db.async_statements`` on the web's event loop).
    Its first row is the claimed unit's ``unit_id``, ``worker_id`` and assignment ``data``; none when
    nothing was written: a blocked worker, a registration seen before, no free unit, a lost race; the
    caller takes the request again in a transaction, which says which."""
    check_unit_transition(UnitStatus.LAUNCHED, UnitStatus.ASSIGNED)
    params = {f"a_{name}": value for name, value in agent.items()}
    params.update(a_worker_name=worker_name, a_provider_type=provider_type)
    return _claim_alone(), params


def move_agent(
    session: Session,
    agent_id: str,
    old: AgentStatus | Collection[AgentStatus],
    new: AgentStatus,
    *,
    now: datetime,
    **fields: Any,
) -> bool:
    return _move_agent_row(session, Agent, agent_id, old, new, now=now, onboarding=False, **fields)


_AGENTS = _table(Agent)


def move_onboarding_agent(
    session: Session,
    agent_id: str,
    old: AgentStatus | Collection[AgentStatus],
    new: AgentStatus,
    *,
    now: datetime,
    **fields: Any,
) -> bool:
    return _move_agent_row(session, OnboardingAgent, agent_id, old, new, now=now, onboarding=True, **fields)


def _move_agent_row(
    session: Session,
    model: type[Any],
    agent_id: str,
    old: AgentStatus | Collection[AgentStatus],
    new: AgentStatus,
    *,
    now: datetime,
    onboarding: bool,
    **fields: Any,
) -> bool:
    olds = _as_set(old)
    for status in olds:
        check_agent_transition(status, new, onboarding=onboarding)
    values = {"status_changed_at": now, **fields}
    names = tuple(sorted(values))
    statement = _agent_update(_table(model).name, tuple(sorted(s.value for s in olds)), new.value, names)
    params = {"v_id": agent_id, **{f"v_{name}": values[name] for name in names}}
    return bool(session.connection().execute(statement, params).rowcount)


# A submission's two compare-and-sets: the agent ``in_task | partner disconnect -> completed`` with its
# answer, returning its unit and worker; then that unit ``assigned -> completed``. The unit's WHERE on its id
# is added by each use.
_COMPLETE_AGENT = (update(_AGENTS)
                   .where(_AGENTS.c.id == bindparam("v_id"), _AGENTS.c.task_run_id == bindparam("v_run_id"),
                          # OR, not IN: an IN list is expanded per execution (db.prepared runs neither)
                          or_(*(_AGENTS.c.status == s for s in sorted(s.value for s in AGENT_SUBMITTING))))
                   .values(status=AgentStatus.COMPLETED.value, outputs=bindparam("v_outputs"),
                           status_changed_at=bindparam("v_now"), submitted_at=bindparam("v_now"))
                   .returning(_AGENTS.c.unit_id, _AGENTS.c.worker_id))
_COMPLETE_ASSIGNED_UNIT = (update(_UNITS)
                           .where(_UNITS.c.status == UnitStatus.ASSIGNED.value)
                           .values(status=UnitStatus.COMPLETED.value, status_changed_at=bindparam("v_now"),
                                   completed_at=bindparam("v_now")))
# What the refill needs to know of the unit's run (``complete_submission``).
_REFILL_COLUMNS = ("max_concurrent_units", "is_completed", "shutdown_requested_at", "server_url")
_OTHER_UNITS = _table(Unit).alias("other_unit")
_OUTBOX = _table(OutboxMessage)


def _of_the_units_run(column: Any) -> Any:
    # A correlated subquery, not UPDATE ... FROM: SQLite's RETURNING cannot name a FROM table.
    return select(column).where(TaskRun.id == _UNITS.c.task_run_id).scalar_subquery()


def _run_has_more(unit_id: Any) -> Any:
    """Whether the unit's run has another unit not done, or an outbox message (a unit's TaskRunner
    event) not carried out: ``runs.task_runs.mark_completed_if_done``'s question, asked by the
    submission's own statement (the unit itself left out: the statement moves it to completed), so that
    an open run's submission needs no statement of its own to ask it. The run is the statement's
    parameter, and on SQLite the unit too: its RETURNING names the updated table's columns unqualified,
    so a subquery on the same table would read its own columns instead.

    One EXISTS per open status, each a lookup of ``(task_run_id, status)`` in its index: one EXISTS whose
    statuses are ORed was planned by PostgreSQL (with statistics) as a walk of the run's whole index range
    with the statuses as a filter, through every unit already done, so that each submission cost more than
    the one before (a run of 1,500 units: 934 buffers and 0.42 ms at its end, issue 23)."""
    run_id: Any = bindparam("v_run_id")
    others = (exists().where(_OTHER_UNITS.c.task_run_id == run_id, _OTHER_UNITS.c.status == status.value,
                             _OTHER_UNITS.c.id != unit_id)
              for status in UnitStatus if status not in UNIT_DONE)
    events = (exists().where(_OUTBOX.c.task_run_id == run_id, _OUTBOX.c.status == status)
              for status in outbox.UNFINISHED)
    return or_(*others, *events).label("run_has_more")


# SQLite: the unit's write, after the agent's, in a second statement.
_COMPLETE_UNIT = (_COMPLETE_ASSIGNED_UNIT.where(_UNITS.c.id == bindparam("v_unit_id"))
                  .returning(_UNITS.c.launch_id,
                             *(_of_the_units_run(TaskRun.__table__.c[name]).label(name) for name in _REFILL_COLUMNS),
                             _run_has_more(bindparam("v_unit_id"))))


@lru_cache(maxsize=1)
def _complete_both() -> Any:
    """PostgreSQL: both writes in one statement (data-modifying CTEs); a row of the agent's unit and
    worker, ``completed_unit_id`` (None when the unit was no longer assigned), the refill's columns and
    ``run_has_more`` (the other units and the events as they were before the statement)."""
    runs = _table(TaskRun)
    done_agent = _COMPLETE_AGENT.cte("done_agent")
    done_unit = (_COMPLETE_ASSIGNED_UNIT.where(_UNITS.c.id == select(done_agent.c.unit_id).scalar_subquery())
                 .returning(_UNITS.c.id, _UNITS.c.launch_id, _UNITS.c.task_run_id)
                 .cte("done_unit"))
    return (select(done_agent.c.unit_id, done_agent.c.worker_id, done_unit.c.id.label("completed_unit_id"),
                   done_unit.c.launch_id, *(runs.c[name] for name in _REFILL_COLUMNS),
                   _run_has_more(done_unit.c.id))
            .select_from(done_agent.outerjoin(done_unit, true())
                         .outerjoin(runs, runs.c.id == done_unit.c.task_run_id)))


class CompletedSubmission(NamedTuple):
    unit_id: int
    worker_id: int
    unit: Any  # the unit's launch_id, its run's refill columns and run_has_more; None when it was no longer assigned


def complete_submission(session: Session, agent_id: str, run_id: int, *, outputs: dict[str, Any],
                        now: datetime) -> CompletedSubmission | None:
    """A submission's writes: the agent of the run ``in_task -> completed`` with its answer (or ``partner
    disconnect -> completed``: Mephisto lets it submit as is), then its unit ``assigned -> completed``; one
    round trip on PostgreSQL, two on SQLite. None when no such agent of the run is working (the caller reads
    it to say why). A unit that was no longer assigned comes back as ``unit=None``: the caller refuses the
    submission, and its rollback undoes the agent's write."""
    for status in AGENT_SUBMITTING:
        check_agent_transition(status, AgentStatus.COMPLETED, onboarding=False)
    check_unit_transition(UnitStatus.ASSIGNED, UnitStatus.COMPLETED)
    params = {"v_id": agent_id, "v_run_id": run_id, "v_outputs": outputs, "v_now": now}
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        row = run_prepared(connection, _complete_both(), params).first()
        if row is None:
            return None
        return CompletedSubmission(int(row.unit_id), int(row.worker_id),
                                   row if row.completed_unit_id is not None else None)
    agent = run_prepared(connection, _COMPLETE_AGENT, params).first()
    if agent is None:
        return None
    unit = run_prepared(connection, _COMPLETE_UNIT, {"v_unit_id": agent.unit_id, "v_run_id": run_id,
                                                     "v_now": now}).first()
    return CompletedSubmission(int(agent.unit_id), int(agent.worker_id), unit)


@lru_cache(maxsize=2)
def _complete_alone(bind_next: bool) -> Any:
    """PostgreSQL, for a submission that needs nothing else in its transaction: both writes in one
    statement that is atomic by itself (run in autocommit, no BEGIN or COMMIT round trips), and with
    ``bind_next`` also :func:`runs.launches.bind_next_launch`'s intent on the run's next created unit,
    bound when the unit was completed, its run is open and a cap counts its units (the run's, or
    ``v_capped``: the deployment's).

    Unlike :func:`_complete_both` it writes nothing unless the agent can submit *and* its unit is
    assigned: both rows are locked first, so neither write can miss once the other is made (there is no
    rollback to undo one). Whatever it does not write (a repeat, a stranger, a closed agent or unit) is
    for the caller to take again in a transaction, as :func:`complete_submission`."""
    agents, units, runs = _AGENTS, _UNITS, _table(TaskRun)
    target = (select(agents.c.id, agents.c.unit_id)
              .join(units, units.c.id == agents.c.unit_id)
              .where(agents.c.id == bindparam("v_id"), agents.c.task_run_id == bindparam("v_run_id"),
                     or_(*(agents.c.status == s for s in sorted(s.value for s in AGENT_SUBMITTING))),
                     units.c.status == UnitStatus.ASSIGNED.value)
              .with_for_update(of=(agents, units))
              .cte("submitting"))
    done_agent = (_COMPLETE_AGENT.where(agents.c.id == select(target.c.id).scalar_subquery())
                  .cte("done_agent"))
    done_unit = (_COMPLETE_ASSIGNED_UNIT.where(units.c.id == select(target.c.unit_id).scalar_subquery())
                 .returning(units.c.id, units.c.launch_id, units.c.task_run_id)
                 .cte("done_unit"))
    columns: list[Any] = [done_agent.c.unit_id, done_agent.c.worker_id, done_unit.c.launch_id,
                          *(runs.c[name] for name in _REFILL_COLUMNS), _run_has_more(done_unit.c.id)]
    joined = (done_agent.join(done_unit, done_unit.c.id == done_agent.c.unit_id)
              .join(runs, runs.c.id == done_unit.c.task_run_id))
    if bind_next:
        waiting = _UNITS.alias("waiting_unit")
        next_unit = (select(waiting.c.id)
                     .where(waiting.c.task_run_id == bindparam("v_run_id"),
                            waiting.c.status == UnitStatus.CREATED.value, waiting.c.launch_id.is_(None),
                            waiting.c.launch_failed_at.is_(None))
                     .order_by(waiting.c.id).limit(1).with_for_update(skip_locked=True).scalar_subquery())
        run_counted = (select(runs.c.id)
                       .join(done_unit, done_unit.c.task_run_id == runs.c.id)
                       .where(runs.c.is_completed.is_(False), runs.c.shutdown_requested_at.is_(None),
                              or_(func.coalesce(runs.c.max_concurrent_units, 0) > 0, bindparam("v_capped"))))
        bound = (update(units)
                 .where(units.c.id == next_unit, units.c.status == UnitStatus.CREATED.value,
                        units.c.launch_id.is_(None), exists(run_counted))
                 .values(launch_id=bindparam("v_launch_id"), launch_attempts=1, launch_error=None,
                         launch_retry_at=bindparam("v_retry_at"))
                 .returning(units.c.id)
                 .cte("bound_unit"))
        columns.append(bound.c.id.label("bound_unit_id"))
        joined = joined.outerjoin(bound, true())
    return select(*columns).select_from(joined)


class NextLaunch(NamedTuple):
    """What :func:`complete_submission_alone` needs to bind the run's next unit to a launch."""

    launch_id: str
    retry_at: datetime
    capped: bool  # the deployment caps every run's units (a run's own cap is read by the statement)


class CompletedAlone(NamedTuple):
    unit_id: int
    worker_id: int
    unit: Any  # as CompletedSubmission's, never None
    bound_unit_id: int | None  # the unit bound to ``NextLaunch.launch_id``


def complete_submission_alone(connection: Connection, agent_id: str, run_id: int, *, outputs: dict[str, Any],
                              now: datetime, bind: NextLaunch | None) -> CompletedAlone | None:
    """PostgreSQL: :func:`complete_submission`'s writes (and with ``bind`` the next launch's intent) in one
    statement on ``connection``, meant for autocommit (``engine.single_statement``). None when it wrote
    nothing: the caller takes the submission again in a transaction, which says why (see
    :func:`_complete_alone`)."""
    statement = complete_submission_alone_statement(agent_id, run_id, outputs=outputs, now=now, bind=bind)
    return completed_alone(run_prepared(connection, *statement).first())


def complete_submission_alone_statement(agent_id: str, run_id: int, *, outputs: dict[str, Any], now: datetime,
                                        bind: NextLaunch | None) -> tuple[Any, dict[str, Any]]:
    """:func:`complete_submission_alone`'s statement and parameters, for a caller that runs it elsewhere
    (``db.async_statements`` on the web's event loop); :func:`completed_alone` reads its first row."""
    for status in AGENT_SUBMITTING:
        check_agent_transition(status, AgentStatus.COMPLETED, onboarding=False)
    check_unit_transition(UnitStatus.ASSIGNED, UnitStatus.COMPLETED)
    params: dict[str, Any] = {"v_id": agent_id, "v_run_id": run_id, "v_outputs": outputs, "v_now": now}
    if bind is not None:
        params.update(v_launch_id=bind.launch_id, v_retry_at=bind.retry_at, v_capped=bind.capped)
    return _complete_alone(bind is not None), params


def completed_alone(row: Any) -> CompletedAlone | None:
    """:func:`complete_submission_alone_statement`'s first row read (None: it wrote nothing)."""
    if row is None:
        return None
    bound = getattr(row, "bound_unit_id", None)
    return CompletedAlone(int(row.unit_id), int(row.worker_id), row, None if bound is None else int(bound))


def move_remote_call(
    session: Session,
    call_id: int,
    old: RemoteCallStatus,
    new: RemoteCallStatus,
    **fields: Any,
) -> bool:
    """Compare-and-set a remote call's status; ``attempts_plus_one=True`` also counts a Celery run."""
    check_remote_call_transition(old, new)
    table = _table(RemoteCall)
    values: dict[str, Any] = {"status": new.value}
    if fields.pop("attempts_plus_one", False):
        values["attempts"] = table.c.attempts + 1
    values.update(fields)
    result = session.connection().execute(
        update(table).where(table.c.id == call_id, table.c.status == old.value).values(**values))
    return bool(result.rowcount)


def move_server(
    session: Session,
    server_id: int,
    old: ServerStatus | Collection[ServerStatus],
    new: ServerStatus,
    *,
    now: datetime,
    **fields: Any,
) -> bool:
    """Compare-and-set a server's status (``domain.servers``); False when another process moved it."""
    olds = [old] if isinstance(old, ServerStatus) else list(old)
    for status in olds:
        check_server_transition(status, new)
    statement = (update(Server).where(Server.id == server_id, Server.status.in_([s.value for s in olds]))
                 .values(status=new.value, status_changed_at=now, **fields))
    return bool(session.connection().execute(statement).rowcount)


_RECORD_LAUNCHED = (update(_UNITS)
                    .where(_UNITS.c.id == bindparam("v_unit_id"), _UNITS.c.status == UnitStatus.CREATED.value,
                           _UNITS.c.launch_id == bindparam("v_launch_id"))
                    .values(status=UnitStatus.LAUNCHED.value, status_changed_at=bindparam("v_now"),
                            launched_at=bindparam("v_now"), provider_unit_id=bindparam("v_provider_unit_id"),
                            launch_retry_at=None, launch_error=None)
                    .returning(_UNITS.c.id))


_RECORD_LAUNCHED_EACH = (update(_UNITS)
                         .where(_UNITS.c.id == bindparam("v_unit_id"), _UNITS.c.status == UnitStatus.CREATED.value,
                                _UNITS.c.launch_id == bindparam("v_launch_id"))
                         .values(status=UnitStatus.LAUNCHED.value, status_changed_at=bindparam("v_now"),
                                 launched_at=bindparam("v_now"), provider_unit_id=bindparam("v_provider_unit_id"),
                                 launch_retry_at=None, launch_error=None))
""":data:`_RECORD_LAUNCHED` without its answer, for a batch (executemany returns no rows)."""


def record_launched_statement(launch: tuple[int, str, str], *, now: datetime) -> tuple[Any, dict[str, Any]]:
    """:func:`record_launched`'s one statement for one ``(unit id, launch id, provider unit id)``, for a
    caller that runs it elsewhere (``db.async_statements`` on the web's event loop); its rows are the ids
    moved."""
    check_unit_transition(UnitStatus.CREATED, UnitStatus.LAUNCHED)
    unit_id, launch_id, provider_unit_id = launch
    return _RECORD_LAUNCHED, {"v_unit_id": unit_id, "v_launch_id": launch_id,
                              "v_provider_unit_id": provider_unit_id, "v_now": now}


def record_launched(
    session: Session | Connection, launches: Sequence[tuple[int, str, str]], *, now: datetime
) -> list[int]:
    """``created -> launched`` for each ``(unit id, launch id, provider unit id)`` whose unit is still
    created and still owned by that launch (a launch cleared or expired meanwhile moves nothing);
    return the ids moved. One launch is one statement, so it can be recorded outside a transaction
    (``engine.single_statement``); a batch needs the caller's transaction.

    A batch is one locking read and one statement executed for every unit (an instant provider's
    thousand launches: each unit its own statement held SQLite's write lock, and the claims queued behind
    it, for a sixth of a second). The units read, still created and owned by their launch, are locked
    (PostgreSQL's ``FOR UPDATE``; SQLite's write lock is already held), so the update moves exactly them."""
    connection = session if isinstance(session, Connection) else session.connection()
    if len(launches) == 1:
        return [row[0] for row in run_prepared(connection, *record_launched_statement(launches[0], now=now))]
    check_unit_transition(UnitStatus.CREATED, UnitStatus.LAUNCHED)
    owners = {unit_id: launch_id for unit_id, launch_id, _ in launches}
    owned = connection.execute(
        select(_UNITS.c.id, _UNITS.c.launch_id).where(_UNITS.c.id.in_(list(owners)),
                                                      _UNITS.c.status == UnitStatus.CREATED.value)
        .with_for_update()).all()
    movable = {unit_id for unit_id, launch_id in owned if launch_id is not None and owners[unit_id] == launch_id}
    params = [{"v_unit_id": unit_id, "v_launch_id": launch_id, "v_provider_unit_id": provider_unit_id, "v_now": now}
              for unit_id, launch_id, provider_unit_id in launches if unit_id in movable]
    if params:
        connection.execute(_RECORD_LAUNCHED_EACH, params)
    return [unit_id for unit_id, _, _ in launches if unit_id in movable]
