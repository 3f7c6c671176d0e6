"""``mephisto-dist prolific-local``: run the local Prolific stand-in (``mephisto_dist.prolific_local``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from mephisto_dist.cli.console import err_console, fail
from mephisto_dist.cli.mturk_local import _check_port_free


def prolific_local(
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")] = 8444,
    db: Annotated[Path | None, typer.Option("--db", metavar="FILE", help="SQLite file holding its state "
                                            "(default: prolific-local.sqlite3 in the data directory).")] = None,
    processing_s: Annotated[float, typer.Option(
        "--processing-s", metavar="SECONDS", help="Seconds a study or submission shows PROCESSING after a change, as Prolific's do.")]
    = 0.5,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", metavar="TOKEN", envvar="PROLIFIC_LOCAL_API_KEY", show_envvar=False,
        help="The one API token accepted (default: any non-empty token).")] = None,
    slow_pay_s: Annotated[float, typer.Option(
        "--slow-pay-s", metavar="SECONDS", help="Answer a bulk bonus pay call this long after paying it (to "
        "rehearse a caller that dies between Prolific paying and its own record).")] = 0.0,
    page_size: Annotated[int, typer.Option(
        "--page-size", metavar="N", help="Items per page of a listing when the caller asks for none "
        "(page_size=...); the next page is at _links.next, as Prolific's.")] = 100,
) -> None:
    """A local Prolific for tests and rehearsals: Prolific's researcher API at http://HOST:PORT/api/v1/
    (register a requester with endpoint_url=http://HOST:PORT) and participant pages at the same address.
    Never for production."""
    import uvicorn

    from mephisto_dist.prolific_local.app import Service, create_app
    from mephisto_dist.prolific_local.store import Store
    from mephisto_dist.settings import load_settings

    if processing_s < 0 or slow_pay_s < 0:
        fail(f"--processing-s {processing_s} and --slow-pay-s {slow_pay_s} must not be negative")
    if page_size < 1:
        fail(f"--page-size {page_size} must be 1 or more")
    path = db or load_settings().data_dir / "prolific-local.sqlite3"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = Store(path)
    except (OSError, sqlite3.Error) as error:
        fail(f"cannot open {path} as prolific-local's state: {error}")
    _check_port_free(host, port)
    err_console.print(f"prolific-local on http://{host}:{port} (researcher API: endpoint_url; participant pages: "
                      f"http://{host}:{port}/), state in {path}", highlight=False)
    uvicorn.run(create_app(Service(store, api_key=api_key, processing_s=processing_s,
                                              slow_pay_s=slow_pay_s, page_size=page_size)), host=host, port=port,
                log_level="warning", access_log=False)
