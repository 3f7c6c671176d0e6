"""Thin Celery tasks: each takes ids, builds nothing but reads the process Runtime, and calls the library.

All are ``acks_late`` (from the shared config) and idempotent: a re-delivered task finds the work done.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache

from celery import Celery

from mephisto_dist import queue
from mephisto_dist.celery.worker import app as _app
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db import outbox
from mephisto_dist.db.models import TaskRun
from mephisto_dist.errors import MephistoDistError
from mephisto_dist.metrics import record_reconciler_action
from mephisto_dist.providers import CrowdProvider, make_provider, provider_types
from mephisto_dist.reconcile.runs import reconcile_pools, reconcile_runs
from mephisto_dist.review import batches
from mephisto_dist.runners import events
from mephisto_dist.runs.launches import LaunchContext, launch_units, resend_due_launches
from mephisto_dist.runs.returns import hand_back_returned_units
from mephisto_dist.runs.task_runs import close_submitted_unit, open_runs_on, run_provider_of
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import load_settings

log = logging.getLogger(__name__)
app: Celery = _app


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    """This worker process's resources, built on first use (after the prefork fork)."""
    return Runtime(load_settings())


def _now() -> datetime:
    return datetime.now(UTC)


def _launch(run_id: int, *, resend: bool = False) -> int:
    """Launch what the run's pools allow; with ``resend``, first re-send its launches that are due
    (their sender died, or their call failed and its retry time came)."""
    rt = runtime()
    provider = run_provider_of(rt.sessions, run_id)
    if provider is None:
        log.warning("launch for unknown run %s ignored", run_id)
        return 0
    ctx = LaunchContext.of(rt, provider)
    resent = resend_due_launches(rt.sessions, ctx, run_id, now=_now()) if resend else 0
    return resent + launch_units(rt.sessions, ctx, run_id, now=_now())


@app.task(name=queue.LAUNCH_UNITS)  # type: ignore[untyped-decorator]
def launch_units_task(run_id: int) -> int:
    """Launch what the run's pools allow: when the run is created, its cap raised, or a slot freed."""
    return _launch(run_id)


@app.task(name=queue.OUTBOX_MESSAGE)  # type: ignore[untyped-decorator]
def outbox_message(message_id: int) -> None:
    """Carry out one outbox message (``mephisto_dist.db.outbox``): the TaskRunner's on-assigned event
    (store the agent's initial state) or on-submitted event (the task's ``on_unit_submitted`` hook, then
    on-assignment-finished when it was the assignment's last unit; see ``mephisto_dist.runners.events``).
    After a unit's event: close the run when this was its last unit (after the hook, so that it is not
    lost), free the unit's slot (again: giving back is idempotent) and launch what the slot allows when
    the web server could not. A bulk review decision (``review.batches``) arrives this way too."""
    rt = runtime()
    done = events.deliver(rt, message_id, batches.EVENTS)
    if done is None or done.kind != outbox.UNIT_SUBMITTED:
        return
    closed = close_submitted_unit(rt.sessions, rt.limiter, int(done.payload["unit_id"]), now=_now())
    if closed is None:
        return
    if closed.run_completed:
        log.info("task run %s is complete", closed.run_id)
    elif closed.refill:
        _launch(closed.run_id)


@app.task(name=queue.RESEND_OUTBOX)  # type: ignore[untyped-decorator]
def resend_outbox() -> int:
    """Beat's sweep: send again the outbox messages whose send was lost, whose handler died, or whose
    failed attempt's backoff passed. One already carried out, or under way, is not run again."""
    rt = runtime()
    message_ids = outbox.due_now(rt.sessions, now=_now(), retry_base_s=rt.settings.outbox_retry_base_s,
                                 stale_after_s=rt.settings.outbox_claim_stale_s)
    queue.send_outbox(rt.queue, message_ids)
    if message_ids:
        record_reconciler_action("outbox_resent", len(message_ids))
    return len(message_ids)


@app.task(name=queue.RECONCILE_POOLS)  # type: ignore[untyped-decorator]
def reconcile_pools_task() -> None:
    rt = runtime()
    recounted = reconcile_pools(rt.sessions, rt.limiter, lease_s=rt.settings.lease_ttl_s,
                                global_cap=rt.settings.max_concurrent_units)
    record_reconciler_action("pool_recounted", len(recounted))


def provider_for(run: TaskRun) -> CrowdProvider:
    return make_provider(run.provider_type, RunConfig.parse(run.config).provider.args)


@app.task(name=queue.HAND_BACK_RETURNED)  # type: ignore[untyped-decorator]
def hand_back_returned_task() -> int:
    """Beat's sweep: units whose MTurk HIT no worker holds any more (returned, abandoned) go back to
    the pool, where their HIT (assignable again on MTurk) is theirs still."""
    rt = runtime()
    handed = 0
    for run_id in open_runs_on(rt.sessions, provider_types(lambda cls: cls.is_hit_based)):
        provider = run_provider_of(rt.sessions, run_id)
        if provider is None:
            continue
        try:
            count = hand_back_returned_units(rt.sessions, provider, rt.limiter, run_id, now=_now())
        except MephistoDistError as error:
            log.warning("cannot ask the provider about run %s's HITs: %s", run_id, error)
            continue
        if count:
            log.info("run %s: %s unit(s) whose HIT was returned are available again", run_id, count)
        handed += count
    return handed


@app.task(name=queue.RECONCILE_RUNS)  # type: ignore[untyped-decorator]
def reconcile_runs_task() -> None:
    rt = runtime()
    for run_id in reconcile_runs(rt.sessions, rt.limiter, provider_for, now=_now()):
        record_reconciler_action("units_relaunched", _launch(run_id, resend=True))
