"""One assignment's runner, in a thread of a runner worker: start it (its agents ``waiting`` -> ``in task``,
all or none, their pages told), build Mephisto's objects, call the script's ``run_assignment`` and end it
the way Mephisto's ``TaskRunner._launch_and_run_assignment`` does:

- an agent gone (``AbsentAgentError``: timed out, disconnected, returned, shut down): every other agent
  -> ``partner disconnect`` (told), the absent one -> ``disconnect`` unless it already ended, and its unit
  expires (the conversation cannot be taken up by someone else); then ``cleanup_assignment``;
- a forced stop of the run (``AgentShutdownError``, :mod:`.shutdown`): the run's TaskRunner ``shutdown()``
  once in this process (:func:`shut_down_runner`), then ``cleanup_assignment``; the stop itself moves the
  agents and units;
- any other exception: logged, then ``cleanup_assignment``;
- a normal return: the agents stay ``in task`` and submit from their pages.

Either way the agents not yet done then have the run's ``submission_timeout`` to submit; the live sweep
times out the rest (:mod:`.recovery`), counting from the time the lease records at its end.

While ``run_assignment`` runs, the runner holds the assignment's lease (:mod:`.lease`); a runner that dies
with it lets it lapse, and the live sweep ends the assignment (:mod:`.recovery`).

A runner that died with its worker is started again, when its run allows (``runner_restarts``), by
:func:`restart_assignment`: the same agents, still ``in task``, with their stored transcripts replayed
(:mod:`.replay`); its idempotence is the sweep's claim on the lease, which one restart takes over.

The start is the idempotence: a second delivery of the same start finds the agents no longer waiting and
does nothing. One whose agents are not all still waiting (one left a moment ago) starts nothing either;
the others keep waiting for a new partner, whose claim sends a new start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mephisto_dist import queue
from mephisto_dist.blueprints.hooks import TaskHooks
from mephisto_dist.compat.data_model import Unit as UnitView
from mephisto_dist.compat.data_model import Worker as WorkerView
from mephisto_dist.compat.exceptions import AbsentAgentError, AgentShutdownError
from mephisto_dist.compat.live_agent import Agent as LiveAgent
from mephisto_dist.compat.live_agent import Assignment as AssignmentView
from mephisto_dist.compat.task_runner import RunningAssignment, RunningUnit, TaskRunner, build_runner
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db import outbox
from mephisto_dist.db.engine import read_transaction, transaction
from mephisto_dist.db.models import Agent, Assignment, Task, TaskRun, Unit, Worker
from mephisto_dist.db.transitions import move_agent, move_unit
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens
from mephisto_dist.runners.assignments.channel import RunnerChannel, give_back_taken, stored_replay
from mephisto_dist.runners.assignments.lease import LeaseLost, RunnerLease
from mephisto_dist.runners.assignments.replay import Replay
from mephisto_dist.runtime import Runtime

log = logging.getLogger(__name__)

NOT_STARTED = "not started"
FINISHED = "finished"
ENDED_EARLY = "ended early"
SHUT_DOWN = "shut down"
FAILED = "failed"
LOST = "lease lost"


def _now() -> datetime:
    return datetime.now(UTC)


class _NotAllWaiting(Exception):
    """One of the agents left before the start: roll back the others' moves."""


@dataclass(frozen=True)
class _Seat:
    agent_id: str
    unit_id: int
    unit_index: int
    worker_id: int
    worker_name: str
    unit_data: Any


@dataclass(frozen=True)
class _Started:
    run: TaskRun
    task_name: str
    assignment_data: Any
    seats: tuple[_Seat, ...]


def run_assignment(rt: Runtime, assignment_id: int, agent_ids: Sequence[str],
                   hooks_of: Callable[[TaskRun], TaskHooks], *, message_id: int | None = None) -> str:
    """``message_id``: the ``assignment_ready`` outbox message this start carries out, marked done in the
    start's own transaction (or after it, when the agents were no longer all waiting)."""
    started = _start(rt, assignment_id, list(agent_ids), message_id)
    if started is None:
        return NOT_STARTED
    # Taken after the start's commit (a repeated start never touches it); the sweep gives a start a lease's
    # time before it looks for the key.
    with RunnerLease(rt.redis, assignment_id) as lease:
        return _host(rt, assignment_id, started, hooks_of, lease)


def restart_assignment(rt: Runtime, assignment_id: int, claim: str,
                       hooks_of: Callable[[TaskRun], TaskHooks]) -> str:
    """Run again the assignment whose runner died, from its stored messages, once the lease the live
    sweep's ``claim`` holds is taken over (a repeated delivery, or one whose claim lapsed, runs nothing)."""
    lease = RunnerLease(rt.redis, assignment_id)
    if not lease.take(claim):
        return NOT_STARTED
    with lease:
        with read_transaction(rt.sessions) as session:
            agent_ids = [str(a) for a in session.scalars(select(Agent.id).join(Unit, Unit.agent_id == Agent.id).where(
                Unit.assignment_id == assignment_id, Agent.status == AgentStatus.IN_TASK.value))]
            started = _read_started(session, assignment_id, agent_ids) if agent_ids else None
        if started is None:
            return NOT_STARTED
        log.warning("assignment %s: restarting its lost runner (%s) from its stored messages", assignment_id, claim)
        replay = stored_replay(rt.sessions, agent_ids)
        give_back_taken(rt.redis, agent_ids, replay)
        return _host(rt, assignment_id, started, hooks_of, lease, replay=replay)


def _host(rt: Runtime, assignment_id: int, started: _Started, hooks_of: Callable[[TaskRun], TaskHooks],
          lease: RunnerLease, *, replay: Replay | None = None) -> str:
    hooks = hooks_of(started.run)
    if hooks.task_runner is None:
        log.error("run %s hosts no TaskRunner: assignment %s cannot run", started.run.id, assignment_id)
        return FAILED
    channel = RunnerChannel(rt.sessions, rt.redis, started.run.id,
                            longest_wait_s=max(0.1, rt.settings.redis_timeout_s / 2), replay=replay, fence=lease)
    runner = runner_of(hooks, started.run)
    agents = []
    for seat in started.seats:
        unit = UnitView(seat.unit_id, seat.unit_index, dict(seat.unit_data or {}), UnitStatus.ASSIGNED.value)
        agents.append(LiveAgent(seat.agent_id, WorkerView(seat.worker_name, seat.worker_id), unit, channel))
    assignment = AssignmentView(str(assignment_id), [agent.get_unit() for agent in agents],
                                dict(started.assignment_data or {}), agents)
    runner.running_assignments[assignment.db_id] = RunningAssignment(assignment, list(agents))
    try:
        if replay is None:  # a restart's pages are told nothing: for them the conversation goes on
            for seat in started.seats:
                channel.tell(seat.agent_id, AgentStatus.IN_TASK)
        return _supervise(rt, runner, assignment, agents, channel, started)
    except LeaseLost:
        log.warning("assignment %s: this runner's lease lapsed (its process paused past it?) and the live sweep "
                    "ended or restarted the assignment: stopped here, touching nothing", assignment_id)
        return LOST
    finally:
        runner.running_assignments.pop(assignment.db_id, None)
        if not lease.lost:  # the inboxes are the new owner's otherwise
            channel.close([seat.agent_id for seat in started.seats])


_RUNNERS: dict[int, TaskRunner] = {}
_RUNNERS_LOCK = threading.Lock()


def runner_of(hooks: TaskHooks, run: TaskRun) -> TaskRunner:
    """One TaskRunner per run and process, as Mephisto has one per run; files of the task folder its
    config names (``world_file``) are read from the run's bundle."""
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(run.id)
        if runner is None:
            blueprint_type = RunConfig.parse(run.config).blueprint.blueprint_type
            config = bundled_config(run.config, run.task_dir, hooks.path)
            runner = _RUNNERS[run.id] = build_runner(hooks.task_runner, run.id, blueprint_type, config,
                                                     hooks.shared_state)
        return runner


def shut_down_runner(run_id: int, runner: TaskRunner) -> None:
    """The run's TaskRunner ``shutdown()``, once per instance: the first of its threads to be shut down
    calls it (its other agents' next ``act`` raise at once), the next find it gone. A later start of the
    run in this process builds a new instance."""
    with _RUNNERS_LOCK:
        if _RUNNERS.get(run_id) is not runner:
            return
        del _RUNNERS[run_id]
    log.info("task run %s shut down: TaskRunner.shutdown()", run_id)
    try:
        runner.shutdown()
    except Exception:
        log.exception("TaskRunner.shutdown failed for task run %s", run_id)


def bundled_config(config: dict[str, Any], task_dir: str, script_copy: str | None) -> dict[str, Any]:
    """The run's config with blueprint paths into the task folder turned into the bundle's copies (the
    script's copy, ``script_copy``, shows where the bundle's Python is), where the copy exists."""
    script = RunConfig.parse(config).script
    if script_copy is None or script is None:
        return config
    relative = Path(str(script["path"])).resolve().relative_to(Path(task_dir).resolve())
    python_root = Path(script_copy).parents[len(relative.parts) - 1]
    blueprint = dict(config.get("blueprint") or {})
    for dest, value in blueprint.items():
        if dest.endswith("_file") and isinstance(value, str) and value.endswith(".py"):
            original = Path(value).expanduser().resolve()
            if original.is_relative_to(Path(task_dir).resolve()):
                copy = python_root / original.relative_to(Path(task_dir).resolve())
                blueprint[dest] = str(copy) if copy.is_file() else value
    return {**config, "blueprint": blueprint}


def _supervise(rt: Runtime, runner: TaskRunner, assignment: AssignmentView, agents: list[LiveAgent],
               channel: RunnerChannel, started: _Started) -> str:
    """``run_assignment`` for a concurrent runner; ``run_unit`` for one whose units run alone (Mephisto's
    ``execute_unit``: an assignment of one unit, a world with one worker and maybe a bot)."""
    together = bool(runner.is_concurrent)
    unit = agents[0].get_unit()
    if not together:
        runner.running_units[str(unit.db_id)] = RunningUnit(unit, agents[0])
    try:
        if together:
            runner.run_assignment(assignment, agents)
        else:
            runner.run_unit(unit, agents[0])
    except LeaseLost:
        _cleanup(runner, assignment, None if together else unit)  # its own objects only: nothing shared
        raise
    except AgentShutdownError as stopped:
        log.info("assignment %s shut down: %s", assignment.db_id, stopped.message)
        shut_down_runner(started.run.id, runner)
        _cleanup(runner, assignment, None if together else unit)
        return SHUT_DOWN
    except AbsentAgentError as absent:
        log.info("assignment %s ended early: %s", assignment.db_id, absent.message)
        try:
            channel.check_lease()  # a runner whose lease lapsed moves no unit: the sweep did
        except LeaseLost:
            _cleanup(runner, assignment, None if together else unit)
            raise
        _end_for_absent(rt, started, channel, absent.agent_id)
        _cleanup(runner, assignment, None if together else unit)
        return ENDED_EARLY
    except Exception:
        log.exception("the TaskRunner failed for assignment %s", assignment.db_id)
        _cleanup(runner, assignment, None if together else unit)
        return FAILED
    finally:
        runner.running_units.pop(str(unit.db_id), None)
    return FINISHED


def _cleanup(runner: TaskRunner, assignment: AssignmentView, unit: UnitView | None) -> None:
    try:
        if unit is None:
            runner.cleanup_assignment(assignment)
        else:
            runner.cleanup_unit(unit)
    except Exception:
        log.exception("cleanup failed for assignment %s", assignment.db_id)


def _start(rt: Runtime, assignment_id: int, agent_ids: list[str], message_id: int | None = None) -> _Started | None:
    now = _now()
    try:
        with transaction(rt.sessions) as session:
            for agent_id in agent_ids:
                if not move_agent(session, agent_id, AgentStatus.WAITING, AgentStatus.IN_TASK, now=now):
                    raise _NotAllWaiting(agent_id)
            if message_id is not None:
                outbox.settle(session, message_id, now=now)
            return _read_started(session, assignment_id, agent_ids)
    except _NotAllWaiting as left:
        log.info("assignment %s not started: agent %s is no longer waiting", assignment_id, left)
        if message_id is not None:  # nothing to start: a later claim writes a message of its own
            with transaction(rt.sessions) as session:
                outbox.settle(session, message_id, now=now)
        return None


def _read_started(session: Session, assignment_id: int, agent_ids: list[str]) -> _Started:
    rows = session.execute(
        select(Agent.id, Unit.id, Unit.unit_index, Worker.id, Worker.worker_name, Assignment.data)
        .join(Unit, Unit.id == Agent.unit_id).join(Worker, Worker.id == Agent.worker_id)
        .join(Assignment, Assignment.id == Agent.assignment_id)
        .where(Agent.id.in_(agent_ids)).order_by(Unit.unit_index, Unit.id)).all()
    assignment = session.get(Assignment, assignment_id)
    assert assignment is not None
    run = session.get(TaskRun, assignment.task_run_id)
    assert run is not None
    task_name = str(session.scalar(select(Task.task_name).where(Task.id == run.task_id)) or "")
    seats = tuple(_Seat(str(agent_id), int(unit_id), int(index), int(worker_id), str(name), data)
                  for agent_id, unit_id, index, worker_id, name, data in rows)
    return _Started(run, task_name, assignment.data, seats)


def _end_for_absent(rt: Runtime, started: _Started, channel: RunnerChannel, absent_id: str) -> None:
    """Mephisto's ending for an absent agent: partners told, the absent agent's unit expired."""
    now = _now()
    told: list[tuple[str, AgentStatus]] = []
    releases: list[UnitTokens] = []
    with transaction(rt.sessions) as session:
        for seat in started.seats:
            if seat.agent_id != absent_id:
                if move_agent(session, seat.agent_id, AgentStatus.IN_TASK, AgentStatus.PARTNER_DISCONNECT, now=now):
                    told.append((seat.agent_id, AgentStatus.PARTNER_DISCONNECT))
                continue
            if move_agent(session, seat.agent_id, AgentStatus.IN_TASK, AgentStatus.DISCONNECT, now=now):
                told.append((seat.agent_id, AgentStatus.DISCONNECT))
            unit = session.execute(select(Unit.status, Unit.agent_id, Unit.launch_id)
                                   .where(Unit.id == seat.unit_id)).first()
            if unit is None:
                continue
            old = UnitStatus(unit.status)
            still_its = old == UnitStatus.LAUNCHED or (old == UnitStatus.ASSIGNED and unit.agent_id == absent_id)
            if still_its and move_unit(session, seat.unit_id, old, UnitStatus.EXPIRED, now=now):
                worker = seat.worker_id if old == UnitStatus.ASSIGNED else None
                releases.append(UnitTokens(started.run.id, seat.unit_id, unit.launch_id, UnitStatus.EXPIRED,
                                           worker, started.task_name))
    if release_unit_tokens(rt.limiter, releases):
        rt.queue.enqueue(queue.LAUNCH_UNITS, started.run.id)  # the expired unit's slot, for the next unit
    for agent_id, status in told:
        channel.tell(agent_id, status)
