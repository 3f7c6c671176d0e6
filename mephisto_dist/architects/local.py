"""The ``local`` architect: a web process on this machine per run (``mephisto_dist.web``, which records
itself and beats on its record: ``web.recorded_server``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mephisto_dist.architects import ServerPlan, ServerRef
from mephisto_dist.architects.servers import (
    NewServer,
    ask_to_stop,
    record_server,
)
from mephisto_dist.config.run_config import ArchitectSection, RunConfig
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.errors import NotFoundError
from mephisto_dist.runtime import Runtime


def _now() -> datetime:
    return datetime.now(UTC)


class LocalArchitect:
    """``deploy`` starts a web process on this machine for one run, recorded first; ``stop`` marks the
    record stopping, which the server reads on its next heartbeat (from any machine: no signal needed)."""

    name = "local"
    deploys_remotely = False
    served_by_deployment = True

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @staticmethod
    def plan_server(architect_args: Mapping[str, Any]) -> ServerPlan:
        hostname = str(architect_args.get("hostname") or "localhost")
        port = ArchitectSection.parse(dict(architect_args)).port
        bind_host = "127.0.0.1" if hostname == "localhost" else "0.0.0.0"
        return ServerPlan(True, bind_host, port, f"http://{hostname}:{port}")

    def deploy(self, task_run_id: int) -> int:
        with transaction(self._runtime.sessions) as session:
            run = session.get(TaskRun, task_run_id)
            if run is None:
                raise NotFoundError(f"task run {task_run_id} does not exist")
            plan = self.plan_server(RunConfig.parse(run.config).architect.args)
            server_id = record_server(session, NewServer(task_run_id, "local", socket.gethostname(),
                                                         plan.public_url), now=_now())
        argv = [sys.executable, "-m", "mephisto_dist.web", "--run", str(task_run_id), "--host", plan.bind_host,
                "--port", str(plan.port), "--server-id", str(server_id)]
        env = dict(os.environ)
        env.update(self._runtime.settings.to_env())
        log_path = self._runtime.settings.data_dir / "logs" / f"server-{server_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return server_id

    def stop(self, server: ServerRef) -> None:
        with transaction(self._runtime.sessions) as session:
            ask_to_stop(session, server.server_id, "asked to stop", now=_now())

    def gone(self, servers: Sequence[ServerRef]) -> set[int] | None:
        return None
