"""Stopping a run from a command: ``shutdown`` (from any machine) and an attached run's Ctrl-C, once
(drain: no more launches, available units taken off the provider) or twice (force: active agents
disconnected, everything not submitted expired). The steps themselves are ``runs.lifecycle``'s."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.errors import NotAllowed, NotFoundError
from mephisto_dist.providers import CrowdProvider, make_provider
from mephisto_dist.runs import lifecycle
from mephisto_dist.runs.task_runs import mark_completed_if_done, run_provider_of
from mephisto_dist.runtime import Runtime


@dataclass(frozen=True)
class Stopped:
    """What ``shutdown`` did."""

    forced: bool
    expired: int
    """Units expired: the available ones (a drain), or every one not submitted (forced)."""
    in_flight: int
    """Units workers still hold (a drain waits for them); 0 once forced."""
    finished: bool
    """Whether the run is complete now."""


def run_provider(runtime: Runtime, run_id: int) -> CrowdProvider:
    """The provider the run publishes on, built from its stored config (``task_runs.run_provider_of``)."""
    provider = run_provider_of(runtime.sessions, run_id)
    if provider is None:
        raise NotFoundError(f"task run {run_id} does not exist")
    return provider


def stop_run(runtime: Runtime, run_id: int, *, force: bool, now: datetime) -> Stopped:
    """Stop a run as Ctrl-C does on an attached run: once (drain), or twice with ``force``."""
    with transaction(runtime.sessions) as session:
        run = session.get(TaskRun, run_id)
        if run is None:
            raise NotFoundError(f"task run {run_id} does not exist")
        if run.is_completed:
            raise NotAllowed(f"task run {run_id} is already complete")
        provider = make_provider(run.provider_type, RunConfig.parse(run.config).provider.args)
        lifecycle.request_shutdown(session, run_id,
                                   lifecycle.REASON_FORCED if force else lifecycle.REASON_SHUTDOWN, now=now)
    if force:
        count = lifecycle.force_expire(runtime.sessions, provider, runtime.limiter, run_id, now=now)
        return Stopped(forced=True, expired=count, in_flight=0, finished=False)
    count = lifecycle.expire_available_units(runtime.sessions, provider, runtime.limiter, run_id, now=now)
    with transaction(runtime.sessions) as session:
        waiting = lifecycle.in_flight(session, run_id)
        finished = mark_completed_if_done(session, run_id, now=now)
    return Stopped(forced=False, expired=count, in_flight=waiting, finished=finished)


def drain(runtime: Runtime, run_id: int, reason: str | None, *, now: datetime) -> int:
    """Stop launching (recording ``reason`` unless the stop was requested elsewhere) and expire the
    available units; how many were expired."""
    if reason is not None:
        with transaction(runtime.sessions) as session:
            lifecycle.request_shutdown(session, run_id, reason, now=now)
    return lifecycle.expire_available_units(runtime.sessions, run_provider(runtime, run_id), runtime.limiter,
                                            run_id, now=now)


def force_stop(runtime: Runtime, run_id: int, *, now: datetime) -> int:
    """Disconnect active agents and expire every unit not submitted; how many were expired."""
    with transaction(runtime.sessions) as session:
        lifecycle.request_shutdown(session, run_id, lifecycle.REASON_FORCED, now=now)
    return lifecycle.force_expire(runtime.sessions, run_provider(runtime, run_id), runtime.limiter, run_id, now=now)


def undo_failed_start(runtime: Runtime, run_id: int, why: str, *, now: datetime) -> None:
    """Close a run whose start failed (its web server never answered, a service failed mid-start), so it
    holds no port, no tokens and nothing on the provider: every unit not submitted is expired and taken
    off the provider, and the run is recorded as stopped because it ``failed to start: why``. It is
    closed, not deleted: on SQLite a deleted run's id would be given to the next run, whose Redis keys
    and served files would then be the dead run's."""
    with transaction(runtime.sessions) as session:
        lifecycle.request_shutdown(session, run_id, f"{lifecycle.REASON_FAILED_START}: {why}", now=now)
    lifecycle.force_expire(runtime.sessions, run_provider(runtime, run_id), runtime.limiter, run_id, now=now)
