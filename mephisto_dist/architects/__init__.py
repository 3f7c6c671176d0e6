"""Architects: where the worker-facing server runs and the URL workers reach it at.

``local`` serves on ``hostname:port`` from this machine (the CLI starts the server in the embedded
default; a ``web`` process does it in a deployment); ``ec2`` deploys it on an instance tagged with the
run (``ec2``); ``mock`` runs no server at all (for tests that speak the protocol directly).

Every server is recorded in the ``server`` table before it starts and beats on its record while it runs
(``servers``); the contract below is what beat's server reconciler needs of an architect. What differs
between architects is declared by each as a capability of the contract (``deploys_remotely``,
``served_by_deployment``, its ``plan_server``), and architects are found by name in one registry
(:func:`architect_class`): nothing outside this package compares an architect's name.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
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


@dataclass(frozen=True)
class ServerPlan:
    """Where the worker-facing server of a run listens, and whether this deployment must start it."""

    should_run_server: bool
    bind_host: str
    port: int
    public_url: str


class Architect(Protocol):
    """Deploy, record, heartbeat, stop. ``deploy`` records the server (``servers.record_server``) before
    starting it and returns the record's id; the server itself beats (``servers.heartbeat``)."""

    name: str
    """The name a task config chooses it by (``/mephisto/architect: NAME``) and servers are recorded with."""
    deploys_remotely: bool
    """Its server runs on a machine it starts (ec2): a Celery worker deploys it before the run's units are
    launched (the run's URL is known then), an attached ``run`` cannot, beat redeploys it when the machine
    is gone, and a server to stop is terminated rather than asked to stop itself."""
    served_by_deployment: bool
    """The run is served by the deployment's own web processes (the CLI's, or the Procfile's ``web``
    finding its run by port), at the run's URL."""

    def __init__(self, runtime: Runtime) -> None: ...

    @staticmethod
    def plan_server(architect_args: Mapping[str, Any]) -> ServerPlan:
        """Where the run's server listens, from its stored ``mephisto.architect`` arguments."""
        ...

    def deploy(self, task_run_id: int) -> int: ...

    def stop(self, server: ServerRef) -> None:
        """Stop or terminate the server; idempotent."""

    def gone(self, servers: Sequence[ServerRef]) -> set[int] | None:
        """Which of these servers no longer run at all (an instance terminated behind our back); None
        when the architect cannot tell and the heartbeat alone decides."""


@cache
def _registry() -> dict[str, type[Architect]]:
    """Every architect by name: the one place an architect is added."""
    from mephisto_dist.architects.ec2 import Ec2Architect
    from mephisto_dist.architects.local import LocalArchitect
    from mephisto_dist.architects.mock import MockArchitect

    implemented: tuple[type[Architect], ...] = (LocalArchitect, Ec2Architect, MockArchitect)
    return {cls.name: cls for cls in implemented}


def architect_types(where: Callable[[type[Architect]], bool] | None = None) -> tuple[str, ...]:
    """The names of the architects (those with a capability, given ``where``)."""
    return tuple(name for name, cls in _registry().items() if where is None or where(cls))


def architect_class(architect_type: str) -> type[Architect]:
    """The implementation of ``architect_type``: its capabilities, without building one."""
    cls = _registry().get(architect_type)
    if cls is None:
        raise ConfigError(f"architect {architect_type!r} is not supported yet; supported: "
                          f"{', '.join(architect_types())}")
    return cls


def plan_server(architect_type: str, architect_args: Mapping[str, Any]) -> ServerPlan:
    return architect_class(architect_type).plan_server(architect_args)


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
    """The architect that manages servers of ``name`` from this process; None for a name it does not know."""
    cls = _registry().get(name)
    return None if cls is None else cls(runtime)
