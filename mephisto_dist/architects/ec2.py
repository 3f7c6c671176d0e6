"""The ``ec2`` architect on boto3: the worker-facing server on an EC2 instance tagged with the run.

``deploy`` records the server first, then starts the instance with ``ClientToken`` derived from the
record (a repeated call after a crash starts no second instance), tagged ``mephisto-dist:run`` and
``mephisto-dist:server``; the instance's user data starts ``mephisto-dist web`` for the run, which adopts
the record and beats on it. ``stop`` terminates every instance tagged with the server. Instances without
our tag are never touched. Credentials come from a named profile or the standard AWS environment.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from mephisto_dist.architects import ServerPlan, ServerRef
from mephisto_dist.architects.servers import NewServer, record_server
from mephisto_dist.config.arguments import EC2_ARCHITECT
from mephisto_dist.config.run_config import ArchitectSection, RunConfig, declared_default
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Server, Task, TaskRun
from mephisto_dist.domain.servers import SERVER_LIVE, ServerStatus
from mephisto_dist.errors import NotFoundError, ServiceError
from mephisto_dist.runtime import Runtime

RUN_TAG = "mephisto-dist:run"
SERVER_TAG = "mephisto-dist:server"
ALIVE_STATES = ("pending", "running", "stopping", "stopped")
VENV = "/opt/mephisto-dist/venv"
ENV_FILE = "/etc/mephisto-dist.env"


def _now() -> datetime:
    return datetime.now(UTC)


def url_safe(name: str) -> str:
    """A DNS label from a task name (Mephisto's rule: underscores become hyphens, the rest is dropped)."""
    return re.sub("[^0-9a-zA-Z-]+", "", name.replace("_", "-")).lower() or "task"


def client_token(server_id: int) -> str:
    return f"mephisto-dist-server-{server_id}"


def user_data(run_id: int, server_id: int, port: int) -> str:
    """The instance's start script: no settings or secrets in it; they sit in the image's env file."""
    command = shlex.join([f"{VENV}/bin/mephisto-dist", "web", "--run", str(run_id), "--server-id", str(server_id),
                          "--host", "0.0.0.0", "--port", str(port)])
    return f"#!/bin/sh\nset -a\n. {ENV_FILE}\nset +a\nexec {command}\n"


def _client(args: Mapping[str, Any]) -> Any:
    import boto3  # here, not at the top: every process lists the architects, few call EC2 (0.2 s of imports)

    session = boto3.Session(profile_name=args.get("profile_name") or None,
                            region_name=str(args.get("region_name") or declared_default(EC2_ARCHITECT, "region_name")))
    return session.client("ec2")


def _aws_errors() -> tuple[type[Exception], ...]:
    """What a boto3 call raises, loaded with boto3 (an ``except`` evaluates it only when one was raised)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError


def _aws_error(action: str, error: Exception) -> ServiceError:
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        detail = error.response.get("Error", {})
        return ServiceError(f"EC2 {action} failed: {detail.get('Code')}: {detail.get('Message')}")
    return ServiceError(f"EC2 {action} failed: {error}")


class Ec2Architect:
    name = "ec2"
    deploys_remotely = True
    served_by_deployment = False

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @staticmethod
    def plan_server(architect_args: Mapping[str, Any]) -> ServerPlan:
        # Deployed by a Celery worker on an instance, which sets the run's URL.
        return ServerPlan(False, "0.0.0.0", ArchitectSection.parse(dict(architect_args)).port, "")

    def _run_args(self, task_run_id: int | None) -> tuple[dict[str, Any], str]:
        with transaction(self._runtime.sessions) as session:
            row = session.execute(select(TaskRun.config, Task.task_name).join(Task, Task.id == TaskRun.task_id)
                                  .where(TaskRun.id == task_run_id)).first()
            if row is None:
                raise NotFoundError(f"task run {task_run_id} does not exist")
            return dict(RunConfig.parse(row[0]).architect.args), str(row[1])

    def deploy(self, task_run_id: int) -> int:
        """The run's live server, or a new one: recorded, then started (``ClientToken`` from the record)."""
        args, task_name = self._run_args(task_run_id)
        subdomain = url_safe(str(args.get("subdomain") or task_name))
        port = ArchitectSection.parse(args).port
        with transaction(self._runtime.sessions) as session:
            # Check and record under the run's row lock (SQLite: the write lock), so two deploys of one
            # run (a redeploy and the reconciler's repair, say) record one server.
            session.execute(select(TaskRun.id).where(TaskRun.id == task_run_id).with_for_update())
            live = session.scalar(select(Server.id).where(
                Server.task_run_id == task_run_id, Server.status.in_([s.value for s in SERVER_LIVE])).limit(1))
            if live is not None:
                return int(live)
            server_id = record_server(session, NewServer(task_run_id, "ec2", f"ec2:{args.get('region_name')}",
                                                         None), now=_now())
        request: dict[str, Any] = {
            "ImageId": str(args.get("image_id")), "InstanceType": str(args.get("instance_type") or "t2.micro"),
            "MinCount": 1, "MaxCount": 1, "ClientToken": client_token(server_id),
            "UserData": user_data(task_run_id, server_id, port),
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": f"{subdomain}-routing-server"},
                {"Key": RUN_TAG, "Value": str(task_run_id)}, {"Key": SERVER_TAG, "Value": str(server_id)}]}],
        }
        if args.get("subnet_id"):
            request["SubnetId"] = str(args["subnet_id"])
        if args.get("security_group_id"):
            request["SecurityGroupIds"] = [str(args["security_group_id"])]
        if args.get("key_pair_name"):
            request["KeyName"] = str(args["key_pair_name"])
        client = _client(args)
        try:
            instance = client.run_instances(**request)["Instances"][0]
            instance_id = str(instance["InstanceId"])
            described = client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        except _aws_errors() as error:
            raise _aws_error("RunInstances", error) from None
        public_name = described.get("PublicDnsName") or described.get("PublicIpAddress") or ""
        address = (f"https://{subdomain}.{args['domain']}" if args.get("domain")
                   else f"http://{public_name}:{port}" if public_name else None)
        with transaction(self._runtime.sessions) as session:
            server = session.get(Server, server_id)
            assert server is not None
            server.instance_id, server.address = instance_id, address
            still_wanted = ServerStatus(server.status) in SERVER_LIVE
            run = session.get(TaskRun, task_run_id)
            if run is not None and address and still_wanted:
                run.server_url = address
        if not still_wanted:  # the reconciler closed the record meanwhile (the run ended): leave nothing up
            self.stop(ServerRef(server_id, task_run_id, instance_id))
        return server_id

    def _instances(self, client: Any, server_ids: Sequence[int]) -> dict[int, list[str]]:
        """Instance ids not yet terminated, per server, found by our tag."""
        found: dict[int, list[str]] = {server_id: [] for server_id in server_ids}
        if not server_ids:
            return found
        try:
            pages = client.get_paginator("describe_instances").paginate(Filters=[
                {"Name": f"tag:{SERVER_TAG}", "Values": [str(i) for i in server_ids]},
                {"Name": "instance-state-name", "Values": list(ALIVE_STATES)}])
            for page in pages:
                for reservation in page["Reservations"]:
                    for instance in reservation["Instances"]:
                        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                        found.setdefault(int(tags[SERVER_TAG]), []).append(str(instance["InstanceId"]))
        except _aws_errors() as error:
            raise _aws_error("DescribeInstances", error) from None
        return found

    def stop(self, server: ServerRef) -> None:
        args, _ = self._run_args(server.task_run_id) if server.task_run_id is not None else ({}, "")
        client = _client(args)
        instance_ids = self._instances(client, [server.server_id])[server.server_id]
        if not instance_ids:
            return
        try:
            client.terminate_instances(InstanceIds=instance_ids)
        except _aws_errors() as error:
            raise _aws_error("TerminateInstances", error) from None

    def gone(self, servers: Sequence[ServerRef]) -> set[int] | None:
        running: dict[int, list[str]] = {}
        for (profile, region), group in self._by_account(servers).items():
            client = _client({"profile_name": profile, "region_name": region})
            running.update(self._instances(client, [s.server_id for s in group]))
        return {s.server_id for s in servers if not running.get(s.server_id)}

    def _by_account(self, servers: Sequence[ServerRef]) -> dict[tuple[Any, Any], list[ServerRef]]:
        """Servers grouped by the profile and region their run deploys with (one Describe per group); a
        server of a run gone from the database is looked for with the standard AWS environment."""
        groups: dict[tuple[Any, Any], list[ServerRef]] = {}
        for server in servers:
            try:
                args, _ = self._run_args(server.task_run_id)
            except NotFoundError:
                args = {}
            groups.setdefault((args.get("profile_name"), args.get("region_name")), []).append(server)
        return groups
