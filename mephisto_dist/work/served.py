"""The run a web process serves and the long-lived parts every request of it shares."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from mephisto_dist.architects import architect_types
from mephisto_dist.blueprints.runner import runner_for
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import Task, TaskRun
from mephisto_dist.errors import RequestError, ServiceError
from mephisto_dist.limiter import Acquired, PoolLimit
from mephisto_dist.limiter.deferred import DeferredReleases
from mephisto_dist.providers import CrowdProvider, make_provider, provider_class
from mephisto_dist.runs.bundles import run_files
from mephisto_dist.runtime import Runtime
from mephisto_dist.work.claims import RunContext, WorkerGate
from mephisto_dist.work.uploads import UploadStore

if TYPE_CHECKING:
    from mephisto_dist.db.async_statements import AsyncStatements

RESOLVE_CACHE_S = 2.0

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


class RunResolver:
    """Which run this server serves: a fixed one, or the open run of the local architect on our port (the
    Procfile's ``web`` process serves whatever run is launched on its port). Once serving a run it keeps
    serving it until the run completes, so its workers' submissions are never turned away; creating a
    second open run on one port is refused (``runs.run_on_port``)."""

    def __init__(self, runtime: Runtime, run_id: int | None, port: int | None) -> None:
        self._runtime = runtime
        self._run_id = run_id
        self._port = port
        self._cached: RunContext | None = None
        self._cached_at = 0.0

    def cached(self) -> RunContext | None:
        """The run ``current`` would answer without reading the database (a fixed run once read, the run
        on our port for ``RESOLVE_CACHE_S``); None when it must read. Does no I/O: an async caller
        needs a thread only for ``current`` when this is None."""
        cached = self._cached
        if cached is not None and (self._run_id is not None or
                                   time.monotonic() - self._cached_at < RESOLVE_CACHE_S):
            return cached
        return None

    def current(self) -> RunContext:
        cached = self.cached()
        if cached is not None:
            return cached
        # Read-only: it must not queue behind a launch's write (on SQLite a first request waited seconds
        # for a 3,000-unit launch).
        with read_transaction(self._runtime.sessions) as session:
            run = session.get(TaskRun, self._run_id) if self._run_id is not None else self._by_port(session)
            if run is None:
                raise RequestError("no task run is being served here", 404)
            task_name = session.scalar(select(Task.task_name).where(Task.id == run.task_id)) or ""
            files = run_files(self._runtime.bundles, run)
            self._cached = RunContext.from_config(run.id, run.task_id, task_name, run.provider_type,
                                                  str(files.build_dir), run.config, files.hooks,
                                                  cap=run.max_concurrent_units or 0)
        self._cached_at = time.monotonic()
        return self._cached

    def _by_port(self, session: Session) -> TaskRun | None:
        if self._cached is not None:
            serving = session.get(TaskRun, self._cached.run_id)
            if serving is not None and not serving.is_completed:
                return serving
        runs = session.scalars(
            select(TaskRun).where(TaskRun.is_completed.is_(False), TaskRun.architect_type.in_(architect_types(lambda cls: cls.served_by_deployment)))
            .order_by(TaskRun.id.desc()).limit(20)
        )
        for run in runs:
            if self._port is None or RunConfig.parse(run.config).architect.port == self._port:
                return run
        return None


class ProviderCache:
    """One provider object per run served (providers hold no per-request state)."""

    def __init__(self) -> None:
        self._by_run: dict[int, CrowdProvider] = {}

    def get(self, run: RunContext) -> CrowdProvider:
        provider = self._by_run.get(run.run_id)
        if provider is None:
            provider = self._by_run[run.run_id] = make_provider(run.provider_type, run.run_config.provider.args)
        return provider


@dataclass(frozen=True)
class HandOver(Generic[T]):
    """A capped submission's slot, to move in Redis from the finished unit's launch to the next unit's
    (``Limiter.swap(old_holder, holder, pools)``), and what follows the swap: ``then(taken)`` with its
    outcome, or the ServiceError it failed with (the launch's record, or the intent withdrawn)."""

    old_holder: str
    holder: str
    pools: list[PoolLimit]
    then: Callable[[Acquired | ServiceError], T]
    then_on_loop: Callable[[AsyncStatements], Awaitable[T | AfterCommit[T]]] | None = None
    """PostgreSQL: ``then`` for a swap that took the slot, on the web's event loop (the launch's record
    sent through ``db.async_statements``); what it hands back is done on a thread."""


@dataclass(frozen=True)
class AfterCommit(Generic[T]):
    """A service call whose transaction has committed, and the work that follows its commit and may wait
    (Redis, another transaction): ``finish`` does it and returns the call's result. With ``handover``, the
    same work can be done in two steps: the swap made by the caller (``limiter.redis_pool.AsyncSwap``),
    then ``handover.then``."""

    finish: Callable[[], T]
    handover: HandOver[T] | None = None


def finished(result: T | AfterCommit[T]) -> T:
    """The call's result, its work after the commit done here if it handed any back."""
    return result.finish() if isinstance(result, AfterCommit) else result


@dataclass(frozen=True)
class Served:
    """Everything a request's service function needs: built once per web process."""

    runtime: Runtime
    resolver: RunResolver
    providers: ProviderCache
    gate: WorkerGate
    uploads: UploadStore
    releases: DeferredReleases
    """Token releases no request waits for (an uncapped run's submissions), given back in batches."""

    @classmethod
    def for_runtime(cls, runtime: Runtime, *, run_id: int | None = None, port: int | None = None) -> Served:
        return cls(runtime, RunResolver(runtime, run_id, port), ProviderCache(),
                   WorkerGate(runtime.limiter, runtime.settings.lease_ttl_s),
                   UploadStore(runtime.storage), DeferredReleases(runtime.limiter))

    def run(self) -> RunContext:
        return self.resolver.current()

    def cached_run(self) -> RunContext | None:
        """The run served when known without a database read, else None (then call ``run``)."""
        return self.resolver.cached()

    def database_only(self, run: RunContext) -> bool:
        """Whether ``request_agent`` and ``submit_task`` on this run talk to nothing but the database
        (no Redis, Celery or crowd-provider call, nor the task's own code, while the request waits): no cap
        on the run or the deployment, no per-worker limits, no qualification gate or onboarding, no
        ``worker_can_do_unit`` hook, no TaskRunner event or live channel, no HIT taken back (MTurk). An
        uncapped run's tokens are given back off the request (``releases``).

        The run's cap is the one read with ``run``: a cap set on the run while it goes (``limits``) makes
        its submissions use Redis, and is seen here when the run is read again (every ``RESOLVE_CACHE_S``
        for a run served by port, as ``mephisto-dist run`` and the Procfile's ``web`` serve it; for a run
        served by id, ``web --run``, when the process starts)."""
        settings = self.runtime.settings
        return self.commits_alone(run) and not (run.cap_when_read or run.run_config.task.max_num_concurrent_units
                                                or settings.max_concurrent_units)

    def commits_alone(self, run: RunContext) -> bool:
        """Whether ``request_agent`` and ``submit_task`` on this run write nothing but their own rows and talk
        to nothing but the database up to their commit (``claims_alone``, and no TaskRunner event written
        with a submission). A cap is allowed: what follows a capped submission's commit (its slot handed over
        in Redis, the next launch recorded) is handed back (``submissions.submit_task(split=True)``)."""
        runner = runner_for(run.run_config.blueprint.blueprint_type)
        return self.claims_alone(run) and not runner.wants_unit_submitted(run.hooks)

    def claims_alone(self, run: RunContext) -> bool:
        """Whether a ``request_agent`` on this run writes nothing but the claim (a worker, an agent, its
        unit) and talks to nothing but the database: no per-worker limits, no qualification gate or
        onboarding, no ``worker_can_do_unit`` hook, no TaskRunner event, live channel or partners, no HIT
        taken back (MTurk). A cap does not matter here: a claim takes no token. On PostgreSQL such a
        claim is first tried as one statement (``db.transitions.claim_alone_statement``)."""
        runner = runner_for(run.run_config.blueprint.blueprint_type)
        return not (run.allowed_concurrent or run.maximum_units_per_worker or run.gated
                    or run.onboarding_qualification or run.screening is not None or run.golds is not None
                    or run.hooks.worker_can_do_unit is not None
                    or runner.live or runner.wants_unit_assigned
                    or run.hooks.hosts_assignments or provider_class(run.provider_type).is_hit_based)
