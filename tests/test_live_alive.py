"""A page's ``alive`` against a status change published at the same moment (a runner starting its
assignment, beat timing the agent out): the socket subscribes to its agent's channel before it reads the
agent's status, so a change committed and published right after that read still reaches the page, and a
status the page was told is not repeated to it.

The bug this guards against: ``alive`` read the status, then subscribed. A hosted runner that started the
assignment in between (its ``in task`` published to nobody) left the page waiting for ever; the full suite
caught it in ``test_runner_fencing`` about once in four runs. Here the interleaving is made to happen every
time: the status read is wrapped so that, once it has read, the agent moves and the move is published,
as the other process would, before ``alive`` goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.transitions import move_agent
from mephisto_dist.domain.status import AgentStatus
from mephisto_dist.runners import channel as service
from mephisto_dist.runners.live import protocol
from mephisto_dist.runners.live.outbox import send_to_agent
from mephisto_dist.runtime import Runtime
from mephisto_dist.web.app import create_app
from mephisto_dist.work import registration
from mephisto_dist.work.claims import Registration
from mephisto_dist.work.served import Served, now
from tests.factories import make_run
from tests.system import make_runtime


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", database_url, redis_url)
    yield rt
    rt.close()


def statuses_heard(client: TestClient, agent_id: str, *, until: str, beats: int = 40) -> list[str]:
    """Say alive, then beat (each beat is answered, so the socket never blocks for ever) until ``until``
    is heard or ``beats`` beats went by; every status packet the page was sent, in order."""
    heard: list[str] = []
    with client.websocket_connect("/") as socket:
        socket.send_json({"packet_type": protocol.ALIVE, "subject_id": agent_id, "data": {}})
        for _ in range(beats):
            socket.send_json({"packet_type": protocol.HEARTBEAT, "subject_id": agent_id, "data": {}})
            while True:
                packet: dict[str, Any] = socket.receive_json()
                if packet["packet_type"] == protocol.UPDATE_STATUS:
                    heard.append(packet["data"]["status"])
                if packet["packet_type"] == protocol.HEARTBEAT:
                    break
            if until in heard:
                break
    return heard


def test_a_status_published_just_after_alive_read_the_old_one_reaches_the_page_once(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(runtime.sessions, assignments=1)
    served = Served.for_runtime(runtime, run_id=run.run_id)
    details = registration.request_agent(served, Registration.from_request({"provider_data": {
        "worker_name": "alice", "assignment_id": "a1", "agent_registration_id": "a1-alice"}}))
    agent_id = str(details.agent_id)
    real_read = service.agent_status

    def read_then_moved_elsewhere(served_: Served, agent: str) -> str:
        status = real_read(served_, agent)
        if agent == agent_id and status == AgentStatus.IN_TASK.value:
            # Another process, between this read and what alive does next: the agent times out, and it
            # publishes the change for the page.
            with transaction(runtime.sessions) as session:
                assert move_agent(session, agent, AgentStatus.IN_TASK, AgentStatus.TIMEOUT, now=now())
            send_to_agent(runtime.redis, agent, protocol.status_packet(agent, AgentStatus.TIMEOUT.value))
        return status

    monkeypatch.setattr(service, "agent_status", read_then_moved_elsewhere)
    with TestClient(create_app(runtime, run_id=run.run_id)) as client:
        heard = statuses_heard(client, agent_id, until=AgentStatus.TIMEOUT.value)
    assert heard[-1:] == [AgentStatus.TIMEOUT.value], heard  # the change reached the page, and last
    assert heard.count(AgentStatus.TIMEOUT.value) == 1, heard
    assert set(heard) <= {AgentStatus.IN_TASK.value, AgentStatus.TIMEOUT.value}, heard
