"""Launching units on the crowd provider, shaped for a remote marketplace.

A launch of one unit has an id (:func:`new_launch_id`), unique to it and never reused. It is

1. the *owner of the unit's concurrency tokens*: the holder is ``launch:<id>``, so two launchers can
   never share, or give back, each other's token;
2. recorded as an *intent* (the unit stays ``created`` with ``launch_id`` set) in one transaction, after
   its tokens were taken and before the provider is called;
3. the provider's *idempotency token*: the call is made outside any transaction, paced by the shared
   rate bucket, and a re-send of the same launch publishes nothing new;
4. *recorded* (``created -> launched``, compare-and-set on the launch id) in another transaction.

A launcher that dies between 2 and 4 leaves an intent whose ``launch_retry_at`` passes; beat's sweep
(:func:`resend_due_launches`) claims it and sends it again with the same id. A failed call is re-sent
after a growing delay, and after ``provider_max_attempts`` sends in all the unit is marked failed with the
provider's message (``status`` shows it; ``review resend`` tries again).

The invariant: every unit ``launched`` or ``assigned`` holds a live token in its run's pool (and the
deployment's), taken before the intent and given back only by its owner after the unit stops counting,
by lease expiry, or by a reconciler that proved its unit done (``reconcile.reconcile_pools``). A pool
lost to a Redis flush refuses every acquire until one process rebuilds it from the database
(:func:`rebuild_pool`), which counts intents as well as active units.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import read_transaction, single_statement, transaction
from mephisto_dist.db.models import GrantedQualification, Qualification, TaskRun, Unit, Worker
from mephisto_dist.db.prepared import run as run_prepared
from mephisto_dist.db.transitions import record_launched, record_launched_statement
from mephisto_dist.domain.launch import out_of_attempts, retry_at
from mephisto_dist.domain.qualifications import meets_requirements
from mephisto_dist.domain.status import UNIT_ACTIVE, UNIT_DONE, UnitStatus
from mephisto_dist.errors import NotFoundError, ServiceError
from mephisto_dist.limiter import Acquired, Limiter, PoolLimit, RateBucket, keys
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens, token_holder
from mephisto_dist.metrics import record_provider_call
from mephisto_dist.providers import CrowdProvider, UnitLaunch

if TYPE_CHECKING:
    from mephisto_dist.db.async_statements import AsyncStatements
    from mephisto_dist.runtime import Runtime

log = logging.getLogger(__name__)

LAUNCH_BATCH = 200
UNCAPPED_LAUNCH_BATCH = 1000
RESEND_BATCH = 100
MAX_ERROR_CHARS = 2000
PROVIDER_BUCKET = "provider-calls"
GLOBAL_POOL = keys.deployment_units_pool()
_ACTIVE = [s.value for s in UNIT_ACTIVE]
_DONE = [s.value for s in UNIT_DONE]


def run_pool(run_id: int) -> str:
    return keys.run_units_pool(run_id)


def new_launch_id() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True)
class LaunchContext:
    """What launching needs besides the database. ``bucket`` paces the provider's calls across every
    process (``None``, or a provider that publishes instantly: nothing remote to pace)."""

    limiter: Limiter
    provider: CrowdProvider
    lease_s: float
    global_cap: int
    bucket: RateBucket | None = None
    calls_per_s: float = 5.0
    max_attempts: int = 5
    retry_base_s: float = 10.0

    @classmethod
    def of(cls, runtime: Runtime, provider: CrowdProvider) -> LaunchContext:
        settings = runtime.settings
        return cls(runtime.limiter, provider, settings.lease_ttl_s, settings.max_concurrent_units,
                   None if provider.publishes_instantly else runtime.rate_bucket, settings.provider_calls_per_s,
                   settings.provider_max_attempts, settings.provider_retry_base_s)

    @property
    def stale_after(self) -> timedelta:
        """How long a sender may take before beat presumes it dead and re-sends its launch."""
        return timedelta(seconds=self.lease_s)


@dataclass(frozen=True)
class _Plan:
    run_id: int
    server_url: str
    task_args: dict[str, Any]
    pools: list[PoolLimit]
    batch: int
    capped: bool


# -- the pools --------------------------------------------------------------------------------------


def pools_for(ctx: LaunchContext, run_id: int, cap: int) -> list[PoolLimit]:
    pools = [PoolLimit(run_pool(run_id), cap, ctx.lease_s, rebuilt_from_db=True)] if cap else []
    if ctx.global_cap:
        pools.append(PoolLimit(GLOBAL_POOL, ctx.global_cap, ctx.lease_s, rebuilt_from_db=True))
    return pools


def pool_members(session: Session, run_ids: Sequence[int] | None) -> set[str]:
    """Who holds the tokens of a pool over these runs (``None``: every open run), the database being the
    source of truth: every unit launched or assigned, and every launch in flight."""
    query = select(Unit.id, Unit.launch_id).where(
        (Unit.status.in_(_ACTIVE)) | ((Unit.status == UnitStatus.CREATED.value) & Unit.launch_id.is_not(None)))
    if run_ids is None:
        query = query.join(TaskRun, TaskRun.id == Unit.task_run_id).where(TaskRun.is_completed.is_(False))
    else:
        query = query.where(Unit.task_run_id.in_(list(run_ids)))
    return {token_holder(unit_id, launch_id) for unit_id, launch_id in session.execute(query)}


def rebuild_pool(factory: sessionmaker[Session], limiter: Limiter, pool: str, lease_s: float) -> None:
    """Rebuild a pool Redis lost. Nothing can be acquired in it meanwhile, so the recount is exact; of
    several processes rebuilding at once the first one's write stands."""
    run_ids: list[int] | None = None
    if pool != GLOBAL_POOL:
        run_ids = [int(pool.split(":")[1])]
    with read_transaction(factory) as session:
        members = pool_members(session, run_ids)
    say_if_lost(pool, limiter.rebuild(pool, members, lease_s))


def say_if_lost(pool: str, rebuilt: int | None) -> None:
    """Warn that a pool was lost, when this caller's rebuild (``rebuilt``: its count, ``None`` when another
    process rebuilt it first) put back tokens the database counts. A pool rebuilt empty lost nothing:
    a new run's pool is built on its first launch, before any unit of it counts."""
    if rebuilt:
        log.warning("concurrency pool %s was lost (Redis restarted or was flushed, or a lease ran out while beat "
                    "was not renewing it): rebuilt with %d tokens", pool, rebuilt)


def set_run_cap(factory: sessionmaker[Session], limiter: Limiter, run_id: int, cap: int, *, lease_s: float) -> None:
    """Store a live run's new cap. A cap set (again) is counted afresh from the database: while the run
    was uncapped nobody kept its pool, and the units launched then hold no token. The cap is stored with
    the pool marked lost in one step, so no launcher takes a token until the recount is written."""
    pool = run_pool(run_id)
    limiter.set_cap(pool, cap, recount=cap > 0)
    if cap > 0:
        with read_transaction(factory) as session:
            members = pool_members(session, [run_id])
        limiter.rebuild(pool, members, lease_s)


def _acquire(factory: sessionmaker[Session], ctx: LaunchContext, holder: str, pools: list[PoolLimit]) -> bool:
    for _ in range(3):
        taken = ctx.limiter.acquire(holder, pools)
        if taken.lost_pool is None:
            return taken.ok
        rebuild_pool(factory, ctx.limiter, taken.lost_pool, ctx.lease_s)
    return False


# -- launching ---------------------------------------------------------------------------------------


_RUN = select(TaskRun.is_completed, TaskRun.shutdown_requested_at, TaskRun.max_concurrent_units,
              TaskRun.server_url, TaskRun.config).where(TaskRun.id == bindparam("run_id"))
_COUNTING = select(func.count()).select_from(Unit).where(
    Unit.task_run_id == bindparam("run_id"),
    (Unit.status.in_(_ACTIVE)) | ((Unit.status == UnitStatus.CREATED.value) & Unit.launch_id.is_not(None)))


def launch_units(factory: sessionmaker[Session], ctx: LaunchContext, run_id: int, *, now: datetime) -> int:
    """Launch created units of a run while its pools have room; return how many were launched.

    Safe from any number of processes at once: each token is taken by a fresh launch id, a unit is
    bound to one launch by a compare-and-set, and only the launch that took a token gives it back.
    """
    launched = 0
    while True:
        plan = _plan(factory, ctx, run_id)
        if plan is None:
            return launched
        launch_ids, refused = _take_tokens(factory, ctx, plan)
        launches = _record_intents(factory, ctx, plan, launch_ids, now=now)
        launches = _still_held(factory, ctx, plan, launches)
        launched += send_launches(factory, ctx, plan.server_url, plan.task_args, launches, now=now)
        if refused or plan.capped or len(launch_ids) < plan.batch or len(launches) < len(launch_ids):
            return launched


# -- a freed slot handed straight over (the submit path) -----------------------------------------------


_UNITS = cast(Table, Unit.__table__)
# The run's lowest created unit that no launch owns, bound to a fresh launch as an intent, in one
# statement. SKIP LOCKED (PostgreSQL): two submits at once bind two different units.
_BIND_NEXT = (update(_UNITS)
              .where(_UNITS.c.id == select(Unit.id).where(
                  Unit.task_run_id == bindparam("run_id"), Unit.status == UnitStatus.CREATED.value,
                  Unit.launch_id.is_(None), Unit.launch_failed_at.is_(None))
                  .order_by(Unit.id).limit(1).with_for_update(skip_locked=True).scalar_subquery(),
                  _UNITS.c.status == UnitStatus.CREATED.value, _UNITS.c.launch_id.is_(None))
              .values(launch_id=bindparam("launch_id"), launch_attempts=1, launch_error=None,
                      launch_retry_at=bindparam("retry_at"))
              .returning(_UNITS.c.id))


def bind_next_launch(session: Session, ctx: LaunchContext, run_id: int, *, now: datetime) -> UnitLaunch | None:
    """In the caller's transaction (the one ending a unit that held a slot): record the intent to launch
    the run's next created unit, for :func:`hand_over` to give it that slot after the commit. ``None``
    when no unit is left to launch.

    The intent counts in a pool rebuilt from the database from the commit on, while the token is still
    the finished unit's: the count is the same, and ``hand_over`` moves the token in one step."""
    unit_id = run_prepared(session.connection(), _BIND_NEXT, {
        "run_id": run_id, "launch_id": (launch_id := new_launch_id()), "retry_at": now + ctx.stale_after}).scalar()
    return None if unit_id is None else UnitLaunch(run_id, int(unit_id), launch_id)


def hand_over(factory: sessionmaker[Session], ctx: LaunchContext, freed_holder: str, launch: UnitLaunch,
              pools: list[PoolLimit], server_url: str, task_args: dict[str, Any], *, now: datetime,
              taken: Acquired | ServiceError | None = None) -> int | None:
    """Move the slot ``freed_holder`` (a unit just done) held to the launch :func:`bind_next_launch`
    recorded, and send that launch; return how many units were launched (0 or 1).

    One limiter step gives the finished unit's tokens back and takes the launch's, so no other launcher
    can take the slot in between and the unit is offered as soon as this returns. A pool that refuses (a
    cap lowered, or the slot taken after a reconciler removed the finished unit's token) withdraws the
    intent. ``None``: a pool was lost; the intent is withdrawn and the finished unit's tokens given back,
    for the caller to fall back on :func:`launch_units`, which rebuilds it.

    ``taken``: the swap's outcome when the caller made it (``limiter.redis_pool.AsyncSwap`` on the web's
    event loop), or the ServiceError it failed with."""
    if taken is None:
        try:
            taken = ctx.limiter.swap(freed_holder, token_holder(launch.unit_id, launch.launch_id), pools)
        except ServiceError as error:
            taken = error
    if isinstance(taken, ServiceError):
        # Redis is not answering: clear the intent now, so beat's repair refills the slot on its next
        # sweep instead of re-sending this launch once its retry time (a lease) has passed.
        _clear_intents(factory, [launch])
        raise taken
    if not taken.ok:
        _withdraw(factory, ctx, [p.pool for p in pools], [launch])
        if taken.lost_pool is not None:
            ctx.limiter.release(freed_holder, [p.pool for p in pools])
            return None
        return 0
    return send_launches(factory, ctx, server_url, task_args, [launch], now=now)


def _plan(factory: sessionmaker[Session], ctx: LaunchContext, run_id: int) -> _Plan | None:
    stored_cap = ctx.limiter.get_cap(run_pool(run_id))
    with read_transaction(factory) as session:
        connection = session.connection()
        run = connection.execute(_RUN, {"run_id": run_id}).first()
        if run is None:
            raise NotFoundError(f"task run {run_id} does not exist")
        if run.is_completed or run.shutdown_requested_at is not None:
            return None
        cap = run.max_concurrent_units if stored_cap is None else stored_cap
        # No fresh launch ids or tokens for units that are not there: an uncapped run launched all of
        # its units at once, and a submit there must not mint a batch of ids only to give them back.
        batch = min(UNCAPPED_LAUNCH_BATCH, int(connection.execute(_LAUNCHABLE, {"run_id": run_id}).scalar_one()))
        if batch <= 0:
            return None
        if cap:
            # The pool decides; this count only keeps a launcher from taking tokens it cannot use.
            batch = min(batch, LAUNCH_BATCH, cap - int(connection.execute(_COUNTING, {"run_id": run_id}).scalar_one()))
            if batch <= 0:
                return None
    return _Plan(run_id, run.server_url or "", launch_args(run.config), pools_for(ctx, run_id, cap), batch, bool(cap))


def launch_args(config: dict[str, Any] | None) -> dict[str, Any]:
    """The run's ``mephisto.task`` arguments, with the blueprint's qualification requirements and block
    qualification, which a remote provider turns into its own (MTurk's QualificationRequirements)."""
    return RunConfig.parse(config).launch_args()


def _take_tokens(factory: sessionmaker[Session], ctx: LaunchContext, plan: _Plan) -> tuple[list[str], bool]:
    """Fresh launch ids, each holding a token in every pool; True when a pool refused more."""
    launch_ids: list[str] = []
    for _ in range(plan.batch):
        launch_id = new_launch_id()
        if plan.pools and not _acquire(factory, ctx, f"launch:{launch_id}", plan.pools):
            return launch_ids, True
        launch_ids.append(launch_id)
    return launch_ids, False


_LAUNCHABLE = select(func.count()).select_from(Unit).where(
    Unit.task_run_id == bindparam("run_id"), Unit.status == UnitStatus.CREATED.value, Unit.launch_id.is_(None),
    Unit.launch_failed_at.is_(None))
_CANDIDATES = (select(Unit.id).where(Unit.task_run_id == bindparam("run_id"),
                                      Unit.status == UnitStatus.CREATED.value, Unit.launch_id.is_(None),
                                      Unit.launch_failed_at.is_(None))
               .order_by(Unit.id).limit(bindparam("limit")))


# A created unit no launch owns, bound to a launch (executed for a batch); then which launches took.
_BIND_INTENT = (update(_UNITS)
                .where(_UNITS.c.id == bindparam("unit_id"), _UNITS.c.status == UnitStatus.CREATED.value,
                       _UNITS.c.launch_id.is_(None))
                .values(launch_id=bindparam("launch_id"), launch_attempts=1, launch_error=None,
                        launch_retry_at=bindparam("retry_at")))
_BOUND_TO = select(_UNITS.c.launch_id).where(_UNITS.c.launch_id.in_(bindparam("launch_ids", expanding=True)))


def _record_intents(factory: sessionmaker[Session], ctx: LaunchContext, plan: _Plan, launch_ids: list[str],
                    *, now: datetime) -> list[UnitLaunch]:
    """Bind created units to the launch ids (one transaction); give back the tokens left unused."""
    launches: list[UnitLaunch] = []
    if launch_ids:
        with transaction(factory) as session:
            connection = session.connection()
            # SKIP LOCKED (PostgreSQL): concurrent launchers pick disjoint units instead of queueing.
            candidates = list(connection.execute(_CANDIDATES.with_for_update(skip_locked=True),
                                                 {"run_id": plan.run_id, "limit": len(launch_ids)}).scalars())
            pairs = list(zip(candidates, launch_ids, strict=False))
            if pairs:
                # One statement for the batch (executemany): a thousand single updates held SQLite's
                # write lock for a third of a second, and every claim queued behind it.
                connection.execute(_BIND_INTENT, [
                    {"unit_id": unit_id, "launch_id": launch_id, "retry_at": now + ctx.stale_after}
                    for unit_id, launch_id in pairs])
                bound = set(connection.execute(_BOUND_TO, {"launch_ids": [launch_id for _, launch_id in pairs]})
                            .scalars())
                launches = [UnitLaunch(plan.run_id, unit_id, launch_id) for unit_id, launch_id in pairs
                            if launch_id in bound]
    used = {launch.launch_id for launch in launches}
    for launch_id in launch_ids:
        if launch_id not in used and plan.pools:
            ctx.limiter.release(f"launch:{launch_id}", [p.pool for p in plan.pools])
    return launches


def _still_held(factory: sessionmaker[Session], ctx: LaunchContext, plan: _Plan,
                launches: list[UnitLaunch]) -> list[UnitLaunch]:
    """The launches whose tokens are still there now that their intent is recorded. A token lost in
    between (a Redis flush before the intent existed to be counted by the rebuild) means the slot may
    be someone else's: that launch is withdrawn.

    A run planned uncapped whose cap was set meanwhile (``limits --max-concurrent``): its launches take
    a token now, or are withdrawn. The cap is read after the intents were committed, and the command
    recounts the pool from the database after storing the cap, so each intent is either counted by
    that recount or sees the cap here."""
    if not launches:
        return launches
    pools = [p.pool for p in plan.pools]
    kept = launches
    if plan.pools:
        held = set.intersection(*(ctx.limiter.holders(pool) for pool in pools))
        kept = [launch for launch in launches if f"launch:{launch.launch_id}" in held]
    if not plan.capped and (cap := ctx.limiter.get_cap(run_pool(plan.run_id))):
        capped = PoolLimit(run_pool(plan.run_id), cap, ctx.lease_s, rebuilt_from_db=True)
        pools.append(capped.pool)
        kept = [launch for launch in kept if _acquire(factory, ctx, f"launch:{launch.launch_id}", [capped])]
    if not pools:
        return launches
    _withdraw(factory, ctx, pools, [launch for launch in launches if launch not in kept])
    return kept


def _withdraw(factory: sessionmaker[Session], ctx: LaunchContext, pools: list[str],
              launches: list[UnitLaunch]) -> None:
    """Clear intents that will not be sent (their units are launchable again) and give back whatever
    tokens their launches hold."""
    if not launches:
        return
    _clear_intents(factory, launches)
    for launch in launches:
        ctx.limiter.release(f"launch:{launch.launch_id}", pools)


def _clear_intents(factory: sessionmaker[Session], launches: list[UnitLaunch]) -> None:
    with transaction(factory) as session:
        for launch in launches:
            session.execute(update(Unit).where(Unit.id == launch.unit_id, Unit.launch_id == launch.launch_id,
                                               Unit.status == UnitStatus.CREATED.value)
                            .values(launch_id=None, launch_attempts=0, launch_retry_at=None))


def _pace(ctx: LaunchContext) -> None:
    """Wait for a token of the shared provider-call bucket (global across processes)."""
    if ctx.bucket is None or ctx.provider.publishes_instantly or ctx.calls_per_s <= 0:
        return
    while (wait_s := ctx.bucket.take(PROVIDER_BUCKET, ctx.calls_per_s, max(1, int(ctx.calls_per_s)))) > 0:
        time.sleep(wait_s)


def send_launches(factory: sessionmaker[Session], ctx: LaunchContext, server_url: str, task_args: dict[str, Any],
                  launches: Sequence[UnitLaunch], *, now: datetime) -> int:
    """Call the provider for each launch (no transaction open) and record the outcomes; return how many
    units this call moved to ``launched``.

    A remote marketplace lists a HIT as soon as it is made, and a worker may take it at once: each
    launch is recorded right after its call, so the HIT is known here within one transaction instead
    of after the whole paced batch. Instant publishing records the batch in one transaction."""
    if launches and ctx.provider.is_study_based and task_args.get("qualifications"):
        task_args = {**task_args, "allowed_workers": _allowed_workers(factory, ctx, launches[0].run_id, task_args)}
    if ctx.provider.publishes_instantly:
        return _send_and_record(factory, ctx, server_url, task_args, launches, now=now)
    return sum(_send_and_record(factory, ctx, server_url, task_args, [launch], now=now) for launch in launches)


# Per process and database: the workers known to meet a run's qualifications, worked out once (a
# study-based provider reads them only when it makes the run's study, on its first launch).
_ALLOWED: weakref.WeakKeyDictionary[sessionmaker[Session], dict[tuple[int, str], list[str]]] = \
    weakref.WeakKeyDictionary()


def _allowed_workers(factory: sessionmaker[Session], ctx: LaunchContext, run_id: int,
                     task_args: dict[str, Any]) -> list[str]:
    """The names of the provider's known workers who meet the run's qualification requirements and are
    not blocked (from every task, or by the run's block qualification): what a study-based provider puts in
    its allow list (Mephisto's participant group of qualified workers)."""
    key = (run_id, ctx.provider.provider_type)
    known = _ALLOWED.setdefault(factory, {})
    if key in known:
        return known[key]
    block = task_args.get("block_qualification")
    requirements = list(task_args.get("qualifications") or [])
    granted: dict[int, dict[str, int]] = {}
    with read_transaction(factory) as session:
        workers = {worker_id: name for worker_id, name in session.execute(select(Worker.id, Worker.worker_name).where(
            Worker.provider_type == ctx.provider.provider_type, Worker.is_blocked.is_(False)))}
        for worker_id, name, value in session.execute(
                select(GrantedQualification.worker_id, Qualification.name, GrantedQualification.value)
                .join(Qualification, Qualification.id == GrantedQualification.qualification_id)
                .join(Worker, Worker.id == GrantedQualification.worker_id)
                .where(Worker.provider_type == ctx.provider.provider_type)):
            granted.setdefault(worker_id, {})[name] = value
    allowed = sorted(name for worker_id, name in workers.items()
                     if not (block and block in granted.get(worker_id, {}))
                     and meets_requirements(granted.get(worker_id, {}), requirements,
                                            provider_type=ctx.provider.provider_type))
    known[key] = allowed
    return allowed


def _send_and_record(factory: sessionmaker[Session], ctx: LaunchContext, server_url: str,
                     task_args: dict[str, Any], launches: Sequence[UnitLaunch], *, now: datetime) -> int:
    published, failed = _publish(ctx, server_url, task_args, launches)
    if len(published) == 1 and not failed:
        # The common case (a slot handed over, a unit refilled): one statement, atomic by itself.
        with single_statement(factory) as connection:
            if record_launched(connection, [_recorded(*published[0])], now=now):
                return 1
    return _record_outcomes(factory, ctx, published, failed, now=now)


async def send_launch_on_loop(statements: AsyncStatements, factory: sessionmaker[Session], ctx: LaunchContext,
                              server_url: str, task_args: dict[str, Any], launch: UnitLaunch, *,
                              now: datetime) -> Callable[[], int] | None:
    """PostgreSQL, the web's event loop: :func:`send_launches` of one launch that took its slot (a capped
    submission's hand-over) where publishing is instant and reads nothing (no qualification allow-list),
    the record sent through ``statements``. None when recorded (one unit launched); else what is left to
    do on a thread (the failure or the orphan recorded, as :func:`send_launches` does), which returns how
    many units were launched. Nothing is published twice."""
    assert ctx.provider.publishes_instantly and not (ctx.provider.is_study_based and task_args.get("qualifications"))
    published, failed = _publish(ctx, server_url, task_args, [launch])
    if published:
        statement, params = record_launched_statement(_recorded(*published[0]), now=now)
        if (await statements.run(statement, params)).first() is not None:
            return None
    return functools.partial(_record_outcomes, factory, ctx, published, failed, now=now)


def _publish(ctx: LaunchContext, server_url: str, task_args: dict[str, Any],
             launches: Sequence[UnitLaunch]) -> tuple[list[tuple[UnitLaunch, str]], list[tuple[UnitLaunch, str]]]:
    """Call the provider for each launch: those published with their provider unit ids, those failed with
    the error to record."""
    published: list[tuple[UnitLaunch, str]] = []
    failed: list[tuple[UnitLaunch, str]] = []
    for launch in launches:
        _pace(ctx)
        try:
            published.append((launch, ctx.provider.publish_unit(launch, server_url, task_args)))
            record_provider_call(type(ctx.provider).__name__, "publish", "ok")
        except ServiceError as error:  # the provider's own failure, translated at its boundary
            record_provider_call(type(ctx.provider).__name__, "publish", "error")
            log.warning("publishing unit %s (launch %s) failed: %s", launch.unit_id, launch.launch_id, error)
            failed.append((launch, str(error)[:MAX_ERROR_CHARS]))
    return published, failed


def _recorded(launch: UnitLaunch, provider_unit_id: str) -> tuple[int, str, str]:
    return launch.unit_id, launch.launch_id, provider_unit_id


def _record_outcomes(factory: sessionmaker[Session], ctx: LaunchContext, published: list[tuple[UnitLaunch, str]],
                     failed: list[tuple[UnitLaunch, str]], *, now: datetime) -> int:
    """Record what the provider said (launched, failed, or published for a unit no longer the launch's:
    unpublished); return how many units moved to ``launched``."""
    recorded = [_recorded(launch, pid) for launch, pid in published]
    with transaction(factory) as session:
        moved = set(record_launched(session, recorded, now=now))
        given_up = [launch for launch, error in failed if _record_failure(session, ctx, launch, error, now=now)]
        orphans = _orphaned(session, [(launch, pid) for launch, pid in published if launch.unit_id not in moved])
    release_unit_tokens(ctx.limiter, [_given_up(launch) for launch in given_up])
    if orphans:
        # The unit was expired, or its launch withdrawn, while the call was under way.
        ctx.provider.unpublish_units([pid for _, pid in orphans])
        release_unit_tokens(ctx.limiter, [_given_up(launch) for launch, _ in orphans])
    return len(moved)


def _given_up(launch: UnitLaunch) -> UnitTokens:
    """A launch that no longer owns its unit (failed for good, withdrawn, or its unit expired): to its
    tokens the unit is as never launched."""
    return UnitTokens(launch.run_id, launch.unit_id, launch.launch_id, UnitStatus.CREATED)


def _orphaned(session: Session, unrecorded: list[tuple[UnitLaunch, str]]) -> list[tuple[UnitLaunch, str]]:
    """Of published launches that did not move their unit, those no longer owning it. The others were
    recorded by a concurrent re-send of the same launch: the provider published once, nothing to undo."""
    if not unrecorded:
        return []
    owners = {unit_id: launch_id for unit_id, launch_id in session.execute(select(Unit.id, Unit.launch_id).where(
        Unit.id.in_([launch.unit_id for launch, _ in unrecorded])))}
    return [(launch, pid) for launch, pid in unrecorded if owners.get(launch.unit_id) != launch.launch_id]


def _record_failure(session: Session, ctx: LaunchContext, launch: UnitLaunch, error: str, *,
                    now: datetime) -> bool:
    """Record a failed send on the unit: another try after a delay, or, out of attempts, failed for good
    (the launch gives up the unit). True when it gave up, so its tokens are to be given back."""
    attempts = session.scalar(select(Unit.launch_attempts).where(
        Unit.id == launch.unit_id, Unit.launch_id == launch.launch_id, Unit.status == UnitStatus.CREATED.value))
    if attempts is None:
        return False  # expired or recorded meanwhile
    owned = (Unit.id == launch.unit_id, Unit.launch_id == launch.launch_id)
    if out_of_attempts(attempts, ctx.max_attempts):
        session.execute(update(Unit).where(*owned).values(
            launch_id=None, launch_retry_at=None, launch_error=error, launch_failed_at=now))
        return True
    session.execute(update(Unit).where(*owned).values(
        launch_error=error, launch_retry_at=retry_at(attempts, ctx.retry_base_s, now=now)))
    return False


# -- what status shows, and ``review resend`` ---------------------------------------------------------


@dataclass(frozen=True)
class LaunchTrouble:
    """Launches of a run that failed for good, and those waiting to be re-sent after a failure."""

    failed: int
    retrying: int
    last_error: str | None


def launch_trouble(session: Session, run_id: int) -> LaunchTrouble:
    rows = session.execute(select(Unit.launch_failed_at, Unit.launch_error).where(
        Unit.task_run_id == run_id, Unit.status == UnitStatus.CREATED.value, Unit.launch_error.is_not(None))
        .order_by(Unit.status_changed_at.desc())).all()
    failed = sum(1 for failed_at, _ in rows if failed_at is not None)
    return LaunchTrouble(failed, len(rows) - failed, rows[0][1] if rows else None)


@dataclass(frozen=True)
class FailedLaunch:
    """A unit whose launch failed every attempt: it waits for ``review resend``."""

    run_id: int
    unit_id: int
    attempts: int
    error: str


def failed_launches(session: Session, run_ids: Sequence[int]) -> list[FailedLaunch]:
    rows = session.execute(select(Unit.task_run_id, Unit.id, Unit.launch_attempts, Unit.launch_error).where(
        Unit.task_run_id.in_(list(run_ids)), Unit.status == UnitStatus.CREATED.value,
        Unit.launch_failed_at.is_not(None)).order_by(Unit.task_run_id, Unit.id))
    return [FailedLaunch(int(run_id), int(unit_id), int(attempts), error or "")
            for run_id, unit_id, attempts, error in rows]


def reset_failed_launches(session: Session, run_ids: Sequence[int] | None) -> dict[int, int]:
    """Make launches that ran out of attempts launchable again, with a fresh count; returns, per run,
    how many units were reset (the caller enqueues their launch after the commit)."""
    query = select(Unit.task_run_id, func.count()).where(
        Unit.status == UnitStatus.CREATED.value, Unit.launch_failed_at.is_not(None)).group_by(Unit.task_run_id)
    reset = update(Unit).where(Unit.status == UnitStatus.CREATED.value, Unit.launch_failed_at.is_not(None))
    if run_ids is not None:
        query = query.where(Unit.task_run_id.in_(list(run_ids)))
        reset = reset.where(Unit.task_run_id.in_(list(run_ids)))
    counts = {int(run_id): int(n) for run_id, n in session.execute(query)}
    session.execute(reset.values(launch_failed_at=None, launch_error=None, launch_attempts=0))
    return counts


# -- beat's repair -----------------------------------------------------------------------------------


_DUE = (select(Unit.id, Unit.launch_id, Unit.launch_retry_at, Unit.launch_attempts)
        .where(Unit.task_run_id == bindparam("run_id"), Unit.status == UnitStatus.CREATED.value,
               Unit.launch_id.is_not(None), Unit.launch_failed_at.is_(None),
               Unit.launch_retry_at <= bindparam("now"))
        .order_by(Unit.id).limit(RESEND_BATCH))


def resend_due_launches(factory: sessionmaker[Session], ctx: LaunchContext, run_id: int, *, now: datetime) -> int:
    """Send again, with the same launch id, every launch of the run whose sender died or whose call
    failed, once its retry time passed; return how many units it launched. Two sweeps at once claim
    disjoint launches (compare-and-set on ``launch_retry_at``)."""
    claimed: list[UnitLaunch] = []
    given_up: list[UnitLaunch] = []
    with transaction(factory) as session:
        run = session.execute(_RUN, {"run_id": run_id}).first()
        if run is None or run.is_completed or run.shutdown_requested_at is not None:
            return 0
        for unit_id, launch_id, due_at, attempts in session.execute(_DUE, {"run_id": run_id, "now": now}).all():
            launch = UnitLaunch(run_id, unit_id, str(launch_id))
            owned = (Unit.id == unit_id, Unit.launch_id == launch_id, Unit.launch_retry_at == due_at)
            if out_of_attempts(attempts, ctx.max_attempts):
                gave_up = session.execute(update(Unit).where(*owned).values(
                    launch_id=None, launch_retry_at=None, launch_failed_at=now))
                if gave_up.rowcount:  # type: ignore[attr-defined]
                    given_up.append(launch)
                continue
            won = session.execute(update(Unit).where(*owned).values(
                launch_attempts=attempts + 1, launch_retry_at=now + ctx.stale_after))
            if won.rowcount:  # type: ignore[attr-defined]
                claimed.append(launch)
    release_unit_tokens(ctx.limiter, [_given_up(launch) for launch in given_up])
    if not claimed:
        return 0
    stored_cap = ctx.limiter.get_cap(run_pool(run_id))
    pools = pools_for(ctx, run_id, run.max_concurrent_units if stored_cap is None else stored_cap)
    # A launch's token outlives its sender (beat renews it); one lost anyway is taken again, and a
    # launch that cannot have one now waits for a slot as any other.
    sendable = [launch for launch in claimed
                if not pools or _acquire(factory, ctx, f"launch:{launch.launch_id}", pools)]
    return send_launches(factory, ctx, run.server_url or "", launch_args(run.config), sendable, now=now)
