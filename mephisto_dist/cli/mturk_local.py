"""``mephisto-dist mturk-local``: run the local MTurk stand-in (``mephisto_dist.mturk_local``)."""

from __future__ import annotations

import sqlite3
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer

from mephisto_dist.cli.console import err_console, fail


def _check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            fail(f"cannot listen on {host}:{port}: {error.strerror or error}")


def mturk_local(
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")] = 8443,
    db: Annotated[Path | None, typer.Option("--db", metavar="FILE", help="SQLite file holding its state "
                                            "(default: mturk-local.sqlite3 in the data directory).")] = None,
    rate: Annotated[float, typer.Option("--rate", metavar="CALLS_PER_S", help="Requester API calls a second "
                                        "before ThrottlingException (0: never throttle).")] = 10.0,
    balance: Annotated[str, typer.Option(
        "--balance", metavar="DOLLARS", help="The account's starting balance (GetAccountBalance), which "
        "payments and bonuses reduce; only when --db is a new file.")] = "10000.00",
) -> None:
    """A local Mechanical Turk for tests and rehearsals: MTurk's requester API for boto3
    (endpoint_url=http://HOST:PORT) and worker pages at the same address. Never for production."""
    import uvicorn

    from mephisto_dist.mturk_local.app import Service, create_app
    from mephisto_dist.mturk_local.store import Store
    from mephisto_dist.settings import load_settings

    if rate < 0:
        fail(f"--rate {rate} must not be negative")
    try:
        start_balance = Decimal(balance)
    except InvalidOperation:
        fail(f"--balance {balance!r} is not an amount in dollars")
    path = db or load_settings().data_dir / "mturk-local.sqlite3"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = Store(path, initial_balance=start_balance)
    except (OSError, sqlite3.Error) as error:
        fail(f"cannot open {path} as mturk-local's state: {error}")
    _check_port_free(host, port)
    err_console.print(f"mturk-local on http://{host}:{port} (requester API: endpoint_url; worker pages: "
                      f"http://{host}:{port}/), state in {path}", highlight=False)
    uvicorn.run(create_app(Service(store, rate)), host=host, port=port, log_level="warning", access_log=False)
