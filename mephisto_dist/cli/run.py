"""``mephisto-dist run``: enqueue a TaskRun and, attached, run its services and show progress."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.live import Live
from rich.table import Table

from mephisto_dist.cli.console import console, err_console
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.migrate import upgrade
from mephisto_dist.domain.status import UnitStatus, run_is_done
from mephisto_dist.embedded import ChildProcesses, EmbeddedRedis
from mephisto_dist.errors import ServiceError
from mephisto_dist.launcher import PreparedRun, create_run, enqueue_launch, prepare_run
from mephisto_dist.providers import make_provider
from mephisto_dist.runs import unit_counts
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import Settings, load_settings

POLL_S = 0.5
SERVER_START_TIMEOUT_S = 20.0
SHOWN_STATUSES = (UnitStatus.CREATED, UnitStatus.LAUNCHED, UnitStatus.ASSIGNED, UnitStatus.COMPLETED,
                  UnitStatus.ACCEPTED, UnitStatus.REJECTED, UnitStatus.SOFT_REJECTED, UnitStatus.EXPIRED)


def run(
    task_dir: Annotated[Path, typer.Argument(help="A Mephisto task folder (with hydra_configs/conf/).")],
    args: Annotated[list[str] | None, typer.Argument(
        help="conf=NAME to pick hydra_configs/conf/NAME.yaml, then dotted.key=value overrides.")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Only enqueue the run and print its id.")] = False,
) -> None:
    """Launch a task run from a Mephisto task folder."""
    conf, overrides = _split_args(args or [])
    settings = load_settings()
    prepared = prepare_run(task_dir, conf, overrides, check_port=not detach)
    if detach:
        runtime = Runtime(settings)
        if settings.embedded_redis:
            err_console.print("[bold red]error:[/] --detach needs MEPHISTO_DIST_REDIS_URL: detached runs are "
                              "worked by Celery workers started elsewhere")
            raise typer.Exit(2)
        upgrade(runtime.engine)
        run_id = create_run(runtime, prepared)
        enqueue_launch(runtime, run_id)
        console.print(run_id)
        return
    _run_attached(settings, prepared)


def _split_args(args: list[str]) -> tuple[str, list[str]]:
    conf = "example"
    overrides: list[str] = []
    for arg in args:
        if arg.startswith("conf="):
            conf = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    return conf, overrides


def _run_attached(settings: Settings, prepared: PreparedRun) -> None:
    redis_server = EmbeddedRedis(settings) if settings.embedded_redis else None
    if redis_server is not None:
        settings = replace(settings, redis_url=redis_server.start())
    runtime = Runtime(settings)
    children: ChildProcesses | None = None
    try:
        upgrade(runtime.engine)
        run_id = create_run(runtime, prepared)
        children = ChildProcesses(settings, settings.data_dir / "logs" / f"run-{run_id}")
        started = time.monotonic()
        children.start_worker()
        children.start_beat()
        server = prepared.server
        if server.should_run_server:
            children.start_web(run_id, server.bind_host, server.port)
        enqueue_launch(runtime, run_id)
        if server.should_run_server:
            _wait_for_server(server.port, children)
        console.print(f"task run [bold]{run_id}[/] of [bold]{prepared.config.task['task_name']}[/] "
                      f"launched in {time.monotonic() - started:.1f}s; logs in {children.log_dir}")
        _print_worker_urls(prepared, server.public_url)
        _watch(runtime, run_id, children)
    except KeyboardInterrupt:
        err_console.print("interrupted: stopping the run's processes. Units not yet done stay in the "
                          "database; export what was submitted with mephisto-dist export.")
        raise typer.Exit(130) from None
    finally:
        if children is not None:
            children.stop()
        runtime.close()
        if redis_server is not None:
            redis_server.stop()


def _wait_for_server(port: int, children: ChildProcesses) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    url = f"http://127.0.0.1:{port}/task_config.json"
    while time.monotonic() < deadline:
        _check_children(children)
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise ServiceError(f"the web server did not answer on port {port}; see {children.log_dir / 'web.log'}")


def _check_children(children: ChildProcesses) -> None:
    for child in children.dead():
        raise ServiceError(f"the {child.name} process exited (code {child.process.returncode}); "
                           f"see {child.log_path}")


def _print_worker_urls(prepared: PreparedRun, server_url: str) -> None:
    provider = make_provider(prepared.config.provider_type, prepared.config.provider)
    url = provider.worker_url(server_url, "worker1", "1")
    if url is None:
        return
    console.print("Open the task as a worker (any worker_id / assignment_id you like):")
    console.print(f"  {url}")
    console.print(f"  {provider.worker_url(server_url, 'worker2', '2')}")


def _table(run_id: int, counts: dict[UnitStatus, int], elapsed_s: float) -> Table:
    total = sum(counts.values())
    done = sum(n for s, n in counts.items() if s not in (UnitStatus.CREATED, UnitStatus.LAUNCHED,
                                                          UnitStatus.ASSIGNED))
    table = Table(title=f"task run {run_id}: {done}/{total} units done ({elapsed_s:.0f}s)", expand=False)
    for status in SHOWN_STATUSES:
        table.add_column(status.value, justify="right")
    table.add_row(*(str(counts.get(s, 0)) for s in SHOWN_STATUSES))
    return table


def _watch(runtime: Runtime, run_id: int, children: ChildProcesses) -> None:
    """Units per status until the run is done: a live table on a terminal, a line per change elsewhere."""
    started = time.monotonic()
    last: dict[UnitStatus, int] | None = None
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    if live is not None:
        live.start()
    try:
        while True:
            _check_children(children)
            with transaction(runtime.sessions) as session:
                counts = unit_counts(session, run_id)
            if live is not None:
                live.update(_table(run_id, counts, time.monotonic() - started), refresh=True)
            elif counts != last:
                console.print(" ".join(f"{s.value}={counts.get(s, 0)}" for s in SHOWN_STATUSES),
                              soft_wrap=True)
            last = counts
            if run_is_done(counts):
                break
            time.sleep(POLL_S)
    finally:
        if live is not None:
            live.stop()
    console.print(f"task run {run_id} is done: "
                  + ", ".join(f"{n} {s.value}" for s, n in sorted(counts.items()) if n), soft_wrap=True)
