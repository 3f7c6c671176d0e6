"""``mephisto-dist run`` and ``resume``: enqueue a TaskRun and, attached, run its services, show
progress, and stop it the Mephisto way: Ctrl-C once drains, twice forces."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Self

import redis
import typer
from rich.live import Live
from rich.table import Table

from mephisto_dist.architects import ServerPlan, architect_class, check_port_free
from mephisto_dist.cli.console import console, err_console, fail
from mephisto_dist.cli.embedded import ChildProcesses, EmbeddedRedis
from mephisto_dist.config.run_config import RunConfig
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.migrate import check_schema, upgrade
from mephisto_dist.db.models import TaskRun
from mephisto_dist.domain.run_summary import unit_progress
from mephisto_dist.domain.status import UnitStatus, run_is_done
from mephisto_dist.errors import ServiceError
from mephisto_dist.providers import CrowdProvider
from mephisto_dist.runners.assignments.shutdown import shut_down_runners
from mephisto_dist.runs import lifecycle, watching
from mephisto_dist.runs.launches import LaunchContext, launch_units
from mephisto_dist.runs.preparation import (
    PreparedRun,
    check_port_unclaimed,
    check_services,
    create_run,
    enqueue_launch,
    prepare_run,
)
from mephisto_dist.runs.stopping import drain, force_stop, run_provider, undo_failed_start
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import Settings, load_settings

SCRIPT_NAME = "run_task.py"
DEFAULT_CONF = "example"
POLL_S = 0.5
HOOK_GRACE_S = 30.0
SERVER_START_TIMEOUT_S = 20.0
FORCE_STOP_TIMEOUT_S = 4.0
EXIT_FORCED = 130
EXIT_TERMINATED = 143
SHOWN_STATUSES = (UnitStatus.CREATED, UnitStatus.LAUNCHED, UnitStatus.ASSIGNED, UnitStatus.COMPLETED,
                  UnitStatus.ACCEPTED, UnitStatus.REJECTED, UnitStatus.SOFT_REJECTED, UnitStatus.EXPIRED)


def _now() -> datetime:
    return datetime.now(UTC)


def run(
    task_dir: Annotated[Path, typer.Argument(metavar="TASK_DIR",
                                             help="A Mephisto task folder (with hydra_configs/conf/).")],
    args: Annotated[list[str] | None, typer.Argument(
        metavar="KEY=VALUE", help="conf=NAME to pick hydra_configs/conf/NAME.yaml, then dotted.key=value "
        "overrides.")] = None,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Only create and enqueue the run (for the deployment's workers); print its id, "
        "worker URL and the commands that follow.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="With --detach: print only the run id.")] = False,
    script: Annotated[Path | None, typer.Option(
        "--script", metavar="FILE", help="The task script to run (default: TASK_DIR/run_task.py when it "
        "exists).")] = None,
) -> None:
    """Launch a task run from a Mephisto task folder: its run_task.py, or its YAML config alone."""
    conf, overrides = _split_args(args or [])
    settings = load_settings()
    if detach and settings.embedded_redis:
        fail("--detach needs MEPHISTO_DIST_REDIS_URL: a detached run is worked by Celery workers "
             "started elsewhere")
    script_path = script if script is not None else task_dir / SCRIPT_NAME
    if script is not None or script_path.is_file():
        from mephisto_dist.cli.script_run import run_task_script

        run_task_script(settings, script_path, conf, overrides, detach=detach, log_dir=new_log_dir(settings),
                        quiet=quiet)
        return
    if detach:
        launch_prepared(settings, _prepare(task_dir, conf, overrides, detach=True), detach=True, quiet=quiet)
        return
    # The web server is the slowest process to come up, and the first unit is claimable once it
    # answers: forked first, before any connection or thread exists here, it loads its modules while
    # the config is read, Redis starts and the database is checked; it serves once released. The
    # embedded Redis server starts next, and comes up while the task folder is read.
    children = ChildProcesses(settings, new_log_dir(settings))
    children.fork_web()
    services = Services(settings)
    services.begin()
    try:
        launch_prepared(settings, _prepare(task_dir, conf, overrides, detach=False), detach=False,
                        children=children, services=services)
    finally:
        children.stop()  # a start that failed before the watch began (the watch stops them itself)
        services.close()


def _prepare(task_dir: Path, conf: str | None, overrides: list[str], *, detach: bool) -> PreparedRun:
    prepared = prepare_run(task_dir, conf or DEFAULT_CONF, overrides, check_port=False)
    if architect_class(prepared.config.architect_type).deploys_remotely and not detach:
        fail("the ec2 architect's server is deployed by the deployment's Celery workers: run with --detach "
             "(and MEPHISTO_DIST_REDIS_URL / MEPHISTO_DIST_DATABASE_URL of the deployment)")
    return prepared


def new_log_dir(settings: Settings) -> Path:
    """Where this command's services (and a webapp build) write their logs."""
    return settings.data_dir / "logs" / time.strftime(f"%Y%m%d-%H%M%S-{os.getpid()}")


def launch_prepared(settings: Settings, prepared: PreparedRun, *, detach: bool, log_dir: Path | None = None,
                    quiet: bool = False, children: ChildProcesses | None = None,
                    services: Services | None = None) -> None:
    """Create the prepared run; detached, enqueue it and say what follows (``quiet``: print only its id);
    attached, run its services and show progress until it ends. ``children``: the caller's, with a
    standby web server forked (``ChildProcesses.fork_web``) to serve this run; stopped by the caller.
    ``services``: the caller's, begun (``Services.begin``); closed here, and by the caller."""
    for key in prepared.config.unimplemented_settings():
        err_console.print(f"warning: {key} is accepted but not implemented yet: its value is ignored "
                          "(mephisto-dist wut lists what is)", soft_wrap=True, highlight=False)
    if prepared.config.task.get("resume_incomplete_run"):
        resumable = _incomplete_run(settings, str(prepared.config.task["task_name"]), attached=not detach)
        if resumable is not None:
            console.print(f"resuming incomplete task run {resumable} of {prepared.config.task['task_name']}")
            _resume(settings, resumable, detach=detach, quiet=quiet)
            return
    if detach:
        runtime = Runtime(settings)
        try:
            prepare_schema(runtime, attached=False)
            check_services(runtime)
            check_port_unclaimed(runtime, prepared.server)
            run_id = create_run(runtime, prepared)
            try:
                enqueue_launch(runtime, run_id, prepared.config.architect_type)
            except BaseException as error:
                _undo_start(runtime, run_id, error)
                raise
            _say_detached(runtime, run_id, str(prepared.config.task["task_name"]), prepared.server,
                          "enqueued for the deployment's Celery workers to launch", quiet=quiet)
        finally:
            runtime.close()
        return
    server = prepared.server
    if children is None:
        children = ChildProcesses(settings, log_dir or new_log_dir(settings))
    try:
        with services or Services(settings) as running:
            children.settings = running.settings
            prepare_schema(running.runtime, attached=True)
            check_services(running.runtime)
            # Another open run serving the port is named first; then anything else listening there.
            check_port_unclaimed(running.runtime, server)
            check_port_free(server)
            if server.should_run_server:
                # Serving before the run exists: the newest open run on its port, once it is there.
                if children.has_standby_web:
                    children.release_web(server.bind_host, server.port)
                else:
                    children.start_web(None, server.bind_host, server.port)
            run_id = create_run(running.runtime, prepared)
            Attached(running, run_id, server, str(prepared.config.task["task_name"]), children,
                     new_run=True).start_and_watch()
    finally:
        children.stop()  # a start that failed before the watch began (the watch stops them itself)


def _undo_start(runtime: Runtime, run_id: int, error: BaseException) -> None:
    """Close a run whose start failed, saying so; the error that stopped it is raised by the caller."""
    why = str(error) or type(error).__name__
    try:
        undo_failed_start(runtime, run_id, why, now=_now())
    except Exception as undo_error:  # noqa: BLE001 - said, not raised: the start's own error is the one to report
        err_console.print(f"task run {run_id} failed to start and could not be closed ({undo_error}); once the "
                          f"service answers: mephisto-dist shutdown {run_id} --force", soft_wrap=True,
                          highlight=False)
        return
    err_console.print(f"task run {run_id} failed to start: closed, its units expired (nothing of it is left "
                      "open; fix the error below and run again)", soft_wrap=True, highlight=False)


def resume(
    run_id: Annotated[int, typer.Argument(metavar="RUN_ID", help="The task run to resume.")],
    detach: Annotated[bool, typer.Option("--detach", help="Only enqueue the relaunch.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="With --detach: print only the run id.")] = False,
) -> None:
    """Relaunch what is not done of a run whose processes died; completed work is never redone."""
    settings = load_settings()
    if detach and settings.embedded_redis:
        fail("--detach needs MEPHISTO_DIST_REDIS_URL")
    _resume(settings, run_id, detach=detach, quiet=quiet)


def _resume(settings: Settings, run_id: int, *, detach: bool, quiet: bool = False) -> None:
    runtime = Runtime(settings)
    try:
        prepare_schema(runtime, attached=not detach)
        if detach or not settings.embedded_redis:  # an attached embedded resume starts its own Redis
            check_services(runtime, resuming=run_id)
        found = watching.resumable(runtime.sessions, run_id)
        task_name, server, architect_type = found.task_name, found.server, found.architect_type
        check_port_unclaimed(runtime, server, resuming=run_id)
    finally:
        runtime.close()
    if detach:
        runtime = Runtime(settings)
        try:
            enqueue_launch(runtime, run_id, architect_type)
            _say_detached(runtime, run_id, task_name, server,
                          "relaunch of what is not done enqueued", quiet=quiet)
        finally:
            runtime.close()
        return
    check_port_free(server, can_override=False)
    with Services(settings) as services:
        children = ChildProcesses(services.settings, services.settings.data_dir / "logs" /
                                  time.strftime(f"%Y%m%d-%H%M%S-{os.getpid()}"))
        Attached(services, run_id, server, task_name, children).start_and_watch()


def _say_detached(runtime: Runtime, run_id: int, task_name: str, server: ServerPlan, what: str, *,
                  quiet: bool) -> None:
    """A detached run's id, where workers open it and the commands that follow; ``quiet``: its id alone
    (for scripts)."""
    if quiet:
        console.print(run_id, highlight=False)
        return
    console.print(f"task run {run_id} of {task_name}: {what}", soft_wrap=True, highlight=False)
    provider = run_provider(runtime, run_id)
    url = provider.worker_url(server.public_url, "worker1", "1")
    if url is None:
        console.print(f"workers find its HITs on {provider.provider_type}; each opens {server.public_url}",
                      soft_wrap=True, highlight=False)
    else:
        console.print(f"workers open: {url} (any worker_id / assignment_id)", soft_wrap=True, highlight=False)
    rows = ((f"mephisto-dist status {run_id}", "its progress, and why it is not progressing"),
            (f"mephisto-dist shutdown {run_id}", "stop it (--force: now)"),
            (f"mephisto-dist export --run {run_id}", "its results"))
    width = max(len(command) for command, _ in rows)
    console.print("next:", highlight=False)
    for command, meaning in rows:
        console.print(f"  {command.ljust(width)}  {meaning}", soft_wrap=True, highlight=False)


def _incomplete_run(settings: Settings, task_name: str, *, attached: bool) -> int | None:
    runtime = Runtime(settings)
    try:
        prepare_schema(runtime, attached=attached)
        return watching.incomplete_run(runtime.sessions, task_name)
    finally:
        runtime.close()


def prepare_schema(runtime: Runtime, *, attached: bool) -> None:
    """An embedded attached run (no Redis configured: its own SQLite, its own services) migrates its
    database; in a deployment only ``mephisto-dist migrate`` does, and this refuses a schema behind."""
    if attached and runtime.settings.embedded_redis:
        upgrade(runtime.engine)
    else:
        check_schema(runtime.engine, create_embedded=runtime.engine.dialect.name == "sqlite")


def _split_args(args: list[str]) -> tuple[str | None, list[str]]:
    conf: str | None = None
    overrides: list[str] = []
    for arg in args:
        if arg.startswith("conf="):
            conf = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    return conf, overrides


class Services:
    """The embedded Redis (when no URL is configured) and the Runtime on it, for an attached run."""

    def __init__(self, settings: Settings) -> None:
        self._redis = EmbeddedRedis(settings.embedded_redis_socket) if settings.embedded_redis else None
        self._begun = False
        self._runtime: Runtime | None = None
        self.settings = settings

    @property
    def runtime(self) -> Runtime:
        assert self._runtime is not None, "entered first"
        return self._runtime

    def begin(self) -> None:
        """Start the embedded Redis without waiting for it to answer (entering waits)."""
        if self._redis is not None and not self._begun:
            self._redis.begin()
            self._begun = True

    def __enter__(self) -> Self:
        if self._redis is not None:
            self.begin()
            self.settings = replace(self.settings, redis_url=self._redis.ready())
        self._runtime = Runtime(self.settings)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the Runtime and stop using the embedded Redis; again, nothing."""
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()
        if self._redis is not None and self._begun:
            self._begun = False
            self._redis.stop()


class Interrupts:
    """Counts Ctrl-Cs instead of raising, so no step is cut half-way: the watch loop reads the count.

    SIGTERM (the CLI itself being stopped, not the run) stops this CLI's services and leaves the run
    as it is, to be resumed with ``mephisto-dist resume``.
    """

    def __init__(self) -> None:
        self.count = 0
        self.terminated = False
        self._previous: list[object] = []

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.terminated = True

    def __enter__(self) -> Self:
        self._previous = [signal.signal(signal.SIGINT, self._on_sigint),
                          signal.signal(signal.SIGTERM, self._on_sigterm)]
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous[0])  # type: ignore[arg-type]
        signal.signal(signal.SIGTERM, self._previous[1])  # type: ignore[arg-type]


@dataclass
class Attached:
    services: Services
    run_id: int
    server: ServerPlan
    task_name: str
    children: ChildProcesses
    new_run: bool = False
    """A run created by this command: closed again when its start fails (a resumed run stays open)."""
    _live: Live | None = field(default=None, init=False, repr=False)

    @property
    def runtime(self) -> Runtime:
        return self.services.runtime

    def start_and_watch(self) -> None:
        children = self.children
        with Interrupts() as interrupts:
            try:
                started = time.monotonic()
                try:
                    provider = self._start(children, interrupts)
                except BaseException as error:
                    if self.new_run:
                        _undo_start(self.runtime, self.run_id, error)
                    raise
                console.print(f"task run [bold]{self.run_id}[/] of [bold]{self.task_name}[/] launched in "
                              f"{time.monotonic() - started:.1f}s; logs in {children.log_dir}")
                _print_worker_urls(provider, self.server.public_url)
                forced = self._watch(children, interrupts)
            finally:
                children.stop(FORCE_STOP_TIMEOUT_S if interrupts.count >= 2 else 10.0)
        self._summary()
        if forced:
            raise typer.Exit(EXIT_FORCED)

    def _start(self, children: ChildProcesses, interrupts: Interrupts) -> CrowdProvider:
        """Start the run's server and Celery, and launch its first units."""
        if self.server.should_run_server and not children.started("web"):
            children.start_web(self.run_id, self.server.bind_host, self.server.port)
        # The first units are launched here, while the server starts, so that they are
        # claimable the moment it answers; the Celery launch task then finds them done.
        # Not on a marketplace (MTurk): a HIT up before the server answers shows workers a dead page.
        provider = self._provider()
        if provider.publishes_instantly:
            launch_units(self.runtime.sessions, LaunchContext.of(self.runtime, provider), self.run_id,
                         now=_now())
        if self.server.should_run_server:
            _wait_for_server(self.server.port, children, interrupts)
        # Enqueued once the server answers: sending loads Celery here (a quarter of a second of CPU on
        # two cores, taken from the server's first requests), and a marketplace's HITs then go up only
        # once their page is served.
        enqueue_launch(self.runtime, self.run_id)
        # Celery comes up once workers can already work: on two cores its start-up would
        # otherwise slow the server's.
        children.start_worker()
        if self._hosts_assignments():
            children.start_runner()
        children.start_beat()
        return provider

    def _hosts_assignments(self) -> bool:
        with transaction(self.runtime.sessions) as session:
            run = session.get(TaskRun, self.run_id)
            return run is not None and RunConfig.parse(run.config).hosts_assignments

    def _provider(self) -> CrowdProvider:
        return run_provider(self.runtime, self.run_id)

    def _watch(self, children: ChildProcesses, interrupts: Interrupts) -> bool:
        """Show units per status until the run is done; True when it was force-stopped."""
        started = time.monotonic()
        draining = False
        redis_lost = False
        last_line: str | None = None
        waiting_said: int | None = None
        done_at: float | None = None
        live = Live(console=console, auto_refresh=False) if console.is_terminal else None
        self._live = live
        if live is not None:
            live.start()
        try:
            while True:
                if interrupts.terminated:
                    self._say(f"terminated: services stopped; the run stays open "
                              f"(mephisto-dist resume {self.run_id})")
                    raise typer.Exit(EXIT_TERMINATED)
                if interrupts.count >= 2:
                    self._force()
                    return True
                if interrupts.count == 1 and not draining:
                    self._drain(lifecycle.REASON_CTRL_C)
                    draining = True
                for sentence in children.supervise(time.monotonic()):
                    err_console.print(sentence, soft_wrap=True, highlight=False)
                redis_lost = self._say_redis(redis_lost)
                now_at = watching.progress(self.runtime.sessions, self.run_id)
                counts, reason, closed = now_at.counts, now_at.stop_reason, now_at.closed
                stopped_elsewhere = now_at.stopping and not draining
                if stopped_elsewhere:  # by `mephisto-dist shutdown` or a beat sweep
                    draining = True
                    self._say(f"the run is stopping: {reason}")
                    self._drain(None)
                    continue
                if live is not None:
                    live.update(_table(self.run_id, counts, time.monotonic() - started), refresh=True)
                else:
                    line = " ".join(f"{s.value}={counts.get(s, 0)}" for s in SHOWN_STATUSES)
                    if line != last_line:
                        console.print(line, soft_wrap=True)
                    last_line = line
                if run_is_done(counts):
                    # A task's on_unit_submitted hook runs on Celery and closes the run after the last
                    # unit; beat may close it first. Stopping the workers while such events wait in the
                    # queue would lose them (the ones being run are finished by the warm shutdown).
                    done_at = done_at if done_at is not None else time.monotonic()
                    if (closed and self.runtime.queue.waiting() == 0) or time.monotonic() - done_at > HOOK_GRACE_S:
                        # Beat would close it, but it stops with this command: closed here, the
                        # run never stays "stopping" after a drain.
                        watching.close_if_done(self.runtime.sessions, self.run_id, now=_now())
                        return False
                in_flight = counts.get(UnitStatus.ASSIGNED, 0)
                if draining and in_flight != waiting_said:
                    self._say(f"waiting on {in_flight} units in flight; Ctrl-C again to force quit")
                    waiting_said = in_flight
                time.sleep(POLL_S)
        finally:
            if live is not None:
                live.stop()
            self._live = None

    def _say(self, text: str) -> None:
        """A stop message: above the live table on a terminal (written beside it, the table's next
        refresh would draw over it), on stderr otherwise."""
        if self._live is not None:
            self._live.console.print(text, soft_wrap=True, highlight=False)
        else:
            err_console.print(text, soft_wrap=True, highlight=False)

    def _say_redis(self, was_lost: bool) -> bool:
        """Say so when Redis stops answering (nothing launches, no limit can be decided) and when it
        answers again; returns whether it is lost now."""
        try:
            self.runtime.redis.ping()
            lost = False
        except redis.RedisError as error:
            lost = True
            if not was_lost:
                err_console.print(f"[red]Redis is not answering[/] ({error}): no unit launches and no worker "
                                  "gets one until it is back", soft_wrap=True, highlight=False)
        if was_lost and not lost:
            err_console.print("Redis answers again", soft_wrap=True)
        return lost

    def _drain(self, reason: str | None) -> None:
        self._say("stopping: no more launches; taking available units off the provider "
                  "(this step finishes even if you press Ctrl-C)")
        count = drain(self.runtime, self.run_id, reason, now=_now())
        self._say(f"{count} available unit(s) expired")

    def _force(self) -> None:
        self._say("force quit: disconnecting active workers and expiring every unit not submitted")
        # Before the stop disconnects the agents, so their runners see a shutdown, not a disconnect.
        shut_down_runners(self.runtime.sessions, self.runtime.redis, self.run_id)
        force_stop(self.runtime, self.run_id, now=_now())

    def _summary(self) -> None:
        done = watching.summary(self.runtime.sessions, self.run_id)
        console.print(f"task run {self.run_id} finished: {done.completed} completed, "
                      f"{done.expired} expired, {done.returned} returned or timed out", soft_wrap=True)


def _wait_for_server(port: int, children: ChildProcesses, interrupts: Interrupts) -> None:
    import urllib.request  # here: the CLI's other commands never need it

    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    url = f"http://127.0.0.1:{port}/task_config.json"
    while time.monotonic() < deadline and interrupts.count == 0:
        _check_children(children)
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if answer.status == 200:
                    return
        except OSError:  # refused, not listening yet, or an HTTP error status
            pass
        time.sleep(0.05)
    if interrupts.count == 0:
        raise ServiceError(f"the web server did not answer on port {port}; see {children.log_dir / 'web.log'}")


def _check_children(children: ChildProcesses) -> None:
    for child in children.dead():
        raise ServiceError(f"the {child.name} process exited (code {child.process.returncode}); "
                           f"see {child.log_path}")


def _print_worker_urls(provider: CrowdProvider, server_url: str) -> None:
    url = provider.worker_url(server_url, "worker1", "1")
    if url is None:
        console.print(f"workers find the task on {provider.provider_type}; each opens {server_url}", soft_wrap=True)
        return
    console.print("Open the task as a worker (any worker_id / assignment_id you like):")
    console.print(f"  {url}", soft_wrap=True)
    console.print(f"  {provider.worker_url(server_url, 'worker2', '2')}", soft_wrap=True)


def _table(run_id: int, counts: dict[UnitStatus, int], elapsed_s: float) -> Table:
    table = Table(title=f"task run {run_id}: {unit_progress(counts)} ({elapsed_s:.0f}s)", expand=False)
    for status in SHOWN_STATUSES:
        table.add_column(status.value, justify="right")
    table.add_row(*(str(counts.get(s, 0)) for s in SHOWN_STATUSES))
    return table
