"""Worker-facing servers: their status machine and the server reconciler's decision, pure functions of a
snapshot and ``now``.

A server is recorded ``deploying`` before it is started, so a crash between start and record cannot
orphan it; it becomes ``running`` on its first heartbeat. ``lost``: its run is live but it stopped
answering (flagged in ``status``). ``stopping``: asked to stop (a ``local`` server sees it and exits; an
``ec2`` instance is being terminated). ``stopped``: gone for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mephisto_dist.errors import IllegalTransition


class ServerStatus(StrEnum):
    DEPLOYING = "deploying"
    RUNNING = "running"
    LOST = "lost"
    STOPPING = "stopping"
    STOPPED = "stopped"


SERVER_TRANSITIONS: dict[ServerStatus, frozenset[ServerStatus]] = {
    ServerStatus.DEPLOYING: frozenset({ServerStatus.RUNNING, ServerStatus.LOST, ServerStatus.STOPPING,
                                       ServerStatus.STOPPED}),
    ServerStatus.RUNNING: frozenset({ServerStatus.LOST, ServerStatus.STOPPING, ServerStatus.STOPPED}),
    ServerStatus.LOST: frozenset({ServerStatus.RUNNING, ServerStatus.STOPPING, ServerStatus.STOPPED}),
    ServerStatus.STOPPING: frozenset({ServerStatus.STOPPED}),
    ServerStatus.STOPPED: frozenset(),
}
SERVER_LIVE = frozenset({ServerStatus.DEPLOYING, ServerStatus.RUNNING, ServerStatus.LOST})


def check_server_transition(old: ServerStatus, new: ServerStatus) -> None:
    if new not in SERVER_TRANSITIONS[old]:
        raise IllegalTransition(f"a server cannot go from {old.value!r} to {new.value!r}")


class RunState(StrEnum):
    LIVE = "live"          # not completed (it may be draining)
    FINISHED = "finished"  # completed
    UNKNOWN = "unknown"    # no such run in the database
    UNBOUND = "unbound"    # the server serves whichever run is on its port (the Procfile's web)


class Action(StrEnum):
    STOP = "stop"              # ask a local server to stop itself (it reads its record)
    TERMINATE = "terminate"    # terminate an ec2 instance
    MARK_STOPPED = "mark stopped"  # nothing runs any more: close the record
    FLAG_LOST = "flag lost"    # live run, server silent: flag it for status
    REDEPLOY = "redeploy"      # live run, ec2 instance gone: terminate what is left and deploy anew
    RECOVERED = "recovered"    # a lost server answers again


@dataclass(frozen=True)
class ServerFacts:
    server_id: int
    deploys_remotely: bool  # its architect starts a machine for it (ec2): terminated, redeployed when gone
    status: ServerStatus
    run_state: RunState
    heartbeat_age_s: float | None  # None: never beat
    status_age_s: float            # since the status last changed
    instance_gone: bool | None = None  # ec2: the provider says the instance is not running (None: not asked)


@dataclass(frozen=True)
class Decision:
    server_id: int
    found: str
    action: Action


def _silent(facts: ServerFacts, stale_s: float) -> bool:
    if facts.heartbeat_age_s is None:
        return facts.status_age_s > stale_s
    return facts.heartbeat_age_s > stale_s


def decide_server(facts: ServerFacts, *, stale_s: float, deploy_grace_s: float) -> Decision | None:
    """What the server reconciler does about one server; ``None``: nothing.

    ``stale_s``: a heartbeat older than this means the server stopped answering. ``deploy_grace_s``:
    how long a server may take from its record to its first heartbeat (an instance boots slowly).
    """
    ec2 = facts.deploys_remotely
    status = facts.status
    if status == ServerStatus.STOPPED:
        return None
    if status == ServerStatus.STOPPING:
        if ec2 and facts.instance_gone:
            return Decision(facts.server_id, "its instance is terminated", Action.MARK_STOPPED)
        if facts.status_age_s > stale_s and (ec2 or _silent(facts, stale_s)):
            if ec2:
                return Decision(facts.server_id, "its termination did not finish", Action.TERMINATE)
            return Decision(facts.server_id, "it was asked to stop and has gone quiet", Action.MARK_STOPPED)
        return None
    if ec2 and status == ServerStatus.DEPLOYING and facts.status_age_s <= stale_s:
        return None  # its deploy may still be starting the instance: let it record what it made
    if facts.run_state in (RunState.FINISHED, RunState.UNKNOWN):
        found = f"its run is {facts.run_state.value}"
        if ec2:
            return Decision(facts.server_id, found, Action.TERMINATE)
        return Decision(facts.server_id, found,
                        Action.MARK_STOPPED if _silent(facts, stale_s) else Action.STOP)
    if ec2 and facts.instance_gone and facts.run_state == RunState.LIVE:
        return Decision(facts.server_id, "its instance is gone while the run is live", Action.REDEPLOY)
    if facts.run_state == RunState.UNBOUND:  # a local web process: it beats from its first second
        if _silent(facts, stale_s):
            return Decision(facts.server_id, "it stopped answering and serves no run of its own",
                            Action.MARK_STOPPED)
        return None
    grace_s = deploy_grace_s if status == ServerStatus.DEPLOYING else stale_s
    silent = _silent(facts, grace_s)
    if silent and status != ServerStatus.LOST:
        return Decision(facts.server_id, "it stopped answering while its run is live", Action.FLAG_LOST)
    if not silent and status == ServerStatus.LOST:
        return Decision(facts.server_id, "it answers again", Action.RECOVERED)
    return None
