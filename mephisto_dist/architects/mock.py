"""The ``mock`` architect: runs no server of its own (tests speak the worker-facing protocol directly),
or, with ``should_run_server``, has the CLI start one on this machine as ``local`` would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mephisto_dist.architects import ServerPlan, ServerRef
from mephisto_dist.config.run_config import ArchitectSection
from mephisto_dist.errors import ConfigError

if TYPE_CHECKING:
    from mephisto_dist.runtime import Runtime


class MockArchitect:
    """Deploys, stops and watches nothing: a server it asked the CLI for is recorded as ``local``."""

    name = "mock"
    deploys_remotely = False
    served_by_deployment = False

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @staticmethod
    def plan_server(architect_args: Mapping[str, Any]) -> ServerPlan:
        port = ArchitectSection.parse(dict(architect_args)).port
        should_run = bool(architect_args.get("should_run_server", False))
        return ServerPlan(should_run, "127.0.0.1", port, f"http://localhost:{port}")

    def deploy(self, task_run_id: int) -> int:
        raise ConfigError("the mock architect deploys no server")

    def stop(self, server: ServerRef) -> None:
        return None

    def gone(self, servers: Sequence[ServerRef]) -> set[int] | None:
        return None
