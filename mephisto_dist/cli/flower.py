"""``mephisto-dist flower``: Flower on the deployment's broker, never without credentials.

Flower shows every task's arguments and can revoke tasks and shut workers down, so an open Flower is
an open door: this refuses to start unless a login is configured, and binds to 127.0.0.1 unless told
otherwise. The password reaches Flower through its ``FLOWER_BASIC_AUTH`` environment variable, never
the command line (which any local user can read in ``ps``). Flower's own Prometheus metrics stay out of
the machine's metrics folder (``mephisto_dist.celery.monitor``): Flower serves them at its ``/metrics``.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from mephisto_dist.cli.console import fail
from mephisto_dist.metrics import MULTIPROC_ENV
from mephisto_dist.settings import load_settings

# Flower's own ways of requiring a login, given as extra arguments.
_AUTH_OPTIONS = ("--basic-auth", "--basic_auth", "--auth")


def flower(
    address: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 only behind a TLS proxy).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5555,
    extra: Annotated[list[str] | None, typer.Argument(
        help="Further Flower options after --, e.g. -- --auth='.*@example.org' --oauth2_key=...")] = None,
) -> None:
    """Watch the Celery workers and tasks in Flower (requires a login)."""
    settings = load_settings()
    extra = extra or []
    own_auth = settings.flower_own_auth or _login_in(extra)
    if settings.flower_basic_auth is None and not own_auth:
        fail("flower needs credentials: set MEPHISTO_DIST_FLOWER_BASIC_AUTH=user:password "
             "(or pass Flower's own --basic-auth / --auth after --)")
    env = dict(os.environ)
    env.update(settings.to_env())
    env.pop(MULTIPROC_ENV, None)  # Flower's metrics in its own process, not in our folder
    if settings.flower_basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth
    argv = [sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.monitor", "flower", f"--address={address}", f"--port={port}",
            *extra]
    os.execve(sys.executable, argv, env)


def _login_in(extra: list[str]) -> bool:
    """Whether Flower's own options among ``extra`` configure a login: ``--basic-auth`` or ``--auth`` with
    a value that is not empty (Flower treats an empty one as no login at all)."""
    for index, arg in enumerate(extra):
        name, equals, value = arg.partition("=")
        if name not in _AUTH_OPTIONS:
            continue
        if not equals:  # "--auth VALUE"
            value = extra[index + 1] if index + 1 < len(extra) and not extra[index + 1].startswith("-") else ""
        if value.strip():
            return True
    return False
