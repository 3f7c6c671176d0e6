"""Orphaned servers: deployments whose run is finished or unknown are stopped or terminated; a live run's
server that stopped answering is flagged (and an ``ec2`` one whose instance is gone is redeployed)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.architects import Architect, ServerRef, architect_class, architect_types
from mephisto_dist.architects.servers import ask_to_stop, mark_stopped
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Server, TaskRun
from mephisto_dist.db.transitions import move_server
from mephisto_dist.domain.servers import (
    SERVER_LIVE,
    Action,
    Decision,
    RunState,
    ServerFacts,
    ServerStatus,
    decide_server,
)
from mephisto_dist.errors import ConfigError, MephistoDistError
from mephisto_dist.reconcile import records

log = logging.getLogger(__name__)
NAME = "servers"
BATCH = 200
OPEN = [s.value for s in (*SERVER_LIVE, ServerStatus.STOPPING)]


@dataclass(frozen=True)
class Claimed:
    decision: Decision
    server: ServerRef
    architect: str
    record_id: int


def _refs(factory: sessionmaker[Session]) -> list[tuple[str, ServerRef]]:
    with transaction(factory) as session:
        rows = session.execute(select(Server.architect, Server.id, Server.task_run_id, Server.instance_id)
                               .where(Server.status.in_(OPEN)).order_by(Server.id).limit(BATCH)).all()
    return [(architect, ServerRef(sid, run_id, instance_id)) for architect, sid, run_id, instance_id in rows]


def _run_states(session: Session, run_ids: set[int]) -> dict[int, RunState]:
    states = {run_id: RunState.UNKNOWN for run_id in run_ids}
    for run_id, completed in session.execute(select(TaskRun.id, TaskRun.is_completed)
                                             .where(TaskRun.id.in_(run_ids))):
        states[run_id] = RunState.FINISHED if completed else RunState.LIVE
    return states


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else (now - then).total_seconds()


def reconcile_servers(
    factory: sessionmaker[Session], architect_for: Callable[[str], Architect | None], *,
    now: datetime, stale_s: float, deploy_grace_s: float,
) -> list[Decision]:
    """One pass; returns what it decided and claimed (a concurrent pass claims nothing twice)."""
    refs = _refs(factory)
    gone: set[int] = set()
    asked: set[str] = set()
    for name in {architect for architect, _ in refs}:
        architect = architect_for(name)
        if architect is None:
            continue
        try:
            answer = architect.gone([ref for a, ref in refs if a == name])
        except MephistoDistError as error:  # the decision waits for a pass where the provider answers
            log.warning("cannot ask the %s architect which servers run: %s", name, error)
            continue
        if answer is not None:
            gone |= answer
            asked.add(name)
    decided, to_apply = _claim(factory, [ref.server_id for _, ref in refs], gone, asked, now=now,
                               stale_s=stale_s, deploy_grace_s=deploy_grace_s)
    for item in to_apply:
        _apply(factory, architect_for, item, now=now)
    return decided


def _claim(factory: sessionmaker[Session], server_ids: list[int], gone: set[int], asked: set[str], *,
           now: datetime, stale_s: float, deploy_grace_s: float) -> tuple[list[Decision], list[Claimed]]:
    """Decide under the batch lock and claim each decision; return every decision claimed and those
    whose work (a call to the architect) is still to do."""
    decided: list[Decision] = []
    claimed: list[Claimed] = []
    with transaction(factory) as session:
        servers = session.scalars(select(Server).where(Server.id.in_(server_ids), Server.status.in_(OPEN))
                                  .order_by(Server.id).with_for_update(skip_locked=True)).all()
        states = _run_states(session, {s.task_run_id for s in servers if s.task_run_id is not None})
        for server in servers:
            facts = ServerFacts(
                server_id=server.id, deploys_remotely=_deploys_remotely(server.architect), status=ServerStatus(server.status),
                run_state=RunState.UNBOUND if server.task_run_id is None else states[server.task_run_id],
                heartbeat_age_s=_age(now, server.heartbeat_at),
                status_age_s=_age(now, server.status_changed_at) or 0.0,
                instance_gone=(server.id in gone) if server.architect in asked else None)
            decision = decide_server(facts, stale_s=stale_s, deploy_grace_s=deploy_grace_s)
            if decision is None or not _claim_one(session, server, decision, now=now):
                continue
            decided.append(decision)
            done = decision.action in (Action.STOP, Action.MARK_STOPPED, Action.FLAG_LOST, Action.RECOVERED)
            record_id = records.record(session, NAME, f"server {server.id} ({server.architect}"
                                       f"{', ' + server.instance_id if server.instance_id else ''})",
                                       decision.found, decision.action.value, task_run_id=server.task_run_id,
                                       now=now, done=done)
            if not done:
                claimed.append(Claimed(decision, ServerRef(server.id, server.task_run_id, server.instance_id),
                                       server.architect, record_id))
    return decided, claimed


def _deploys_remotely(architect: str) -> bool:
    try:
        return architect_class(architect).deploys_remotely
    except ConfigError:  # a server of an architect this version does not know: judged by its heartbeat
        return False


def _claim_one(session: Session, server: Server, decision: Decision, *, now: datetime) -> bool:
    """The compare-and-set that makes the decision this pass's alone."""
    status = ServerStatus(server.status)
    note = f"{decision.action.value}: {decision.found}"
    if decision.action == Action.MARK_STOPPED:
        return mark_stopped(session, server.id, note, now=now)
    if decision.action == Action.FLAG_LOST:
        return move_server(session, server.id, status, ServerStatus.LOST, now=now, note=note)
    if decision.action == Action.RECOVERED:
        return move_server(session, server.id, ServerStatus.LOST, ServerStatus.RUNNING, now=now, note=None)
    if status == ServerStatus.STOPPING:  # a termination to finish: claim it anew by its timestamp
        return bool(session.connection().execute(
            update(Server).where(Server.id == server.id, Server.status == status.value,
                                            Server.status_changed_at == server.status_changed_at)
            .values(status_changed_at=now)).rowcount)
    return ask_to_stop(session, server.id, note, now=now)


def _apply(factory: sessionmaker[Session], architect_for: Callable[[str], Architect | None], item: Claimed, *,
           now: datetime) -> None:
    """Terminate (and for a redeploy, deploy anew) outside any transaction; record the outcome."""
    architect = architect_for(item.architect)
    error: str | None = None
    try:
        if architect is None:
            raise MephistoDistError(f"architect {item.architect!r} is not available here")
        architect.stop(item.server)
        with transaction(factory) as session:
            mark_stopped(session, item.server.server_id, f"{item.decision.action.value}: {item.decision.found}",
                         now=now)
        if item.decision.action == Action.REDEPLOY and item.server.task_run_id is not None:
            architect.deploy(item.server.task_run_id)
    except MephistoDistError as failure:
        error = str(failure)
        log.warning("server %s: %s failed: %s", item.server.server_id, item.decision.action.value, error)
    with transaction(factory) as session:
        records.mark_done(session, item.record_id, now=now, error=error)


def remote_architect_of(factory: sessionmaker[Session], run_id: int) -> str | None:
    """The run's architect when it deploys remotely and the run goes on; ``None`` otherwise."""
    with read_transaction(factory) as session:
        found = session.execute(select(TaskRun.architect_type, TaskRun.is_completed)
                                .where(TaskRun.id == run_id)).first()
    if found is None or found[1] or not architect_class(found[0]).deploys_remotely:
        return None
    return str(found[0])


def runs_missing_a_server(factory: sessionmaker[Session]) -> list[int]:
    """Live runs whose architect deploys remotely and that have no live server (a redeploy whose process
    died after terminating the old one, or a deploy task lost with the broker)."""
    with read_transaction(factory) as session:
        live = select(Server.id).where(Server.task_run_id == TaskRun.id,
                                       Server.status.in_([s.value for s in SERVER_LIVE]))
        return list(session.scalars(select(TaskRun.id).where(
            TaskRun.architect_type.in_(architect_types(lambda cls: cls.deploys_remotely)),
            TaskRun.is_completed.is_(False), ~live.exists())))
