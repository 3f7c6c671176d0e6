"""The ``ec2`` architect and beat's server reconciler against moto's EC2 running as a separate server
process: the Celery worker reaches it over HTTP with unchanged boto3 code (``AWS_ENDPOINT_URL_EC2``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from mephisto_dist import queue
from mephisto_dist.architects.ec2 import RUN_TAG, SERVER_TAG, user_data
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import ReconcileRecord, Server, TaskRun
from mephisto_dist.runs.task_runs import NewRun, create_task_run
from mephisto_dist.runtime import Runtime
from tests.conftest import EC2_REGION, wait_for
from tests.system import ROOT, celery_beat, celery_worker, make_runtime
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

REGION = EC2_REGION


@pytest.fixture
def runtime(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url, RECONCILE_EVERY_S="1", HEARTBEAT_EVERY_S="1")
    yield rt
    rt.close()


def _ec2_run(rt: Runtime, task_name: str, image_id: str) -> int:
    architect = {"_architect_type": "ec2", "image_id": image_id, "region_name": REGION, "instance_type": "t2.micro",
                 "port": 3000, "subdomain": None, "domain": None}
    new = NewRun(task_name=task_name, blueprint_type="static_task", architect_type="ec2", provider_type="mock",
                 requester_name="mock_requester", sandbox=True,
                 config={"task": {"task_name": task_name}, "architect": architect, "provider": {}, "blueprint": {}},
                 task_dir="/nonexistent", build_dir="/nonexistent", server_url="", max_concurrent_units=0,
                 units_per_assignment=1, pay_amount=0.5, assignment_data=[{"text": "x"}])
    with transaction(rt.sessions) as session:
        return create_task_run(session, new, now=datetime.now(UTC))


def _servers(rt: Runtime, run_id: int) -> list[Server]:
    with transaction(rt.sessions) as session:
        rows = list(session.scalars(select(Server).where(Server.task_run_id == run_id).order_by(Server.id)))
        for row in rows:
            session.expunge(row)
        return rows


def _state(ec2: Any, instance_id: str) -> str:
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return str(found["State"]["Name"])


def _tags(ec2: Any, instance_id: str) -> dict[str, str]:
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in found.get("Tags", [])}


def test_ec2_servers_are_deployed_tagged_terminated_with_their_run_and_redeployed(
        tmp_path: Path, runtime: Runtime, ec2: Any) -> None:
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    live = _ec2_run(runtime, "ec2-live", image_id)
    finished = _ec2_run(runtime, "ec2-finished", image_id)
    foreign = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t2.micro",
                                TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                    {"Key": "Name", "Value": "someone-elses"}]}])["Instances"][0]["InstanceId"]

    with celery_worker(runtime.settings, tmp_path / "worker.log"):
        for run_id in (live, finished, live):  # the second deploy of a run finds its server and adds none
            runtime.queue.enqueue(queue.DEPLOY_SERVER, run_id)
        for run_id in (live, finished):
            wait_for(lambda r=run_id: any(s.instance_id for s in _servers(runtime, r)), timeout_s=30,
                     message=f"run {run_id}'s server to be deployed")
        (server,) = _servers(runtime, live)
        assert server.status == "deploying" and server.architect == "ec2"
        assert _tags(ec2, server.instance_id) == {"Name": "ec2-live-routing-server", RUN_TAG: str(live),
                                                   SERVER_TAG: str(server.id)}
        assert _state(ec2, server.instance_id) == "running"
        with transaction(runtime.sessions) as session:
            run = session.get(TaskRun, live)
            assert run is not None and run.server_url == server.address
            assert run.server_url.startswith("http://") and run.server_url.endswith(":3000")
        described = ec2.describe_instance_attribute(InstanceId=server.instance_id, Attribute="userData")
        assert "UserData" in described  # the start script is there; it holds no settings or secrets
        assert "DATABASE_URL" not in user_data(live, server.id, 3000)
        (finished_server,) = _servers(runtime, finished)

        with transaction(runtime.sessions) as session:
            session.execute(update(TaskRun).where(TaskRun.id == finished)
                            .values(is_completed=True, completed_at=datetime.now(UTC)))
        # An instance of the live run dies behind our back.
        ec2.terminate_instances(InstanceIds=[server.instance_id])

        with celery_beat(runtime.settings, tmp_path / "beat.log"):
            wait_for(lambda: _servers(runtime, finished)[0].status == "stopped", timeout_s=40,
                     message="the finished run's server to be terminated")
            assert _state(ec2, finished_server.instance_id) in ("shutting-down", "terminated")
            redeployed = wait_for(lambda: (s := _servers(runtime, live)) and len(s) == 2 and s[1].instance_id
                                  and s, timeout_s=40, message="the live run's server to be redeployed")
        old, new = redeployed
        assert old.status == "stopped"
        with transaction(runtime.sessions) as session:
            actions = {(subject, action) for subject, action in
                       session.execute(select(ReconcileRecord.subject, ReconcileRecord.action))}
        assert (f"server {old.id} (ec2, {old.instance_id})", "redeploy") in actions, actions
        assert (f"server {finished_server.id} (ec2, {finished_server.instance_id})", "terminate") in actions
        assert new.status == "deploying" and _state(ec2, new.instance_id) == "running"
        assert _tags(ec2, new.instance_id)[RUN_TAG] == str(live)
    assert _state(ec2, foreign) == "running"  # never ours: never touched
    assert len(_servers(runtime, finished)) == 1  # a finished run is not redeployed
    assert len(_servers(runtime, live)) == 2  # one redeploy, however many passes saw the instance gone


def test_an_attached_run_refuses_the_ec2_architect(tmp_path: Path) -> None:
    task_dir = write_task_dir(tmp_path, rows=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env["MEPHISTO_DIST_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir),
                           "mephisto/architect=ec2", "mephisto.architect.image_id=ami-12345678"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "deployed by the deployment's Celery workers: run with --detach" in " ".join(done.stderr.split())
    assert not (tmp_path / "data" / "mephisto-dist.db").exists() or "task run" not in done.stdout
