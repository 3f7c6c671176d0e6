"""What ``runs`` and ``status`` show: the runs with their units per status, one run's state (units, agents
in flight, its pool, its server, what failed), the deployment's processes and recorded servers, and why
a run is not progressing. Queries only; each returns frozen data for a face to print."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import func, select

from mephisto_dist import heartbeats
from mephisto_dist.architects import architect_class
from mephisto_dist.db import outbox
from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import Agent, Server, Task, TaskRun, Unit, Worker
from mephisto_dist.domain.diagnosis import (
    ProcessFacts,
    RunFacts,
    diagnose,
    diagnose_processes,
    workers_answer,
)
from mephisto_dist.domain.servers import ServerStatus
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.domain.unit_history import StatusSteps, UnitTimes, status_steps
from mephisto_dist.errors import NotFoundError, ServiceError
from mephisto_dist.providers import provider_class
from mephisto_dist.runs.launches import LaunchTrouble, launch_trouble, run_pool
from mephisto_dist.runs.task_runs import unit_counts
from mephisto_dist.runtime import Runtime

log = logging.getLogger(__name__)

IN_FLIGHT_SHOWN = 10
RECENT_SUBMISSIONS_MIN = 10


def run_not_found(run_id: int) -> NotFoundError:
    return NotFoundError(f"task run {run_id} does not exist")


# -- the runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    """One run in the ``runs`` table."""

    run_id: int
    task_name: str
    provider: str
    """The provider type, with `` (sandbox)`` for a marketplace's sandbox."""
    created_at: datetime
    counts: Mapping[UnitStatus, int]
    done: str
    """``yes``, ``stopping`` or ``no``."""


def list_runs(runtime: Runtime, task_name: str | None = None) -> list[RunRow]:
    """Every run (or every run of ``task_name``: :class:`NotFoundError` when it has none), by task name."""
    with read_transaction(runtime.sessions) as session:
        query = (select(TaskRun, Task.task_name).join(Task, Task.id == TaskRun.task_id)
                 .order_by(Task.task_name, TaskRun.id))
        if task_name is not None:
            query = query.where(Task.task_name == task_name)
        rows = session.execute(query).all()
        if task_name is not None and not rows:
            raise NotFoundError(f"no runs of task {task_name!r}")
        per_run: dict[int, dict[UnitStatus, int]] = defaultdict(dict)
        for run_id, status, count in session.execute(
                select(Unit.task_run_id, Unit.status, func.count()).group_by(Unit.task_run_id, Unit.status)):
            per_run[run_id][UnitStatus(status)] = count
    return [RunRow(
        run_id=run.id, task_name=name,
        provider=run.provider_type + (" (sandbox)" if run.sandbox and provider_class(run.provider_type).is_marketplace
                                      else ""),
        created_at=run.created_at, counts=dict(per_run.get(run.id, {})),
        done="yes" if run.is_completed else ("stopping" if run.shutdown_requested_at else "no"),
    ) for run, name in rows]


# -- one run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InFlight:
    unit_id: int
    worker_name: str
    assigned_at: datetime | None


@dataclass(frozen=True)
class FailedEvents:
    """TaskRunner events (outbox messages) of the run that failed every attempt."""

    count: int
    last_key: str
    last_error: str


@dataclass(frozen=True)
class RunStatus:
    """What ``status RUN_ID`` shows of one run."""

    run_id: int
    provider_type: str
    blueprint_type: str
    is_completed: bool
    stopping_reason: str | None
    """Why it is stopping (``""`` when no reason was given); ``None`` when no stop was requested."""
    server_url: str | None
    counts: Mapping[UnitStatus, int]
    in_flight: tuple[InFlight, ...]
    """The oldest assigned units first, at most :data:`IN_FLIGHT_SHOWN`."""
    recent_submissions: int
    """Units submitted over the last :data:`RECENT_SUBMISSIONS_MIN` minutes."""
    launch_trouble: LaunchTrouble
    failed_events: FailedEvents | None
    held: int | None
    """Concurrency tokens held (``None``: finished, or Redis did not answer)."""
    cap: int
    """The run's cap as the pool sees it (the stored one when Redis did not answer); 0 = unlimited."""
    server_answers: bool | None
    """Whether the deployment-served server answers (``None``: not probed)."""


def run_status(runtime: Runtime, run_id: int, *, now: datetime) -> RunStatus:
    """One run's state; :class:`NotFoundError` for an unknown run."""
    with read_transaction(runtime.sessions) as session:
        run = session.get(TaskRun, run_id)
        if run is None:
            raise run_not_found(run_id)
        counts = unit_counts(session, run_id)
        in_flight = tuple(InFlight(int(unit_id), str(worker_name), assigned_at) for unit_id, worker_name, assigned_at
                          in session.execute(
                              select(Unit.id, Worker.worker_name, Unit.assigned_at)
                              .join(Worker, Worker.id == Unit.worker_id)
                              .where(Unit.task_run_id == run_id, Unit.status == UnitStatus.ASSIGNED.value)
                              .order_by(Unit.assigned_at).limit(IN_FLIGHT_SHOWN)).all())
        recent = int(session.scalar(select(func.count()).select_from(Agent).where(
            Agent.task_run_id == run_id,
            Agent.submitted_at >= now - timedelta(minutes=RECENT_SUBMISSIONS_MIN))) or 0)
        trouble = launch_trouble(session, run_id)
        events = outbox.failed_messages(session, [run_id])
    finished = run.is_completed
    held: int | None = None
    cap: int | None = None
    if not finished and redis_may_answer(runtime):
        try:
            held = runtime.limiter.held(run_pool(run_id))
            cap = runtime.limiter.get_cap(run_pool(run_id))
        except ServiceError:
            held, cap = None, None
    probe = architect_class(run.architect_type).served_by_deployment and not finished
    return RunStatus(
        run_id=run_id, provider_type=run.provider_type, blueprint_type=run.blueprint_type, is_completed=finished,
        stopping_reason=(run.shutdown_reason or "") if run.shutdown_requested_at else None,
        server_url=run.server_url, counts=counts, in_flight=in_flight, recent_submissions=recent,
        launch_trouble=trouble,
        failed_events=FailedEvents(len(events), events[-1].key, events[-1].error) if events else None,
        held=held, cap=run.max_concurrent_units if cap is None else cap,
        server_answers=server_answers(run.server_url) if probe else None)


def unit_status_steps(runtime: Runtime, run_id: int) -> StatusSteps:
    """The run's units per status over time, from the units' timestamps (``domain.unit_history``): one
    query over the run's units, then a sweep (about a second for 10,000 units: callers keep it)."""
    with read_transaction(runtime.sessions) as session:
        rows = session.execute(
            select(Unit.status, Unit.created_at, Unit.launched_at, Unit.assigned_at, Unit.completed_at,
                   Unit.status_changed_at).where(Unit.task_run_id == run_id)).all()
    return status_steps(UnitTimes(UnitStatus(status), created, launched, assigned, completed, changed)
                        for status, created, launched, assigned, completed, changed in rows)


def unit_history_mark(runtime: Runtime, run_id: int) -> tuple[int, datetime | None]:
    """What changes when the run's history does: how many units it has, and their last status change
    (every status write sets ``status_changed_at``)."""
    with read_transaction(runtime.sessions) as session:
        count, last = session.execute(select(func.count(), func.max(Unit.status_changed_at))
                                      .where(Unit.task_run_id == run_id)).one()
    return int(count), last


def redis_may_answer(runtime: Runtime) -> bool:
    """False when the embedded Redis is not running (no attached run made its socket): asking it would
    only cost the client's connect retries (about 0.6 s) to learn that it does not answer."""
    settings = runtime.settings
    return not settings.embedded_redis or settings.embedded_redis_socket.exists()


def server_answers(url: str | None) -> bool:
    if not url:
        return False
    try:
        return httpx.get(url.rstrip("/") + "/task_config.json", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def run_diagnosis(status: RunStatus, processes: ProcessFacts, *, now: datetime, embedded: bool) -> list[str]:
    """Why the run is not progressing (and what the deployment's processes lack), one sentence each;
    ``embedded``: its Redis, workers and beat are the embedded ones of an attached run command."""
    counts = status.counts
    facts = RunFacts(
        is_completed=status.is_completed, shutdown_reason=status.stopping_reason or None,
        created=counts.get(UnitStatus.CREATED, 0), launched=counts.get(UnitStatus.LAUNCHED, 0),
        assigned=counts.get(UnitStatus.ASSIGNED, 0), cap=status.cap, held=status.held,
        oldest_assigned_at=status.in_flight[0].assigned_at if status.in_flight else None,
        server_url=status.server_url, server_answers=status.server_answers, workers_seen=workers_answer(processes),
        run_id=status.run_id, embedded=embedded,
        open_units=sum(counts.get(s, 0) for s in (UnitStatus.CREATED, UnitStatus.LAUNCHED, UnitStatus.ASSIGNED)))
    said = diagnose(facts, now=now)
    if embedded:  # the attached command runs its own worker and beat: nothing to start by hand
        return said
    return said + diagnose_processes(processes)


# -- the deployment ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processes:
    """The Celery workers and beat by their heartbeats in Redis (youngest first)."""

    facts: ProcessFacts
    workers: tuple[heartbeats.Seen, ...]
    beats: tuple[heartbeats.Seen, ...]


def processes(runtime: Runtime) -> Processes:
    """The deployment's workers and beat; ``facts.worker_ages_s`` is ``None`` when Redis does not answer."""
    stale_s = runtime.settings.heartbeat_stale_s
    if not redis_may_answer(runtime):
        return Processes(ProcessFacts(None, None, stale_s), (), ())
    try:
        workers = heartbeats.last_seen(runtime.redis, "worker")
        beats = heartbeats.last_seen(runtime.redis, "beat")
    except ServiceError:
        return Processes(ProcessFacts(None, None, stale_s), (), ())
    facts = ProcessFacts([s.age_s for s in workers], [s.age_s for s in beats], stale_s,
                         queued=_queued(runtime) if workers else None)
    return Processes(facts, tuple(workers), tuple(beats))


def _queued(runtime: Runtime) -> int | None:
    """The default queue's tasks no worker took; ``None`` when the broker does not say."""
    try:
        return runtime.queue.waiting()
    except Exception as error:  # noqa: BLE001 - a figure for status, never a reason for it to fail
        log.debug("the queue's length is unknown: %s", error)
        return None


@dataclass(frozen=True)
class ServerView:
    """A recorded worker-facing server."""

    server_id: int
    status: str
    task_run_id: int | None
    architect: str
    address: str | None
    instance_id: str | None
    pid: int | None
    host: str
    heartbeat_at: datetime | None
    note: str | None
    redeployed_by_beat: bool
    """Whether beat redeploys it when lost (its architect deploys remotely)."""
    run_ended: bool = False
    """Its run is complete (or gone): a server still recorded running died without saying so."""

    @property
    def lost(self) -> bool:
        return self.status == ServerStatus.LOST.value

    @property
    def running(self) -> bool:
        return self.status == ServerStatus.RUNNING.value


def servers(runtime: Runtime, task_run_id: int | None) -> list[ServerView]:
    """The servers of one run, or every one not stopped."""
    with read_transaction(runtime.sessions) as session:
        query = select(Server).order_by(Server.id)
        query = (query.where(Server.task_run_id == task_run_id) if task_run_id is not None
                 else query.where(Server.status != ServerStatus.STOPPED.value))
        rows = session.scalars(query).all()
        run_ids = {s.task_run_id for s in rows if s.task_run_id is not None}
        open_ids = set(session.scalars(select(TaskRun.id).where(
            TaskRun.id.in_(run_ids), TaskRun.is_completed.is_(False)))) if run_ids else set()
    return [ServerView(
        server_id=s.id, status=s.status, task_run_id=s.task_run_id, architect=s.architect, address=s.address,
        instance_id=s.instance_id, pid=s.pid, host=s.host, heartbeat_at=s.heartbeat_at, note=s.note,
        redeployed_by_beat=architect_class(s.architect).deploys_remotely,
        run_ended=s.task_run_id is not None and s.task_run_id not in open_ids) for s in rows]
