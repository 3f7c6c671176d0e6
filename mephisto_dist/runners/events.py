"""The TaskRunner events as the Celery tasks run them (``mephisto_dist.celery.runner_tasks``): read what the event
needs from the database, call the run's :mod:`~mephisto_dist.blueprints.runner`, write the result back
and tell the page. Each is idempotent: a re-delivered event finds its work done (compare-and-sets on the
rows it moves), so ``acks_late`` re-runs are harmless.

Unit assigned and unit submitted arrive as outbox messages (``db.outbox``), written with the claim or the
submission: :func:`deliver` claims the message, runs its event and marks it done, so a message delivered
twice runs its event once, and one whose send was lost is re-sent by beat until it ran.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mephisto_dist import queue
from mephisto_dist.blueprints.hooks import SubmittedUnit
from mephisto_dist.blueprints.runner import CallView, RemoteCallFailed, RunView, blueprint_type_of, runner_for
from mephisto_dist.db import outbox
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, Assignment, OnboardingAgent, RemoteCall, TaskRun, Unit, Worker
from mephisto_dist.domain.status import UNIT_SUBMITTED, AgentStatus, RemoteCallStatus
from mephisto_dist.review.qualifications import StoredWorkerQualifications
from mephisto_dist.runners.assignments.lease import RUNNER_LEASE_S
from mephisto_dist.runners.assignments.recovery import end_assignments, end_lost_onboardings
from mephisto_dist.runners.assignments.waiting import release_overdue_waiting
from mephisto_dist.runners.live import calls, protocol
from mephisto_dist.runners.live.disconnects import disconnect_agents, disconnect_onboarding_agents
from mephisto_dist.runners.live.inbox import Inbox
from mephisto_dist.runners.live.outbox import send_to_agent
from mephisto_dist.runners.live.presence import Presence
from mephisto_dist.runs.bundles import run_files
from mephisto_dist.runtime import Runtime

log = logging.getLogger(__name__)

WORKER_DIED = "the server running this call stopped twice; please try again"


def timed_out(target: str, limit_s: float) -> str:
    """What the page is told about a call that ran out of time (``MEPHISTO_DIST_REMOTE_CALL_TIMEOUT_S``)."""
    return f"{target} timed out after {limit_s:g} s"


def _now() -> datetime:
    return datetime.now(UTC)


def _run_view(rt: Runtime, run: TaskRun) -> RunView:
    return RunView(run.id, blueprint_type_of(run.config), run.config, run_files(rt.bundles, run).hooks)


def unit_assigned(rt: Runtime, agent_id: str) -> bool:
    """Store the agent's initial state the runner gives it; False when there was nothing to do."""
    with transaction(rt.sessions) as session:
        row = session.execute(select(Agent.init_data, Assignment.data, TaskRun)
                              .join(Assignment, Assignment.id == Agent.assignment_id)
                              .join(TaskRun, TaskRun.id == Agent.task_run_id)
                              .where(Agent.id == agent_id)).first()
        if row is None:
            log.warning("unit_assigned for unknown agent %s", agent_id)
            return False
        stored, data, run = row
        if stored:
            return False  # a re-delivery: the state is there
        view = _run_view(rt, run)
        state = runner_for(view.blueprint_type).on_unit_assigned(view, agent_id, dict(data or {}))
        if state:
            session.execute(update(Agent).where(Agent.id == agent_id).values(init_data=state))
        return bool(state)


@dataclass(frozen=True)
class _Claimed:
    run: RunView
    call: CallView


def remote_call(rt: Runtime, call_id: int) -> str | None:
    """Run one remote call under a lease and answer the page; the call's final status, or None when this
    delivery found it claimed by another run or already settled. A call stopped by the task's soft time
    limit is answered and marked failed like one that raised, so no re-delivery runs it again."""
    claimed = _claim(rt, call_id)
    if claimed is None:
        return None
    failed = False
    error: str | None = None
    with calls.CallLease(rt.redis, call_id, rt.settings.remote_call_lease_s):
        try:
            response = runner_for(claimed.run.blueprint_type).on_remote_call(claimed.run, claimed.call)
        except RemoteCallFailed as failure:
            failed, error = True, str(failure)
            response = protocol.error_response(error)
        except SoftTimeLimitExceeded:
            log.warning("remote function %r ran out of time (agent %s, request %s): answered with an error",
                        claimed.call.target, claimed.call.agent_id, claimed.call.request_id)
            failed, error = True, timed_out(claimed.call.target, rt.settings.remote_call_timeout_s)
            response = protocol.error_response(error)
    with transaction(rt.sessions) as session:
        settled = calls.settle_call(session, call_id, response_json=response, failed=failed, error=error,
                                    now=_now())
    if not settled:
        return None  # the sweep took it for dead meanwhile; its other run answers
    send_to_agent(rt.redis, claimed.call.agent_id,
                  protocol.answer_update(claimed.call.agent_id, claimed.call.request_id, response))
    return RemoteCallStatus.FAILED.value if failed else RemoteCallStatus.ANSWERED.value


def _claim(rt: Runtime, call_id: int) -> _Claimed | None:
    """Read what the call needs without the write lock, then claim it in a transaction of one update:
    on SQLite the write lock is the bottleneck every web and worker process shares."""
    with read_transaction(rt.sessions) as session:
        call = session.execute(select(RemoteCall.agent_id, RemoteCall.request_id, RemoteCall.target,
                                      RemoteCall.args_json, RemoteCall.status, RemoteCall.task_run_id)
                               .where(RemoteCall.id == call_id)).first()
        if call is None or call.status != RemoteCallStatus.PENDING.value:
            return None
        view = _cached_run_view(rt, session, int(call.task_run_id))
        if view is None:
            return None
        data = session.scalar(select(Assignment.data).join(Agent, Agent.assignment_id == Assignment.id)
                              .where(Agent.id == call.agent_id))
        if data is None:
            # An onboarding agent's page: its state is the onboarding data, as Mephisto gives it.
            data = {"task_data": dict(view.hooks.onboarding_data)}
        previous = tuple(r for r in calls.requests_of(session, call.agent_id) if r.uuid != call.request_id)
    with transaction(rt.sessions) as session:
        if not calls.claim_call(session, call_id, now=_now()):
            return None
    return _Claimed(view, CallView(call.agent_id, call.request_id, call.target, call.args_json,
                                   dict(data or {}), previous))


_RUN_VIEWS: dict[int, RunView] = {}
_RUN_VIEWS_MAX = 64


def _cached_run_view(rt: Runtime, session: Session, run_id: int) -> RunView | None:
    """A run's view, kept per process: a run's config and bundle never change once it exists."""
    view = _RUN_VIEWS.get(run_id)
    if view is None:
        run = session.get(TaskRun, run_id)
        if run is None:
            return None
        if len(_RUN_VIEWS) >= _RUN_VIEWS_MAX:
            _RUN_VIEWS.clear()
        view = _RUN_VIEWS[run_id] = _run_view(rt, run)
    return view


OutboxHandler = Callable[[Runtime, Mapping[str, Any]], None]
"""Carries out one kind of outbox message, given its payload."""


def deliver(rt: Runtime, message_id: int, handlers: Mapping[str, OutboxHandler] | None = None,
            ) -> outbox.Claimed | None:
    """Carry out one outbox message: claim it, run its event, mark it done. The claim when this delivery
    carried it out (the caller does what follows it); ``None`` when another delivery holds it or did it,
    or when the event failed (the message goes back to the sweep, or is failed after its last attempt).
    ``handlers``: the kinds of message beyond the TaskRunner's events (a face adds other use cases')."""
    with transaction(rt.sessions) as session:
        claimed = outbox.claim(session, message_id, now=_now(), stale_after_s=rt.settings.outbox_claim_stale_s)
    if claimed is None:
        return None
    try:
        handler = EVENTS.get(claimed.kind) or (handlers or {})[claimed.kind]
        handler(rt, claimed.payload)
    except Exception as error:
        log.exception("outbox message %s (%s) failed on attempt %s", message_id, claimed.kind, claimed.attempt)
        with transaction(rt.sessions) as session:
            outbox.give_up_or_retry(session, claimed, f"{type(error).__name__}: {error}",
                                    max_attempts=rt.settings.outbox_max_attempts, now=_now())
        return None
    with transaction(rt.sessions) as session:
        return claimed if outbox.finish(session, claimed, now=_now()) else None


def _unit_assigned_event(rt: Runtime, payload: Mapping[str, Any]) -> None:
    unit_assigned(rt, str(payload["agent_id"]))


def _unit_submitted_event(rt: Runtime, payload: Mapping[str, Any]) -> None:
    unit_id = int(payload["unit_id"])
    with read_transaction(rt.sessions) as session:
        row = session.execute(
            select(Unit.task_run_id, Assignment.data, Agent.outputs)
            .join(Assignment, Assignment.id == Unit.assignment_id)
            .outerjoin(Agent, Agent.id == Unit.agent_id)
            .where(Unit.id == unit_id)).first()
    if row is None:
        log.warning("unit_submitted for unknown unit %s", unit_id)
        return
    unit_submitted(rt, unit_id, int(row.task_run_id), row.data, row.outputs)


def _assignment_ready_event(rt: Runtime, payload: Mapping[str, Any]) -> None:
    """Every unit of a hosted runner's assignment is claimed: the runner worker starts it (a repeat of this
    send starts nothing: the runner finds its agents no longer waiting)."""
    rt.queue.enqueue(queue.RUN_ASSIGNMENT, int(payload["assignment_id"]), list(payload["agent_ids"]))


def _onboarding_ready_event(rt: Runtime, payload: Mapping[str, Any]) -> None:
    """A worker's onboarding world is to be played on the runner worker (a repeat plays nothing: one
    player holds the onboarding agent, ``runners.assignments.onboarding``)."""
    rt.queue.enqueue(queue.RUN_ONBOARDING, str(payload["agent_id"]))


EVENTS: dict[str, OutboxHandler] = {
    outbox.UNIT_ASSIGNED: _unit_assigned_event,
    outbox.UNIT_SUBMITTED: _unit_submitted_event,
    outbox.ASSIGNMENT_READY: _assignment_ready_event,
    outbox.ONBOARDING_READY: _onboarding_ready_event,
}


def unit_submitted(rt: Runtime, unit_id: int, run_id: int, unit_data: Any, outputs: Any) -> None:
    """The runner's on-submitted hook, then on-assignment-finished when this was its last unit. A hook
    that cannot be loaded raises: its outbox message is tried again, then shown as failed."""
    with read_transaction(rt.sessions) as session:
        run = session.get(TaskRun, run_id)
        if run is None:
            return
        view = _run_view(rt, run)
        unit = session.execute(
            select(Unit.assignment_id, Unit.unit_index, Unit.status, Unit.agent_id, Unit.worker_id,
                   Worker.worker_name)
            .outerjoin(Worker, Worker.id == Unit.worker_id).where(Unit.id == unit_id)).first()
        assignment_id = None if unit is None else unit.assignment_id
        open_units = session.scalar(select(func.count()).select_from(Unit).where(
            Unit.assignment_id == assignment_id, Unit.status.not_in([s.value for s in UNIT_SUBMITTED])))
    runner = runner_for(view.blueprint_type)
    if outputs is not None and unit is not None:
        runner.on_unit_submitted(view, SubmittedUnit(
            unit_id=unit_id, unit_index=int(unit.unit_index), run_id=run_id, unit_data=dict(unit_data or {}),
            outputs=dict(outputs), worker_id=unit.worker_id, worker_name=unit.worker_name,
            agent_id=unit.agent_id, status=str(unit.status),
            qualifications=StoredWorkerQualifications(rt.sessions, send=partial(rt.queue.enqueue, queue.PROVIDER_CALL))))
    if not open_units and assignment_id is not None:
        runner.on_assignment_finished(view, int(assignment_id))


def live_sweep(rt: Runtime) -> dict[str, int]:
    """Disconnect the agents whose page fell silent; release the agents that waited for partners too long;
    end the assignments whose runner died, and time out the agents that did not submit in time after their
    runner returned; send orphaned remote calls round again, or answer them with an error after their
    second run."""
    presence = Presence(rt.redis)
    silent = presence.take_silent(rt.settings.live_disconnect_s)
    now = _now()
    gone = (disconnect_agents(rt.sessions, rt.limiter, silent, now=now)
            + disconnect_onboarding_agents(rt.sessions, silent, now=now))
    inbox = Inbox(rt.redis)
    for item in gone:
        status = AgentStatus.EXPIRED if item.expired else AgentStatus.DISCONNECT
        if item.hosted:
            # Its runner may be blocked in this agent's act(): the entry wakes it at once.
            inbox.push_status(item.agent_id, status.value)
        send_to_agent(rt.redis, item.agent_id, protocol.status_packet(item.agent_id, status.value))
        with transaction(rt.sessions) as session:
            run = session.get(TaskRun, item.run_id)
            view = _run_view(rt, run) if run is not None else None
        if view is not None:
            runner_for(view.blueprint_type).on_agent_disconnected(view, item.agent_id, status.value)
    for run_id in sorted({item.run_id for item in gone if item.freed_run_slot}):
        rt.queue.enqueue(queue.LAUNCH_UNITS, run_id)
    released = release_overdue_waiting(rt.sessions, rt.limiter, now=now)
    endings = end_assignments(rt.sessions, rt.redis, rt.limiter, lease_s=RUNNER_LEASE_S, now=now)
    for agent in endings.lost:
        log.warning("assignment %s lost its runner: agent %s expired, unit %s back in the pool",
                    agent.assignment_id, agent.agent_id, agent.unit_id)
    for restart in endings.restarts:
        log.warning("assignment %s lost its runner: restarting it (%s) from its stored messages",
                    restart.assignment_id, restart.claim)
        rt.queue.enqueue(queue.RESTART_ASSIGNMENT, restart.assignment_id, restart.claim)
    for agent in endings.unsubmitted:
        log.info("assignment %s: agent %s did not submit within the submission timeout (%s), unit %s freed",
                 agent.assignment_id, agent.agent_id, agent.status.value, agent.unit_id)
    onboardings = end_lost_onboardings(rt.sessions, rt.redis, now=now)
    for agent_id in onboardings:
        log.warning("onboarding agent %s lost its runner: expired (the worker starts again)", agent_id)
    told = [(w.agent_id, AgentStatus.EXPIRED) for w in released] + [(a.agent_id, a.status) for a in endings.lost]
    told += [(agent_id, AgentStatus.EXPIRED) for agent_id in onboardings]
    told += [(a.agent_id, a.status) for a in endings.unsubmitted if a.status == AgentStatus.TIMEOUT]
    for agent_id, status in told:
        presence.forget(agent_id)
        inbox.drop(agent_id)  # what the page said is for no runner now
        send_to_agent(rt.redis, agent_id, protocol.status_packet(agent_id, status.value))
    for run_id in sorted(endings.expired_runs):
        rt.queue.enqueue(queue.LAUNCH_UNITS, run_id)  # an expired unit's slot, for the next unit
    ended = _tell_ended_agents(rt, presence)
    rerun, failed = _recover_orphans(rt)
    return {"disconnected": len(gone), "partner_wait_over": len(released), "runner_lost": len(endings.lost),
            "runner_restarted": len(endings.restarts), "onboarding_runner_lost": len(onboardings),
            "unsubmitted": len(endings.unsubmitted), "ended": ended, "calls_rerun": rerun, "calls_failed": failed}


_STILL_THERE = (AgentStatus.IN_TASK.value, AgentStatus.WAITING.value)
_ENDINGS = frozenset({AgentStatus.TIMEOUT, AgentStatus.EXPIRED, AgentStatus.RETURNED, AgentStatus.DISCONNECT})


def _tell_ended_agents(rt: Runtime, presence: Presence) -> int:
    """Live pages whose agent (or onboarding agent) ended elsewhere (timed out by beat, expired by a
    shutdown, submitted) stop being watched; the page of one that did not submit hears its status, and its
    runner the event. An agent waiting for partners is still there: its page stays watched."""
    watched = list(presence.watched())
    if not watched:
        return 0
    with read_transaction(rt.sessions) as session:
        rows = [*session.execute(select(Agent.id, Agent.status, Agent.task_run_id).where(
                    Agent.id.in_(watched), Agent.status.not_in(_STILL_THERE))),
                *session.execute(select(OnboardingAgent.id, OnboardingAgent.status, OnboardingAgent.task_run_id)
                                 .where(OnboardingAgent.id.in_(watched),
                                        OnboardingAgent.status != AgentStatus.ONBOARDING.value))]
    told = 0
    for agent_id, status, run_id in rows:
        if not presence.forget(agent_id):
            continue  # another sweep took it
        if AgentStatus(status) not in _ENDINGS:
            continue  # submitted: nothing to tell
        send_to_agent(rt.redis, agent_id, protocol.status_packet(agent_id, str(status)))
        with read_transaction(rt.sessions) as session:
            view = _cached_run_view(rt, session, int(run_id))
        if view is not None:
            runner_for(view.blueprint_type).on_agent_disconnected(view, agent_id, str(status))
        told += 1
    return told


def _recover_orphans(rt: Runtime) -> tuple[int, int]:
    """Calls whose worker died: run again once, unless the run lasted the call's time limit (the hard
    limit killed a function that ignored the soft one) or was already the second; those are answered."""
    now = _now()
    limit_s = rt.settings.remote_call_timeout_s
    rerun: list[int] = []
    answered: list[tuple[calls.Orphan, str]] = []
    with transaction(rt.sessions) as session:
        for orphan in calls.orphaned_calls(session, rt.redis, lease_s=rt.settings.remote_call_lease_s, now=now):
            out_of_time = orphan.ran_out_of_time(limit_s, now=now)
            if orphan.has_run_left and not out_of_time:
                if calls.requeue_call(session, orphan.call_id):
                    rerun.append(orphan.call_id)
                continue
            error = timed_out(orphan.target, limit_s) if out_of_time else WORKER_DIED
            if calls.settle_call(session, orphan.call_id, response_json=protocol.error_response(error),
                                 failed=True, error=error, now=now):
                answered.append((orphan, error))
    for call_id in rerun:
        rt.queue.enqueue(queue.REMOTE_CALL, call_id)
    for orphan, error in answered:
        log.warning("remote call %s (agent %s) answered with an error: %s", orphan.request_id, orphan.agent_id,
                    error)
        send_to_agent(rt.redis, orphan.agent_id, protocol.answer_update(
            orphan.agent_id, orphan.request_id, protocol.error_response(error)))
    return len(rerun), len(answered)
