"""Claims: binding a worker to a unit (``request_agent``), taking their submission (``submit_task``), and
acting on the gate in front of both (decided in ``domain.gate`` from one snapshot of the worker's
standing: blocks, qualification requirements, onboarding, screening, golds), then the task's
``worker_can_do_unit`` hook.

This is the hot path of the worker-facing server: a few indexed queries in one transaction, no scans of
a run, no waiting on Celery. A run with no gate configured pays nothing for it (the worker's global
block comes with the worker lookup); a gated run adds one indexed query for the worker's grants.
Races between web processes are settled by compare-and-set status writes and the unique constraints on
agents (one agent per registration id, one unit per worker and assignment).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, delete, exists, select
from sqlalchemy.orm import Session, aliased

from mephisto_dist.blueprints import initial_task_data, onboarding_data, run_requirements
from mephisto_dist.blueprints.hooks import NO_HOOKS, TaskHooks, WorkerCanDoUnit, hooks_for
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db import transitions
from mephisto_dist.db.models import (
    Agent,
    Assignment,
    GrantedQualification,
    Qualification,
    Unit,
    Worker,
)
from mephisto_dist.db.prepared import Ran
from mephisto_dist.db.prepared import run as run_prepared
from mephisto_dist.db.transitions import (
    assign_unit_to_new_agent,
    complete_submission,
    move_agent,
    move_unit,
)
from mephisto_dist.db.unique_rows import insert_ignoring_conflicts, insert_returning_id
from mephisto_dist.domain.gate import (
    ONBOARDING_FAILED,
    GateRules,
    GoldRules,
    Next,
    Verdict,
    decide,
)
from mephisto_dist.domain.qualifications import Requirement
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.domain.worker_input import check_name
from mephisto_dist.errors import RequestError
from mephisto_dist.limiter import Acquired, Limiter, PoolLimit, keys
from mephisto_dist.limiter.units import UnitTokens, unit_holder
from mephisto_dist.providers import provider_class
from mephisto_dist.work import onboarding, screening
from mephisto_dist.work.golds import GOLD_UNIT_INDEX, Golds, golds_of
from mephisto_dist.work.screening import Screening, screening_of

if TYPE_CHECKING:
    from mephisto_dist.db.async_statements import AsyncStatements

log = logging.getLogger(__name__)

CLAIM_ATTEMPTS = 20
CLAIM_RETRY_S = 0.005

NO_UNIT_AVAILABLE = "There is no unit available for you right now. Please try again later."
ALREADY_SUBMITTED = "You have already submitted this unit."
NO_LONGER_YOURS = "This unit is no longer assigned to you (status: {status})."
TASK_CLOSED = ("This task was closed before you submitted, so your work was not recorded. "
               "You can close this page.")
TIMED_OUT = ("The time allowed for this unit ran out before you submitted, so it was offered to another "
             "worker. Your submission was not recorded.")
TOO_MANY_AT_ONCE = ("You are already working on {cap} unit(s) of this task at once, the most allowed. "
                    "Submit one before taking another.")
MAXIMUM_REACHED = "You have reached the maximum number of units of this task you may do ({cap})."
CAN_DO_BATCH = 50


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
    onboarding_qualification: str | None = None
    block_qualification: str | None = None
    requirements: tuple[Requirement, ...] = ()
    hooks: TaskHooks = NO_HOOKS
    onboarding_data: dict[str, Any] = field(default_factory=dict)
    screening: Screening | None = None
    golds: Golds | None = None
    cap_when_read: int = 0
    """The run's cap (``TaskRun.max_concurrent_units``) when this was read; a unit's own transactions read
    the cap in force (it changes while the run goes)."""

    @classmethod
    def from_config(cls, run_id: int, task_id: int, task_name: str, provider_type: str, build_dir: str,
                    config: dict[str, Any], hooks: TaskHooks | None = None, *, cap: int = 0) -> RunContext:
        """From a run's stored config and its hooks (by default loaded from the path the config names,
        once per process)."""
        parsed = RunConfig.parse(config)
        blueprint_args = parsed.blueprint.args
        if hooks is None:
            hooks = hooks_for(blueprint_args)
        return cls(run_id, task_id, task_name, provider_type, build_dir, config,
                   allowed_concurrent=parsed.task.allowed_concurrent,
                   maximum_units_per_worker=parsed.task.maximum_units_per_worker,
                   onboarding_qualification=blueprint_args.get("onboarding_qualification") or None,
                   block_qualification=parsed.blueprint.block_qualification,
                   requirements=run_requirements(blueprint_args),
                   hooks=hooks,
                   onboarding_data=onboarding_data(parsed.blueprint.blueprint_type, hooks),
                   screening=screening_of(blueprint_args, generated=hooks.screening_data is not None),
                   golds=golds_of(blueprint_args), cap_when_read=cap)

    def init_task_data(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A data row as this run's pages receive it (a screening unit's, made while the run goes)."""
        blueprint = self.run_config.blueprint
        return initial_task_data(blueprint.blueprint_type, row, blueprint.args)

    @cached_property
    def run_config(self) -> RunConfig:
        """The run's stored config, typed: parsed once per served run."""
        return RunConfig.parse(self.config)

    @cached_property
    def launch_args(self) -> dict[str, Any]:
        """``runs.launches.launch_args`` of the run, worked out once per served run (every submission of a
        capped run hands its slot over with them); shared: do not change it."""
        return self.run_config.launch_args()

    @cached_property
    def gate_rules(self) -> GateRules:
        """Who may work on the run (``domain.gate``): built once per served run."""
        gold_hooks = self.hooks.gold
        golds = (None if self.golds is None or gold_hooks is None else
                 GoldRules(self.golds.base, self.golds.min_golds, self.golds.max_incorrect,
                           gold_hooks.needs_gold, gold_hooks.qualifies))
        screening = self.screening
        return GateRules(self.provider_type, self.block_qualification, self.requirements,
                         self.onboarding_qualification,
                         screening.passed_qualification if screening is not None and screening.generated else None,
                         golds)

    @property
    def gated(self) -> bool:
        """Whether a worker's grants must be read before they get a unit."""
        return self.gate_rules.reads_grants

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
        check_name(worker_name, "provider_data.worker_name")
        check_name(registration_id, "provider_data.agent_registration_id")
        request_id = body.get("request_id")
        return cls(worker_name.strip(), registration_id, dict(provider_data),
                   request_id if isinstance(request_id, str) else None)


def _run(session: Session, statement: Any, params: dict[str, Any] | None = None) -> Ran:
    """Run a statement built once (a module constant) on the session's connection, past the ORM layer and
    ``Connection.execute`` (``db.prepared``)."""
    return run_prepared(session.connection(), statement, params)


_FIND_WORKER = select(Worker.id).where(Worker.provider_type == bindparam("provider_type"),
                                       Worker.worker_name == bindparam("worker_name"))


def find_worker(session: Session, provider_type: str, worker_name: str) -> int | None:
    found = _run(session, _FIND_WORKER, {"provider_type": provider_type, "worker_name": worker_name}).scalar()
    return None if found is None else int(found)


def get_or_create_worker(session: Session, provider_type: str, worker_name: str, *, now: datetime) -> int:
    found = find_worker(session, provider_type, worker_name)
    if found is not None:
        return found
    return create_worker(session, provider_type, worker_name, now=now)


def create_worker(session: Session, provider_type: str, worker_name: str, *, now: datetime) -> int:
    """The id of a worker this transaction found missing: inserted now, or another process's row if it
    was inserted meanwhile."""
    # Every column with a default given: the insert runs past SQLAlchemy's execution (``db.prepared``).
    inserted = insert_returning_id(session, "worker", {"provider_type": provider_type, "worker_name": worker_name,
                                                       "created_at": now, "is_blocked": False})
    if inserted is not None:
        return inserted
    created = find_worker(session, provider_type, worker_name)  # another process's
    if created is None:
        raise RuntimeError(f"worker {worker_name!r} vanished right after it was created")
    return created


_FIND_WORKER_STANDING = select(Worker.id, Worker.is_blocked).where(
    Worker.provider_type == bindparam("provider_type"), Worker.worker_name == bindparam("worker_name"))
_FIND_REGISTRATION = select(Agent.id, Agent.worker_id, Agent.status, Agent.unit_id, Agent.assignment_id).where(
    Agent.task_run_id == bindparam("run_id"), Agent.registration_id == bindparam("registration_id"))
_ASSIGNMENT_DATA = select(Assignment.data).where(Assignment.id == bindparam("assignment_id"))


class ClaimBusy(Exception):
    """Every free unit is locked by another transaction this instant: ask again in a moment."""


@dataclass(frozen=True)
class Reservation:
    """A launched unit chosen for a worker under per-worker limits (``allowed_concurrent``,
    ``maximum_units_per_worker``). Their tokens are Redis calls, never made inside a transaction: the
    transaction that chose the unit ends, the caller takes the tokens, then :func:`claim_reserved`
    claims the unit in another transaction (or the tokens are given back if someone else was quicker)."""

    reg: Registration
    unit_id: int
    assignment_id: int
    data: Any
    worker_id: int
    pools: tuple[PoolLimit, ...]

    @property
    def holder(self) -> str:
        return unit_holder(self.unit_id)

    def refusal(self, taken: Acquired) -> AgentDetails:
        """The worker's refusal when a per-worker pool is full."""
        return AgentDetails(self.reg.request_id, self.worker_id, failure_reason=_refusal(list(self.pools), taken))


def register_agent(
    session: Session, run: RunContext, reg: Registration, *, now: datetime, gate: WorkerGate | None = None,
    retry: bool = False, freed: list[UnitTokens] | None = None,
) -> AgentDetails | Reservation:
    """Give the worker an agent on a launched unit of the run, or say why not; under per-worker limits
    (with a ``gate``), the unit to claim once their tokens are taken (:class:`Reservation`).

    A worker the run's gate sends to onboarding gets an onboarding agent (its id starts with
    ``onboarding_``) and the onboarding page's data instead. A refusal writes nothing: the worker row is
    created only once there is a unit (or onboarding) to give. A unit taken back from an MTurk
    assignment that ended is added to ``freed``: the caller gives its tokens back once this transaction
    has committed (``limiter.units.release_unit_tokens``).
    """
    worker = _run(session, _FIND_WORKER_STANDING, {"provider_type": run.provider_type,
                                                   "worker_name": reg.worker_name}).first()
    worker_id: int | None = None
    if worker is not None:
        worker_id = int(worker.id)
        existing = _run(session, _FIND_REGISTRATION, {"run_id": run.run_id,
                                                      "registration_id": reg.registration_id}).first()
        if existing is not None:
            return _reconnect(session, existing, worker_id, reg)
    blocked = worker is not None and bool(worker.is_blocked)
    if blocked or run.gated:
        granted = _granted(session, worker_id) if run.gated else {}
        verdict = decide(run.gate_rules, granted, blocked=blocked)
        if verdict.next is not Next.UNIT:
            gated = _act_on(session, run, reg, worker_id, verdict, now=now)
            if gated is not None:
                return gated
    can_do = run.hooks.worker_can_do_unit
    for _attempt in range(CLAIM_ATTEMPTS):
        candidate = _candidate(session, run, reg, worker_id, can_do, freed, now=now)
        if candidate is None:
            if can_do is None and retry and _units_in_flight(session, run.run_id, worker_id):
                # Another transaction holds the free units' locks right now: the caller waits, with
                # this transaction closed, and asks again.
                raise ClaimBusy(run.run_id)
            break
        unit_id, assignment_id, data = candidate
        if worker_id is None:  # none when this transaction looked at its start
            worker_id = create_worker(session, run.provider_type, reg.worker_name, now=now)
        pools = run.worker_pools(worker_id, gate.lease_s) if gate is not None else []
        if pools:
            # The worker's limits are taken in Redis once this transaction has ended.
            return Reservation(reg, unit_id, assignment_id, data, worker_id, tuple(pools))
        agent_id = _claim(session, run, reg, worker_id, unit_id, assignment_id, now=now)
        if agent_id is not None:
            return AgentDetails(reg.request_id, worker_id, agent_id, unit_id, data, created=True)
        if _registration_taken(session, run.run_id, reg.registration_id):
            # The same registration id won on another web process at this moment: reconnect to it.
            return register_agent(session, run, reg, now=now, gate=gate, retry=retry, freed=freed)
    return AgentDetails(reg.request_id, worker_id, failure_reason=NO_UNIT_AVAILABLE)


_GRANTED = (select(Qualification.name, GrantedQualification.value)
            .join(Qualification, Qualification.id == GrantedQualification.qualification_id)
            .where(GrantedQualification.worker_id == bindparam("worker_id")))


def _granted(session: Session, worker_id: int | None) -> dict[str, int]:
    """The worker's grants (qualification name -> value): the gate's one snapshot."""
    if worker_id is None:
        return {}
    return {name: value for name, value in _run(session, _GRANTED, {"worker_id": worker_id})}


def _act_on(
    session: Session, run: RunContext, reg: Registration, worker_id: int | None, verdict: Verdict, *,
    now: datetime,
) -> AgentDetails | None:
    """Carry out the gate's verdict: a refusal, onboarding, a screening or gold unit made for the worker;
    ``None`` sends them on to a real unit (the run may pay for no more golds)."""
    if verdict.next is Next.REFUSED:
        return AgentDetails(reg.request_id, worker_id, failure_reason=verdict.reason)
    if verdict.next is Next.ONBOARDING:
        if worker_id is None:
            worker_id = get_or_create_worker(session, run.provider_type, reg.worker_name, now=now)
        agent_id = onboarding.start(session, run.run_id, worker_id, reg.registration_id, reg.provider_data,
                                    now=now)
        return AgentDetails(reg.request_id, worker_id, agent_id, init_task_data=dict(run.onboarding_data))
    if verdict.next is Next.SCREENING:
        return _screening_agent(session, run, reg, worker_id, now=now)
    return _gold_agent(session, run, reg, worker_id, now=now)


def _gold_agent(
    session: Session, run: RunContext, reg: Registration, worker_id: int | None, *, now: datetime,
) -> AgentDetails | None:
    """A gold unit made for the worker (``mephisto_dist.work.golds``) when the run's cap allows, else None
    (a real unit)."""
    golds, hooks = run.golds, run.hooks.gold
    assert golds is not None and hooks is not None
    if not screening.take_made_unit(session, run.run_id, "gold", golds.max_units):
        return None  # every gold the run may pay for is out: real units from here
    if worker_id is None:
        worker_id = get_or_create_worker(session, run.provider_type, reg.worker_name, now=now)
    data = hooks.data_for(reg.worker_name, worker_id)
    init_data = run.init_task_data(data)
    pay = run.run_config.task.task_reward
    unit_id, assignment_id = screening.create_unit(session, run.run_id, init_data, pay, now=now,
                                                   unit_index=GOLD_UNIT_INDEX)
    agent_id = _claim(session, run, reg, worker_id, unit_id, assignment_id, now=now)
    if agent_id is None:
        raise RequestError("this registration is already working on another unit", 409)
    return AgentDetails(reg.request_id, worker_id, agent_id, unit_id, init_data, created=True)


def _screening_agent(
    session: Session, run: RunContext, reg: Registration, worker_id: int | None, *, now: datetime,
) -> AgentDetails:
    """A screening unit made for this worker from the task's generator (``mephisto_dist.work.screening``), or
    why there is none: theirs is being checked, or the run made all it may."""
    assert run.screening is not None and run.hooks.screening_data is not None
    if worker_id is None:
        worker_id = get_or_create_worker(session, run.provider_type, reg.worker_name, now=now)
    if screening.has_screening_unit(session, run.run_id, worker_id):
        return AgentDetails(reg.request_id, worker_id, failure_reason=screening.PENDING)
    if not screening.take_made_unit(session, run.run_id, "screening", run.screening.max_units):
        return AgentDetails(reg.request_id, worker_id, failure_reason=NO_UNIT_AVAILABLE)
    try:
        data = run.hooks.screening_data()
    except Exception as error:
        log.exception("the task's screening_data_factory failed")  # the transaction's rollback undoes the count
        raise RequestError(f"the task's screening_data_factory failed: {type(error).__name__}: {error}",
                           500) from None
    if data is None:  # the generator is exhausted
        screening.give_back_made_unit(session, run.run_id, "screening")
        return AgentDetails(reg.request_id, worker_id, failure_reason=NO_UNIT_AVAILABLE)
    init_data = run.init_task_data(data)
    pay = run.run_config.task.task_reward
    unit_id, assignment_id = screening.create_unit(session, run.run_id, init_data, pay, now=now)
    agent_id = _claim(session, run, reg, worker_id, unit_id, assignment_id, now=now)
    if agent_id is None:
        raise RequestError("this registration is already working on another unit", 409)
    return AgentDetails(reg.request_id, worker_id, agent_id, unit_id, init_data, created=True)


def submit_onboarding(
    session: Session, run: RunContext, agent_id: str, outputs: dict[str, Any], *, passed: bool, now: datetime,
    gate: WorkerGate | None = None, freed: list[UnitTokens] | None = None,
) -> AgentDetails | Reservation:
    """Record the verdict on an onboarding submission, then answer what the worker gets next: a unit, as
    :func:`register_agent` would give one (``freed`` as there), when they passed; a refusal when they did
    not. A repeated submission keeps the first verdict."""
    if not run.onboarding_qualification:
        raise RequestError("this task run has no onboarding", 400)
    agent = onboarding.record_result(session, run.run_id, agent_id, run.onboarding_qualification,
                                     passed=passed, outputs=outputs, now=now)
    if agent.status == AgentStatus.REJECTED:
        return AgentDetails(None, agent.worker_id, failure_reason=ONBOARDING_FAILED)
    reg = Registration(agent.worker_name, agent.registration_id, agent.provider_data)
    return register_agent(session, run, reg, now=now, gate=gate, freed=freed)


def claim_reserved(session: Session, run: RunContext, reservation: Reservation, *,
                   now: datetime) -> AgentDetails | None:
    """Claim the reserved unit, its worker's tokens taken; ``None`` when it went to someone else, or this
    registration won elsewhere, meanwhile (the caller gives the tokens back and asks again)."""
    reg = reservation.reg
    agent_id = _claim(session, run, reg, reservation.worker_id, reservation.unit_id, reservation.assignment_id,
                      now=now)
    if agent_id is None:
        return None
    return AgentDetails(reg.request_id, reservation.worker_id, agent_id, reservation.unit_id, reservation.data,
                        created=True)


def claim_alone(connection: Connection, run: RunContext, reg: Registration, *, now: datetime) -> AgentDetails | None:
    """PostgreSQL, a run whose claims write nothing else (``Served.claims_alone``): a worker's claim of the
    run's next launched unit (their worker row made if they are new) in one statement on ``connection``, in
    autocommit (``db.transitions.claim_alone_statement``). ``None`` when it wrote nothing (a blocked worker, a
    registration seen before, no free unit this instant, a lost race): :func:`register_agent` takes the
    request in a transaction and answers it."""
    statement, params = claim_alone_statement(run, reg, now=now)
    return claimed_alone(reg, params, run_prepared(connection, statement, params).first())


async def claim_alone_on_loop(statements: AsyncStatements, run: RunContext, reg: Registration, *,
                              now: datetime) -> AgentDetails | None:
    """:func:`claim_alone` on the web's event loop (``db.async_statements``)."""
    statement, params = claim_alone_statement(run, reg, now=now)
    return claimed_alone(reg, params, (await statements.run(statement, params)).first())


def claim_alone_statement(run: RunContext, reg: Registration, *, now: datetime) -> tuple[Any, dict[str, Any]]:
    """:func:`claim_alone`'s statement, for a new agent of ``reg`` (its id minted here)."""
    agent = {"id": secrets.token_hex(12), "task_run_id": run.run_id, "registration_id": reg.registration_id,
             "status": AgentStatus.IN_TASK.value, "provider_data": reg.provider_data, "init_data": {},
             "created_at": now, "status_changed_at": now}
    return transitions.claim_alone_statement(agent, reg.worker_name, run.provider_type)


def claimed_alone(reg: Registration, params: dict[str, Any], row: Any) -> AgentDetails | None:
    """What :func:`claim_alone_statement`'s first row says (None: it wrote nothing)."""
    if row is None:
        return None
    return AgentDetails(reg.request_id, int(row.worker_id), params["a_id"], int(row.unit_id), row.data, created=True)


def _registration_taken(session: Session, run_id: int, registration_id: str) -> bool:
    return _run(session, _FIND_REGISTRATION, {"run_id": run_id,
                                              "registration_id": registration_id}).first() is not None


def _refusal(pools: list[PoolLimit], taken: Acquired) -> str:
    pool = next(p for p in pools if p.pool == taken.refused_pool)
    if pool.lease_s is None:
        return MAXIMUM_REACHED.format(cap=pool.cap)
    return TOO_MANY_AT_ONCE.format(cap=pool.cap)


def _reconnect(session: Session, existing: Any, worker_id: int, reg: Registration) -> AgentDetails:
    agent_id, owner_id, raw_status, unit_id, assignment_id = existing
    if owner_id != worker_id:
        raise RequestError("this registration id belongs to another worker", 403)
    status = AgentStatus(raw_status)
    if status == AgentStatus.COMPLETED:
        return AgentDetails(reg.request_id, worker_id, failure_reason=ALREADY_SUBMITTED)
    if status == AgentStatus.TIMEOUT:
        return AgentDetails(reg.request_id, worker_id, failure_reason=TIMED_OUT)
    if status not in (AgentStatus.IN_TASK, AgentStatus.WAITING, AgentStatus.PARTNER_DISCONNECT, AgentStatus.ACCEPTED,
                      AgentStatus.NONE):
        return AgentDetails(reg.request_id, worker_id, failure_reason=NO_LONGER_YOURS.format(status=status))
    data = _run(session, _ASSIGNMENT_DATA, {"assignment_id": assignment_id}).scalar()
    return AgentDetails(reg.request_id, worker_id, agent_id, unit_id, data)


_MINE = aliased(Agent)
_OPEN_UNITS = (
    select(Unit.id, Unit.assignment_id, Assignment.data)
    .join(Assignment, Assignment.id == Unit.assignment_id)
    .where(Unit.task_run_id == bindparam("run_id"), Unit.status == UnitStatus.LAUNCHED.value)
    .order_by(Unit.id)
    .limit(1)
)
# Launched units of the run in assignments this worker has not worked on, lowest id first.
_OPEN_UNITS_FOR_WORKER = _OPEN_UNITS.where(
    ~exists().where(_MINE.assignment_id == Unit.assignment_id, _MINE.worker_id == bindparam("worker_id")))
_OPEN_UNITS_LOCKED = _OPEN_UNITS.with_for_update(of=Unit, skip_locked=True)
_OPEN_UNITS_AFTER = _OPEN_UNITS.where(Unit.id > bindparam("after_id")).limit(CAN_DO_BATCH)
_OPEN_UNITS_AFTER_FOR_WORKER = _OPEN_UNITS_FOR_WORKER.where(Unit.id > bindparam("after_id")).limit(CAN_DO_BATCH)
_OPEN_UNITS_FOR_WORKER_LOCKED = _OPEN_UNITS_FOR_WORKER.with_for_update(of=Unit, skip_locked=True)


# A HIT of a one-assignment-per-HIT provider (MTurk) names its unit.
_UNIT_OF_HIT = _OPEN_UNITS.where(Unit.provider_unit_id == bindparam("hit_id"))
_UNIT_OF_HIT_FOR_WORKER = _OPEN_UNITS_FOR_WORKER.where(Unit.provider_unit_id == bindparam("hit_id"))
_HELD_HIT = (select(Unit.id, Unit.agent_id, Unit.worker_id, Unit.launch_id, Agent.provider_data)
             .join(Agent, Agent.id == Unit.agent_id)
             .where(Unit.task_run_id == bindparam("run_id"), Unit.provider_unit_id == bindparam("hit_id"),
                    Unit.status == UnitStatus.ASSIGNED.value, Agent.status == AgentStatus.IN_TASK.value))


def _candidate(
    session: Session, run: RunContext, reg: Registration, worker_id: int | None, can_do: WorkerCanDoUnit | None,
    freed: list[UnitTokens] | None, *, now: datetime,
) -> tuple[int, int, Any] | None:
    hit_id = reg.provider_data.get("hit_id")
    if not hit_id or not provider_class(run.provider_type).is_hit_based:
        return (_candidate_unit(session, run.run_id, worker_id) if can_do is None
                else _candidate_unit_for(session, run.run_id, worker_id, reg.worker_name, can_do))
    taken_back = _take_back_ended_assignment(session, run, str(hit_id),
                                             str(reg.provider_data.get("assignment_id") or ""), now=now)
    if taken_back is not None and freed is not None:
        freed.append(taken_back)
    query = _UNIT_OF_HIT if worker_id is None else _UNIT_OF_HIT_FOR_WORKER
    row = _run(session, query, {"run_id": run.run_id, "worker_id": worker_id, "hit_id": str(hit_id)}).first()
    if row is None or (can_do is not None and not _worker_can_do(can_do, reg.worker_name, row[2])):
        return None
    return int(row[0]), int(row[1]), row[2]


def _take_back_ended_assignment(
    session: Session, run: RunContext, hit_id: str, assignment_ref: str, *, now: datetime,
) -> UnitTokens | None:
    """MTurk hands a one-assignment HIT to a new assignment only once the previous one was returned or
    abandoned: the unit still held by that earlier assignment's agent comes back (the agent returned).
    Returns the unit taken back, whose worker's tokens are to be given back after the commit."""
    held = _run(session, _HELD_HIT, {"run_id": run.run_id, "hit_id": hit_id}).first()
    if held is None or not assignment_ref or (held.provider_data or {}).get("assignment_id") == assignment_ref:
        return None
    if not move_agent(session, held.agent_id, AgentStatus.IN_TASK, AgentStatus.RETURNED, now=now):
        return None
    if not move_unit(session, held.id, UnitStatus.ASSIGNED, UnitStatus.LAUNCHED, now=now, agent_id=None,
                     worker_id=None):
        return None
    return UnitTokens(run.run_id, int(held.id), held.launch_id, UnitStatus.LAUNCHED,
                      None if held.worker_id is None else int(held.worker_id), run.task_name)


def _candidate_unit(session: Session, run_id: int, worker_id: int | None) -> tuple[int, int, Any] | None:
    query = _OPEN_UNITS if worker_id is None else _OPEN_UNITS_FOR_WORKER
    if _dialect(session) == "postgresql":
        # Lock exactly the row we will claim: locking more would hide units from other workers.
        query = (_OPEN_UNITS_LOCKED if worker_id is None else _OPEN_UNITS_FOR_WORKER_LOCKED)
    row = _run(session, query, {"run_id": run_id, "worker_id": worker_id}).first()
    return None if row is None else (int(row[0]), int(row[1]), row[2])


def _candidate_unit_for(
    session: Session, run_id: int, worker_id: int | None, worker_name: str, can_do: WorkerCanDoUnit
) -> tuple[int, int, Any] | None:
    """The lowest launched unit the task's ``worker_can_do_unit`` hook lets this worker take.

    Candidates are read in batches without row locks (a lock on every unit the hook turns down would
    hide it from other workers); the claim's compare-and-set settles a race for the one chosen.
    """
    query = _OPEN_UNITS_AFTER if worker_id is None else _OPEN_UNITS_AFTER_FOR_WORKER
    after = 0
    while True:
        rows = _run(session, query, {"run_id": run_id, "worker_id": worker_id, "after_id": after}).all()
        for unit_id, assignment_id, data in rows:
            if _worker_can_do(can_do, worker_name, data):
                return int(unit_id), int(assignment_id), data
        if len(rows) < CAN_DO_BATCH:
            return None
        after = int(rows[-1][0])


def _worker_can_do(can_do: WorkerCanDoUnit, worker_name: str, data: Any) -> bool:
    try:
        return bool(can_do(worker_name, dict(data or {})))
    except Exception as error:
        # A bug in the task's hook is not a verdict on the worker: say so rather than refuse them.
        log.exception("the task's worker_can_do_unit hook failed")
        raise RequestError(f"the task's worker_can_do_unit hook failed: {type(error).__name__}: {error}",
                           500) from None


def _units_in_flight(session: Session, run_id: int, worker_id: int | None) -> bool:
    if _dialect(session) != "postgresql":
        return False  # SQLite serialises writers: no one else is choosing at this moment
    query = _OPEN_UNITS if worker_id is None else _OPEN_UNITS_FOR_WORKER
    return _run(session, query, {"run_id": run_id, "worker_id": worker_id}).first() is not None


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _claim(
    session: Session, run: RunContext, reg: Registration, worker_id: int, unit_id: int, assignment_id: int,
    *, now: datetime,
) -> str | None:
    """Insert the agent, then move the unit to it; undo the insert if the unit was taken meanwhile.
    The insert ignores conflicts, so a lost race costs no SAVEPOINT: it inserts nothing."""
    agent_id = secrets.token_hex(12)
    # An agent of an assignment whose agents work together waits for the others (``work.partners``).
    status = AgentStatus.WAITING if run.hooks.hosts_assignments else AgentStatus.IN_TASK
    agent = {
        "id": agent_id, "unit_id": unit_id, "assignment_id": assignment_id, "task_run_id": run.run_id,
        "worker_id": worker_id, "registration_id": reg.registration_id, "status": status.value,
        "provider_data": reg.provider_data, "init_data": {}, "created_at": now, "status_changed_at": now,
    }
    if _dialect(session) == "postgresql":
        # Both writes in one round trip; when the unit did not move, any agent inserted goes.
        if assign_unit_to_new_agent(session, agent):
            return agent_id
        _run(session, _DELETE_AGENT, {"agent_id": agent_id})
        return None
    if not insert_ignoring_conflicts(session, "agent", agent):
        return None  # this registration, or this worker on this assignment, won elsewhere
    if move_unit(session, unit_id, UnitStatus.LAUNCHED, UnitStatus.ASSIGNED, now=now,
                 agent_id=agent_id, worker_id=worker_id):
        return agent_id
    _run(session, _DELETE_AGENT, {"agent_id": agent_id})
    return None


@dataclass(frozen=True)
class Submission:
    unit_id: int
    agent_id: str
    worker_id: int
    first: bool
    launch_id: str | None = None  # the launch whose tokens the unit held (given back after the commit)
    run_cap: int = 0  # the run's max_num_concurrent_units as the submitting transaction read it
    run_open: bool = False  # neither completed nor shutting down, as that transaction read it
    server_url: str = ""
    # Another unit of the run not done, or a TaskRunner event not carried out, as the submitting statement
    # saw them (True: the run cannot be done yet; False: ask ``runs.task_runs.mark_completed_if_done``).
    run_has_more: bool = False


def submit_task(
    session: Session, run: RunContext, agent_id: str, outputs: dict[str, Any], *, now: datetime
) -> Submission:
    """Record an agent's final data; a repeated submit keeps the first answer and does no harm.

    The common case is one round trip on PostgreSQL, two on SQLite (:func:`complete_submission`); anything
    else (a repeat, a stranger, a closed agent) is read after."""
    done = complete_submission(session, agent_id, run.run_id, outputs=outputs, now=now) \
        if isinstance(agent_id, str) and agent_id else None
    if done is None:
        agent = load_agent(session, run, agent_id)
        status = AgentStatus(agent.status)
        if status == AgentStatus.COMPLETED:
            return Submission(agent.unit_id, agent.id, agent.worker_id, first=False)
        if status == AgentStatus.TIMEOUT:
            raise RequestError(TIMED_OUT, 409)
        raise RequestError(_not_recorded(status), 409)
    unit_id, worker_id, unit = done
    if unit is None:
        raise RequestError("this unit is no longer open for submissions", 409)
    return submitted(unit_id, agent_id, worker_id, unit)


def submitted(unit_id: int, agent_id: str, worker_id: int, unit: Any) -> Submission:
    """The first submission of an agent, from the submitting statement's row of its unit and run."""
    return Submission(unit_id, agent_id, worker_id, first=True, launch_id=unit.launch_id,
                      run_cap=int(unit.max_concurrent_units or 0),
                      run_open=not unit.is_completed and unit.shutdown_requested_at is None,
                      server_url=unit.server_url or "", run_has_more=bool(unit.run_has_more))


def _not_recorded(status: AgentStatus) -> str:
    if status in (AgentStatus.DISCONNECT, AgentStatus.EXPIRED):
        return TASK_CLOSED  # the run was stopped (a forced Ctrl-C, an expiry)
    return NO_LONGER_YOURS.format(status=status) + " Your submission was not recorded."


_DELETE_AGENT = delete(Agent).where(Agent.id == bindparam("agent_id"))
_LOAD_AGENT = select(Agent.id, Agent.unit_id, Agent.worker_id, Agent.task_run_id, Agent.status,
                     Agent.task_metadata).where(Agent.id == bindparam("agent_id"))


def load_agent(session: Session, run: RunContext, agent_id: str) -> Any:
    """The agent's few fields the hot path needs, checked to belong to this run."""
    agent = (_run(session, _LOAD_AGENT, {"agent_id": agent_id}).first()
             if isinstance(agent_id, str) and agent_id else None)
    if agent is None:
        raise RequestError(f"unknown agent id {agent_id!r}", 404)
    if agent.task_run_id != run.run_id:
        raise RequestError(f"agent {agent_id!r} does not belong to this task run", 403)
    return agent
