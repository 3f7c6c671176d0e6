"""One behavioural suite for the Architect contract, run against every architect: ``local`` (a real web
process on this machine), ``ec2`` (moto's EC2 as a separate server process, reached over HTTP with
unchanged boto3 code) and ``mock`` (no server at all).

The capabilities an architect declares are checked against what it does: one that deploys remotely
plans no server here and can tell when the machine it started is gone; one whose run the deployment
serves plans a server here at the run's URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mephisto_dist.architects import (
    Architect,
    ServerRef,
    architect_class,
    architect_types,
    make_architect,
    plan_server,
)
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Server
from mephisto_dist.domain.servers import SERVER_LIVE, ServerStatus
from mephisto_dist.errors import ConfigError
from mephisto_dist.runs.task_runs import NewRun, create_task_run
from mephisto_dist.runtime import Runtime
from tests.conftest import EC2_REGION, wait_for
from tests.system import free_port, make_runtime

REGION = EC2_REGION
EXPECTED = {  # the capabilities each architect declares
    "local": {"deploys_remotely": False, "served_by_deployment": True},
    "ec2": {"deploys_remotely": True, "served_by_deployment": False},
    "mock": {"deploys_remotely": False, "served_by_deployment": False},
}


@dataclass
class Site:
    """An architect, a run it serves, and how to tell that a server it deployed has stopped."""

    architect: Architect
    runtime: Runtime
    run_id: int
    args: dict[str, Any]
    ec2: Any = None

    def server(self, server_id: int) -> Server:
        with transaction(self.runtime.sessions) as session:
            server = session.get(Server, server_id)
            assert server is not None
            session.expunge(server)
            return server

    def has_stopped(self, server_id: int) -> bool:
        server = self.server(server_id)
        if self.ec2 is None:
            return server.status == ServerStatus.STOPPED.value
        found = self.ec2.describe_instances(InstanceIds=[server.instance_id])["Reservations"][0]["Instances"][0]
        return str(found["State"]["Name"]) in ("shutting-down", "terminated")


@pytest.fixture
def runtime(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url, HEARTBEAT_EVERY_S="0.5")
    yield rt
    rt.close()


def _run(rt: Runtime, architect_type: str, args: dict[str, Any]) -> int:
    new = NewRun(task_name=f"contract-{architect_type}", blueprint_type="static_task", architect_type=architect_type,
                 provider_type="mock", requester_name="mock_requester", sandbox=True,
                 config={"task": {"task_name": f"contract-{architect_type}"},
                         "architect": {"_architect_type": architect_type, **args}, "provider": {}, "blueprint": {}},
                 task_dir="/nonexistent", build_dir="/nonexistent", server_url="", max_concurrent_units=0,
                 units_per_assignment=1, pay_amount=0.5, assignment_data=[{"text": "x"}])
    with transaction(rt.sessions) as session:
        return create_task_run(session, new, now=datetime.now(UTC))


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.system) if name == "ec2" else name
                        for name in sorted(EXPECTED)])  # ec2: moto's server
def site(request: pytest.FixtureRequest, runtime: Runtime) -> Site:
    name = str(request.param)
    ec2: Any = None
    args: dict[str, Any] = {"port": free_port()}
    if name == "local":
        args["hostname"] = "localhost"
    elif name == "ec2":
        ec2 = request.getfixturevalue("ec2")
        args |= {"image_id": ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"],
                 "region_name": REGION, "instance_type": "t2.micro"}
    architect = make_architect(name, runtime)
    assert architect is not None
    return Site(architect, runtime, _run(runtime, name, args), args, ec2)


def test_every_architect_is_in_the_suite() -> None:
    assert set(architect_types()) == set(EXPECTED)


def test_the_registry_finds_the_architect_and_its_capabilities_by_name(site: Site) -> None:
    name = site.architect.name
    assert type(site.architect) is architect_class(name)
    declared = {capability: getattr(architect_class(name), capability) for capability in EXPECTED[name]}
    assert declared == EXPECTED[name]
    assert {capability: getattr(site.architect, capability) for capability in EXPECTED[name]} == declared


def test_the_plan_follows_the_arguments_and_the_capabilities(site: Site) -> None:
    cls = architect_class(site.architect.name)
    plan = plan_server(cls.name, site.args)
    assert plan.port == site.args["port"]
    assert plan_server(cls.name, {}).port == 3000  # Mephisto's default port
    if cls.deploys_remotely:  # started elsewhere by a worker: nothing listens here, the URL comes later
        assert not plan.should_run_server and plan.public_url == ""
    if cls.served_by_deployment:
        assert plan.should_run_server and plan.public_url.endswith(f":{plan.port}")


@pytest.mark.system
def test_a_deployed_server_is_recorded_first_and_stops_when_asked(site: Site) -> None:
    architect = site.architect
    try:
        server_id = architect.deploy(site.run_id)
    except ConfigError:
        assert architect.name == "mock"  # deploys no server: tests speak the protocol directly
        return
    server = site.server(server_id)
    assert server.task_run_id == site.run_id and server.architect == architect.name
    assert ServerStatus(server.status) in SERVER_LIVE
    if not architect.deploys_remotely:  # a server of this machine beats on its record once it listens
        wait_for(lambda: site.server(server_id).status == ServerStatus.RUNNING.value, timeout_s=60,
                 message="the server to beat")
    ref = ServerRef(server_id, site.run_id, site.server(server_id).instance_id)
    architect.stop(ref)
    architect.stop(ref)  # idempotent
    wait_for(lambda: site.has_stopped(server_id), timeout_s=30, message="the server to stop")


def test_an_architect_that_starts_machines_can_tell_when_they_are_gone(site: Site) -> None:
    architect = site.architect
    with transaction(site.runtime.sessions) as session:
        known = [ServerRef(s.id, s.task_run_id, s.instance_id) for s in session.scalars(select(Server))]
    if not architect.deploys_remotely:
        assert architect.gone(known) is None  # its servers are judged by their heartbeats
        return
    server_id = architect.deploy(site.run_id)
    ref = ServerRef(server_id, site.run_id, site.server(server_id).instance_id)
    assert architect.gone([ref]) == set()
    site.ec2.terminate_instances(InstanceIds=[ref.instance_id])
    assert architect.gone([ref]) == {server_id}


def test_an_unknown_architect_is_a_config_error_naming_the_supported_ones() -> None:
    with pytest.raises(ConfigError, match="supported: local, ec2, mock"):
        architect_class("heroku")
