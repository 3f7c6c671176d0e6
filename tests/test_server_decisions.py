"""The server reconciler's decision: a pure function of one server's facts."""

from __future__ import annotations

import pytest

from mephisto_dist.domain.servers import Action, RunState, ServerFacts, ServerStatus, decide_server
from mephisto_dist.domain.servers import ServerStatus as S


def decide(architect: str = "local", status: ServerStatus = S.RUNNING, run: RunState = RunState.LIVE,
           beat: float | None = 1.0, changed: float = 100.0, gone: bool | None = None) -> Action | None:
    decision = decide_server(ServerFacts(7, architect == "ec2", status, run, beat, changed, gone), stale_s=30,
                             deploy_grace_s=600)
    return None if decision is None else decision.action


def test_a_live_runs_answering_server_is_left_alone() -> None:
    assert decide() is None
    assert decide("ec2", gone=False) is None


@pytest.mark.parametrize("run", [RunState.FINISHED, RunState.UNKNOWN])
def test_a_server_of_a_finished_or_unknown_run_is_stopped_or_terminated(run: RunState) -> None:
    assert decide(run=run) == Action.STOP
    assert decide(run=run, beat=120) == Action.MARK_STOPPED  # nothing answers to stop itself
    assert decide("ec2", run=run, gone=False) == Action.TERMINATE
    assert decide("ec2", status=S.DEPLOYING, run=run, beat=None, changed=60) == Action.TERMINATE
    assert decide("ec2", status=S.DEPLOYING, run=run, beat=None, changed=1) is None  # its deploy may be mid-way


def test_a_live_runs_silent_server_is_flagged_and_an_ec2_one_without_instance_redeployed() -> None:
    assert decide(beat=31) == Action.FLAG_LOST
    assert decide(status=S.LOST, beat=300) is None  # already flagged
    assert decide(status=S.LOST, beat=2) == Action.RECOVERED
    assert decide("ec2", gone=True) == Action.REDEPLOY
    assert decide("ec2", status=S.DEPLOYING, beat=None, changed=1, gone=True) is None  # not started yet
    assert decide("ec2", status=S.DEPLOYING, beat=None, changed=60, gone=True) == Action.REDEPLOY
    assert decide("ec2", status=S.DEPLOYING, beat=None, changed=60, gone=False) is None  # still booting
    assert decide("ec2", status=S.DEPLOYING, beat=None, changed=900, gone=False) == Action.FLAG_LOST


def test_a_stopping_server_is_closed_once_it_is_gone() -> None:
    assert decide(status=S.STOPPING, run=RunState.FINISHED, beat=1, changed=5) is None  # it will stop itself
    assert decide(status=S.STOPPING, run=RunState.FINISHED, beat=40, changed=40) == Action.MARK_STOPPED
    assert decide("ec2", status=S.STOPPING, run=RunState.FINISHED, changed=5, gone=True) == Action.MARK_STOPPED
    assert decide("ec2", status=S.STOPPING, run=RunState.FINISHED, changed=60, gone=False) == Action.TERMINATE
    assert decide(status=S.STOPPED, run=RunState.UNKNOWN) is None


def test_a_server_serving_whatever_run_is_on_its_port_is_only_closed_when_gone() -> None:
    assert decide(run=RunState.UNBOUND, beat=10) is None
    assert decide(run=RunState.UNBOUND, beat=40) == Action.MARK_STOPPED
