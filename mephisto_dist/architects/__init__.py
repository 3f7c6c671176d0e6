"""Architects: where the worker-facing server runs and the URL workers reach it at.

``local`` serves on ``hostname:port`` from this machine (the CLI starts the server in the embedded
default; a ``web`` process does it in a deployment); ``ec2`` deploys it on an instance tagged with the
run (``ec2``); ``mock`` runs no server at all (for tests that speak the protocol directly).

Every server is recorded in the ``server`` table before it starts and beats on its record while it runs
(``servers``); the contract below is what beat's server reconciler needs of an architect.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mephisto_dist.errors import ConfigError

if TYPE_CHECKING:
    from mephisto_dist.runtime import Runtime


@dataclass(frozen=True)
class ServerRef:
    """What an architect needs to find a recorded server again."""

    server_id: int
    task_run_id: int | None
    instance_id: str | None


class Architect(Protocol):
    """Deploy, record, heartbeat, stop. ``deploy`` records the server (``servers.record_server``) before
    starting it and returns the record's id; the server itself beats (``servers.heartbeat``)."""

    name: str

    def deploy(self, task_run_id: int) -> int: ...

    def stop(self, server: ServerRef) -> None:
        """Stop or terminate the server; idempotent."""

    def gone(self, servers: Sequence[ServerRef]) -> set[int] | None:
        """Which of these servers no longer run at all (an instance terminated behind our back); None
        when the architect cannot tell and the heartbeat alone decides."""


@dataclass(frozen=True)
class ServerPlan:
    """Where the worker-facing server of a run listens, and whether this deployment must start it."""

    should_run_server: bool
    bind_host: str
    port: int
    public_url: str


def plan_server(architect_type: str, architect_args: Mapping[str, Any]) -> ServerPlan:
    if architect_type == "local":
        hostname = str(architect_args.get("hostname") or "localhost")
        port = int(architect_args.get("port") or 3000)
        return ServerPlan(True, _bind_host(hostname), port, f"http://{hostname}:{port}")
    if architect_type == "ec2":
        # Deployed by a Celery worker on an instance, which sets the run's URL (``ec2``).
        return ServerPlan(False, "0.0.0.0", int(architect_args.get("port") or 3000), "")
    if architect_type == "mock":
        port = int(architect_args.get("port") or 3000)
        should_run = bool(architect_args.get("should_run_server", False))
        return ServerPlan(should_run, "127.0.0.1", port, f"http://localhost:{port}")
    raise ConfigError(f"architect {architect_type!r} is not supported yet; supported: local, ec2, mock")


def _bind_host(hostname: str) -> str:
    return "127.0.0.1" if hostname == "localhost" else "0.0.0.0"


def check_port_free(plan: ServerPlan, *, can_override: bool = True) -> None:
    """Fail before anything is created when the run's port is already taken.

    The probe binds as the server will (uvicorn, like asyncio, sets ``SO_REUSEADDR``), so connections
    of a server that just exited, lingering in TIME_WAIT, do not count as taken: only a listener does.
    """
    if not plan.should_run_server:
        return
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((plan.bind_host, plan.port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            hint = ("choose another with mephisto.architect.port=N" if can_override
                    else "stop the program listening there, then resume again")
            raise ConfigError(f"port {plan.port} is already taken on {plan.bind_host}; {hint}") from None
        raise ConfigError(f"cannot listen on {plan.bind_host}:{plan.port}: {error.strerror}") from None
    finally:
        probe.close()


def make_architect(name: str, runtime: Runtime) -> Architect | None:
    """The architect that manages servers of ``name`` from this process; None for ``mock`` (no server)."""
    if name == "local":
        from mephisto_dist.architects.local import LocalArchitect

        return LocalArchitect(runtime)
    if name == "ec2":
        from mephisto_dist.architects.ec2 import Ec2Architect

        return Ec2Architect(runtime)
    return None
