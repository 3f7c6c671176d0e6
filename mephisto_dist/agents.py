"""Agents: binding a worker to a unit (``request_agent``) and taking their submission (``submit_task``).

This is the hot path of the worker-facing server: a few indexed queries in one transaction, no scans of
a run, no waiting on Celery. Races between web processes are settled by compare-and-set status writes
and the unique constraints on agents (one agent per registration id, one unit per worker and
assignment).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from mephisto_dist.db.models import Agent, Assignment, Unit, Worker
from mephisto_dist.db.transitions import move_agent, move_unit
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.errors import RequestError
from mephisto_dist.limiter import Acquired, Limiter, PoolLimit, keys
from mephisto_dist.runs import unit_holder

CANDIDATES_PER_TRY = 8
CLAIM_ATTEMPTS = 20
CLAIM_RETRY_S = 0.005

NO_UNIT_AVAILABLE = "There is no unit available for you right now. Please try again later."
ALREADY_SUBMITTED = "You have already submitted this unit."
NO_LONGER_YOURS = "This unit is no longer assigned to you (status: {status})."
TIMED_OUT = ("The time allowed for this unit ran out before you submitted, so it was offered to another "
             "worker. Your submission was not recorded.")
TOO_MANY_AT_ONCE = ("You are already working on {cap} unit(s) of this task at once, the most allowed. "
                    "Submit one before taking another.")
MAXIMUM_REACHED = "You have reached the maximum number of units of this task you may do ({cap})."


@dataclass(frozen=True)
class WorkerGate:
    """The per-worker limits, held in Redis so that every web process decides them atomically."""

    limiter: Limiter
    lease_s: float


@dataclass(frozen=True)
class RunContext:
    """The immutable facts about a run that the hot path needs, cached by each web process."""

    run_id: int
    task_id: int
    task_name: str
    provider_type: str
    build_dir: str
    config: dict[str, Any]
    allowed_concurrent: int = 0
    maximum_units_per_worker: int = 0

    def worker_pools(self, worker_id: int, lease_s: float) -> list[PoolLimit]:
        """The per-worker limits of DESIGN.md as pools; empty when the run sets none."""
        pools = []
        if self.allowed_concurrent:
            pools.append(PoolLimit(keys.worker_assigned_pool(self.run_id, worker_id),
                                   self.allowed_concurrent, lease_s))
        if self.maximum_units_per_worker:
            pools.append(PoolLimit(keys.worker_task_units_pool(self.task_name, worker_id),
                                   self.maximum_units_per_worker, None))
        return pools


@dataclass(frozen=True)
class AgentDetails:
    """The ``agent_details`` packet: an agent, or a refusal with its reason."""

    request_id: str | None
    worker_id: int | None = None
    agent_id: str | None = None
    unit_id: int | None = None
    init_task_data: dict[str, Any] | None = None
    failure_reason: str | None = None
    created: bool = False

    def packet(self) -> dict[str, Any]:
        return {
            "packet_type": "agent_details",
            "subject_id": "mephisto_dist",
            "data": {
                "request_id": self.request_id,
                "worker_id": None if self.worker_id is None else str(self.worker_id),
                "agent_id": self.agent_id,
                "init_task_data": self.init_task_data,
                "failure_reason": self.failure_reason,
            },
        }


@dataclass(frozen=True)
class Registration:
    worker_name: str
    registration_id: str
    provider_data: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None

    @classmethod
    def from_request(cls, body: Mapping[str, Any]) -> Registration:
        provider_data = body.get("provider_data")
        if not isinstance(provider_data, dict):
            raise RequestError("request_agent needs a 'provider_data' object")
        worker_name = provider_data.get("worker_name")
        if not isinstance(worker_name, str) or not worker_name.strip():
            raise RequestError("provider_data.worker_name is missing")
        registration_id = provider_data.get("agent_registration_id")
        if not isinstance(registration_id, str) or not registration_id.strip():
            assignment_ref = provider_data.get("assignment_id")
            if not isinstance(assignment_ref, str) or not assignment_ref:
                raise RequestError("provider_data needs agent_registration_id or assignment_id")
            registration_id = f"{assignment_ref}-{worker_name}"
        request_id = body.get("request_id")
        return cls(worker_name.strip(), registration_id, dict(provider_data),
                   request_id if isinstance(request_id, str) else None)


def get_or_create_worker(session: Session, provider_type: str, worker_name: str, *, now: datetime) -> int:
    query = select(Worker.id).where(Worker.provider_type == provider_type, Worker.worker_name == worker_name)
    found = session.scalar(query)
    if found is not None:
        return int(found)
    try:
        with session.begin_nested():
            worker = Worker(provider_type=provider_type, worker_name=worker_name, created_at=now)
            session.add(worker)
        return worker.id
    except IntegrityError:  # the same worker registered through another web process just now
        found = session.scalar(query)
        if found is None:
            raise
        return int(found)


def register_agent(
    session: Session, run: RunContext, reg: Registration, *, now: datetime, gate: WorkerGate | None = None
) -> AgentDetails:
    """Give the worker an agent on a launched unit of the run, or say why not."""
    worker_id = get_or_create_worker(session, run.provider_type, reg.worker_name, now=now)
    existing = session.scalar(
        select(Agent).where(Agent.task_run_id == run.run_id, Agent.registration_id == reg.registration_id)
    )
    if existing is not None:
        return _reconnect(session, existing, worker_id, reg)
    for attempt in range(CLAIM_ATTEMPTS):
        candidates = _candidate_units(session, run.run_id, worker_id)
        if not candidates:
            if attempt + 1 < CLAIM_ATTEMPTS and _units_in_flight(session, run.run_id, worker_id):
                time.sleep(CLAIM_RETRY_S)  # another transaction holds the free units' locks right now
                continue
            break
        pools = run.worker_pools(worker_id, gate.lease_s) if gate is not None else []
        for unit_id, assignment_id in candidates:
            if pools:
                assert gate is not None
                taken = gate.limiter.acquire(unit_holder(unit_id), pools)
                if not taken.ok:
                    return AgentDetails(reg.request_id, worker_id, failure_reason=_refusal(pools, taken))
            agent_id = _claim(session, run, reg, worker_id, unit_id, assignment_id, now=now)
            if agent_id is None and pools:
                assert gate is not None
                gate.limiter.release(unit_holder(unit_id), [p.pool for p in pools])
            if agent_id is not None:
                data = session.scalar(select(Assignment.data).where(Assignment.id == assignment_id))
                return AgentDetails(reg.request_id, worker_id, agent_id, unit_id, data, created=True)
    return AgentDetails(reg.request_id, worker_id, failure_reason=NO_UNIT_AVAILABLE)


def _refusal(pools: list[PoolLimit], taken: Acquired) -> str:
    pool = next(p for p in pools if p.pool == taken.refused_pool)
    if pool.lease_s is None:
        return MAXIMUM_REACHED.format(cap=pool.cap)
    return TOO_MANY_AT_ONCE.format(cap=pool.cap)


def _reconnect(session: Session, agent: Agent, worker_id: int, reg: Registration) -> AgentDetails:
    if agent.worker_id != worker_id:
        raise RequestError("this registration id belongs to another worker", 403)
    status = AgentStatus(agent.status)
    if status == AgentStatus.COMPLETED:
        return AgentDetails(reg.request_id, worker_id, failure_reason=ALREADY_SUBMITTED)
    if status == AgentStatus.TIMEOUT:
        return AgentDetails(reg.request_id, worker_id, failure_reason=TIMED_OUT)
    if status not in (AgentStatus.IN_TASK, AgentStatus.ACCEPTED, AgentStatus.NONE):
        return AgentDetails(reg.request_id, worker_id, failure_reason=NO_LONGER_YOURS.format(status=status))
    data = session.scalar(select(Assignment.data).where(Assignment.id == agent.assignment_id))
    return AgentDetails(reg.request_id, worker_id, agent.id, agent.unit_id, data)


def _open_units_query(run_id: int, worker_id: int) -> Select[int, int]:
    """Launched units of the run in assignments this worker has not worked on, lowest id first."""
    mine = aliased(Agent)
    return (
        select(Unit.id, Unit.assignment_id)
        .where(
            Unit.task_run_id == run_id,
            Unit.status == UnitStatus.LAUNCHED.value,
            ~exists().where(mine.assignment_id == Unit.assignment_id, mine.worker_id == worker_id),
        )
        .order_by(Unit.id)
    )


def _candidate_units(session: Session, run_id: int, worker_id: int) -> list[tuple[int, int]]:
    query = _open_units_query(run_id, worker_id)
    if session.get_bind().dialect.name == "postgresql":
        # Lock exactly the row we will claim: locking more would hide units from other workers.
        query = query.limit(1).with_for_update(of=Unit, skip_locked=True)
    else:
        query = query.limit(CANDIDATES_PER_TRY)  # SQLite serialises writers: no one else is choosing
    return [(int(row[0]), int(row[1])) for row in session.execute(query)]


def _units_in_flight(session: Session, run_id: int, worker_id: int) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return False
    return session.execute(_open_units_query(run_id, worker_id).limit(1)).first() is not None


def _claim(
    session: Session, run: RunContext, reg: Registration, worker_id: int, unit_id: int, assignment_id: int,
    *, now: datetime,
) -> str | None:
    agent_id = secrets.token_hex(12)
    try:
        with session.begin_nested():
            if not move_unit(session, unit_id, UnitStatus.LAUNCHED, UnitStatus.ASSIGNED, now=now,
                             agent_id=agent_id, worker_id=worker_id):
                return None
            session.add(Agent(
                id=agent_id, unit_id=unit_id, assignment_id=assignment_id, task_run_id=run.run_id,
                worker_id=worker_id, registration_id=reg.registration_id,
                status=AgentStatus.IN_TASK.value, provider_data=reg.provider_data,
                created_at=now, status_changed_at=now,
            ))
            session.flush()
    except IntegrityError:
        # Another process registered this worker on the assignment, or the same registration id.
        return None
    return agent_id


@dataclass(frozen=True)
class Submission:
    unit_id: int
    agent_id: str
    worker_id: int
    first: bool


def submit_task(
    session: Session, run: RunContext, agent_id: str, outputs: dict[str, Any], *, now: datetime
) -> Submission:
    """Record an agent's final data; a repeated submit keeps the first answer and does no harm."""
    agent = load_agent(session, run, agent_id)
    status = AgentStatus(agent.status)
    if status == AgentStatus.COMPLETED:
        return Submission(agent.unit_id, agent.id, agent.worker_id, first=False)
    if status == AgentStatus.TIMEOUT:
        raise RequestError(TIMED_OUT, 409)
    if status != AgentStatus.IN_TASK:
        raise RequestError(NO_LONGER_YOURS.format(status=status) + " Your submission was not recorded.", 409)
    if not move_agent(session, agent.id, AgentStatus.IN_TASK, AgentStatus.COMPLETED, now=now,
                      outputs=outputs, submitted_at=now):
        session.refresh(agent)
        if agent.status == AgentStatus.COMPLETED.value:
            return Submission(agent.unit_id, agent.id, agent.worker_id, first=False)
        raise RequestError(NO_LONGER_YOURS.format(status=agent.status), 409)
    if not move_unit(session, agent.unit_id, UnitStatus.ASSIGNED, UnitStatus.COMPLETED, now=now):
        raise RequestError("this unit is no longer open for submissions", 409)
    return Submission(agent.unit_id, agent.id, agent.worker_id, first=True)


def load_agent(session: Session, run: RunContext, agent_id: str) -> Agent:
    agent = session.get(Agent, agent_id) if isinstance(agent_id, str) and agent_id else None
    if agent is None:
        raise RequestError(f"unknown agent id {agent_id!r}", 404)
    if agent.task_run_id != run.run_id:
        raise RequestError(f"agent {agent_id!r} does not belong to this task run", 403)
    return agent
