"""Architects: where the worker-facing server runs and the URL workers reach it at.

``local`` serves on ``hostname:port`` from this machine (the CLI starts the server in the embedded
default; a ``web`` process does it in a deployment); ``mock`` runs no server at all (for tests that speak
the protocol directly).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mephisto_dist.errors import ConfigError


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
    if architect_type == "mock":
        port = int(architect_args.get("port") or 3000)
        should_run = bool(architect_args.get("should_run_server", False))
        return ServerPlan(should_run, "127.0.0.1", port, f"http://localhost:{port}")
    raise ConfigError(f"architect {architect_type!r} is not supported yet; supported: local, mock")


def _bind_host(hostname: str) -> str:
    return "127.0.0.1" if hostname == "localhost" else "0.0.0.0"


def check_port_free(plan: ServerPlan) -> None:
    """Fail before anything is created when the run's port is already taken."""
    if not plan.should_run_server:
        return
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((plan.bind_host, plan.port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {plan.port} is already taken on {plan.bind_host}; "
                f"choose another with mephisto.architect.port=N"
            ) from None
        raise ConfigError(f"cannot listen on {plan.bind_host}:{plan.port}: {error.strerror}") from None
    finally:
        probe.close()
