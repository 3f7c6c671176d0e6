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
    host: Annotated[str | None, typer.Option(
        "--host", metavar="HOST", help="Address to bind (default 127.0.0.1; 0.0.0.0 only behind a TLS "
        "proxy).")] = None,
    address: Annotated[str | None, typer.Option("--address", hidden=True, help="The old name of --host.")] = None,
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")] = 5555,
    extra: Annotated[list[str] | None, typer.Argument(
        metavar="FLOWER_OPTION", help="Further Flower options after --, e.g. -- --auth='.*@example.org' "
        "--oauth2_key=...")] = None,
) -> None:
    """Watch the Celery workers and tasks in Flower, on the deployment's broker (MEPHISTO_DIST_REDIS_URL).

    Flower can revoke tasks and shut workers down, so it needs a login: the setting
    MEPHISTO_DIST_FLOWER_BASIC_AUTH=user:password (given to Flower in its environment, never on its
    command line), or Flower's own login options after "--". It binds 127.0.0.1 unless --host says
    otherwise; its page and its own Prometheus metrics (/metrics) are at http://HOST:PORT/."""
    settings = load_settings()
    address = host or address or "127.0.0.1"
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
