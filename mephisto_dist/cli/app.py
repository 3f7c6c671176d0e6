"""Entry point and the small commands. ``run`` lives in ``cli.run``."""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click import Context
from typer._click.formatting import HelpFormatter
from typer.core import TyperGroup

from mephisto_dist.cli.console import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    console,
    err_console,
    fail,
    report,
    report_usage,
)
from mephisto_dist.errors import IllegalTransition, MephistoDistError

PROG_NAME = "mephisto-dist"
RUN_A_TASK = "Run a task"
RESULTS = "Results and payment"
WORKERS = "Workers"
PROVIDERS = "Requesters, HITs and studies"
DEPLOYMENT = "Deployment processes"


class SectionedGroup(TyperGroup):
    """The command list in sections (each command's ``rich_help_panel``), in :data:`COMMANDS` order, the
    names in one column across the sections."""

    def list_commands(self, ctx: Context) -> list[str]:
        order = {name: index for index, (_, name, _) in enumerate(COMMANDS)}
        return sorted(super().list_commands(ctx), key=lambda name: order.get(name, len(order)))

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                section = getattr(command, "rich_help_panel", None) or "Commands"
                sections.setdefault(section, []).append((name, command.get_short_help_str(limit=200)))
        width = max((len(name) for rows in sections.values() for name, _ in rows), default=0)
        for section, rows in sections.items():
            with formatter.section(section):
                formatter.write_dl([(name.ljust(width), text) for name, text in rows])


def _new_app() -> typer.Typer:
    app = typer.Typer(
        name=PROG_NAME,
        cls=SectionedGroup,
        help="Run Mephisto crowdsourcing tasks on a distributed runtime (Celery workers, Redis limits, SQL).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Click's plain help, not Typer's boxes: those give every flag a "<bool>" type and keep the
        # docstrings' line breaks, unreadable at 80 columns.
        rich_markup_mode=None,
        epilog=EXIT_CODES_HELP,
    )
    app.callback()(_options)
    return app


def _print_version(wanted: bool) -> None:
    if wanted:
        from mephisto_dist import __version__

        print(f"mephisto-dist {__version__}")
        raise typer.Exit()


def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Run Mephisto crowdsourcing tasks on a distributed runtime (Celery workers, Redis limits, SQL)."""


def export(
    task_name: Annotated[str | None, typer.Option("--task-name", metavar="TASK_NAME",
                                                  help="Every run of this task_name.")] = None,
    run: Annotated[int | None, typer.Option("--run", metavar="RUN_ID", help="One task run.")] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="jsonl, json or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE",
                                                help="File to write (default: stdout).")] = None,
    include_unsubmitted: Annotated[bool, typer.Option(
        "--all", help="Also units still open (created, launched, assigned).")] = False,
    include_expired: Annotated[bool, typer.Option(
        "--expired/--no-expired", help="Include units that expired unsubmitted and ended attempts' partial work "
                                       "(the default).")] = True,
    download: Annotated[Path | None, typer.Option(
        "--download", metavar="DIR", help="Also fetch every uploaded file from storage into DIR.")] = None,
) -> None:
    """Export results: one record per submitted or expired unit, with its status, inputs, outputs and
    metadata (tips, feedback); with expired work, also each ended attempt a worker left unsubmitted (its
    transcript and calls, ``partial``: true, ``agent_status`` saying why it ended)."""
    from mephisto_dist.cli.runtime import opened_runtime
    from mephisto_dist.review.export import FORMATS, download_files, export_results, write_records

    if (task_name is None) == (run is None):
        fail("give exactly one of --task-name NAME or --run RUN_ID")
    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")

    def write(records: Iterator[dict[str, Any]]) -> int:
        if output is None:
            return write_records(records, sys.stdout, fmt)
        tmp = output.with_name(output.name + ".partial")
        with tmp.open("w", encoding="utf-8", newline="") as out:
            count = write_records(records, out, fmt)
        tmp.replace(output)
        return count

    with opened_runtime() as runtime:
        exported = export_results(runtime.sessions, write, task_name=task_name, run_id=run,
                                  include_unsubmitted=include_unsubmitted, include_expired=include_expired)
        ended = f", {exported.ended_count} ended attempt(s) (partial work)" if exported.ended_count else ""
        ended += f", {exported.onboarding_count} onboarding attempt(s)" if exported.onboarding_count else ""
        err_console.print(f"exported {exported.count} unit(s){ended} from {exported.run_count} run(s)"
                          + (f" to {output}" if output else ""))
        if download is not None:
            keys = exported.file_keys
            total = len(keys)

            def progress(done: int) -> None:
                if done % 100 == 0 and done < total:
                    err_console.print(f"downloading uploaded files: {done} of {total}")

            fetched = download_files(runtime.storage, keys, download, progress)
            err_console.print(f"downloaded {fetched.written} of {total} uploaded file(s) to {download}")
            if fetched.missing:
                shown = ", ".join(fetched.missing[:3]) + (", ..." if len(fetched.missing) > 3 else "")
                fail(f"{len(fetched.missing)} uploaded file(s) are missing from storage "
                     f"({runtime.settings.effective_storage_url}): {shown}")


def migrate() -> None:
    """Create or upgrade the database schema (the Procfile's release step), and say which it did."""
    from mephisto_dist.db.migrate import upgrade
    from mephisto_dist.runtime import Runtime
    from mephisto_dist.settings import load_settings

    runtime = Runtime(load_settings())
    try:
        done = upgrade(runtime.engine)
        where = runtime.engine.url.render_as_string(hide_password=True)
    finally:
        runtime.close()
    if done.before is None:
        said = f"created the database schema (revision {done.after})"
    elif done.before != done.after:
        said = f"upgraded the database schema from revision {done.before} to {done.after}"
    else:
        said = f"the database schema is up to date (revision {done.after})"
    console.print(f"{said} in {where}", soft_wrap=True, highlight=False)


def web(
    run: Annotated[int | None, typer.Option("--run", metavar="RUN_ID",
                                            help="Serve this run (default: the newest open run on --port).")] = None,
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")] = 3000,
    public_port: Annotated[int | None, typer.Option(
        "--public-port", metavar="PORT", help="The run's port when a balancer listens on it and this process "
        "behind it (default: --port).")] = None,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", metavar="PORT", help="Serve Prometheus metrics on this port too (default: "
        "MEPHISTO_DIST_METRICS_PORT; never the worker-facing port).")] = None,
    metrics_host: Annotated[str | None, typer.Option(
        "--metrics-host", metavar="HOST", help="Address for the metrics listener (default: --host).")] = None,
    server_id: Annotated[int | None, typer.Option(
        "--server-id", metavar="SERVER_ID", help="The record an architect made for this server (default: "
        "record a new one).")] = None,
) -> None:
    """Serve the worker-facing pages and router protocol (the Procfile's web process). The server is
    recorded before it listens, leaves heartbeats, and stops itself when its run has ended or its
    record is marked stopped."""
    from mephisto_dist.runtime import Runtime
    from mephisto_dist.settings import load_settings
    from mephisto_dist.web.server import serve

    serve(Runtime(load_settings()), run_id=run, host=host, port=port, public_port=public_port,
          metrics_port=metrics_port, metrics_host=metrics_host, server_id=server_id)


def metrics(
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(
        "--port", metavar="PORT", help="Port (default: MEPHISTO_DIST_METRICS_PORT, else 9100).")] = None,
) -> None:
    """Serve this machine's Prometheus metrics at http://HOST:PORT/metrics: every process's (web, Celery
    workers, beat) summed from the machine's metrics folder, and the deployment's figures (units per
    status, runs, tokens held) read from the database and Redis. For Prometheus to scrape, one per
    machine; the web processes can serve the same on --metrics-port instead."""
    import signal

    from mephisto_dist import metrics as recorded
    from mephisto_dist.runtime import Runtime
    from mephisto_dist.settings import load_settings
    from mephisto_dist.web.metrics_listener import serve as serve_metrics

    settings = load_settings()
    recorded.enable(settings)
    chosen = port or settings.metrics_port or 9100
    if not serve_metrics(Runtime(settings), host, chosen, standby_every_s=None):
        fail(f"{host}:{chosen} is already in use")
    err_console.print(f"serving metrics on http://{host}:{chosen}/metrics")
    while True:
        signal.pause()


COMMANDS = (
    (RUN_A_TASK, "run", "Launch a task run from a Mephisto task folder."),
    (RUN_A_TASK, "resume", "Relaunch what is not done of a run whose processes died."),
    (RUN_A_TASK, "status", "A run's units per status, and why it is not progressing."),
    (RUN_A_TASK, "runs", "Every run, grouped by task_name, with its units per status."),
    (RUN_A_TASK, "shutdown", "Stop a run from any machine, as Ctrl-C does."),
    (RUN_A_TASK, "limits", "A run's concurrency pool; change its cap while it runs."),
    (RUN_A_TASK, "wut", "What a task config may set: kinds, names, arguments."),
    (RESULTS, "export", "Results: one record per submitted or expired unit."),
    (RESULTS, "review", "Approve, reject or soft-reject completed units; bonuses."),
    (RESULTS, "costs", "What runs paid and still owe, with the provider's fees."),
    (RESULTS, "review-app", "Watch runs, review and pay in a browser (with a login)."),
    (RESULTS, "import-mephisto", "Import a Mephisto data directory (its runs, workers, ...)."),
    (WORKERS, "workers", "List, block, unblock, notify workers; reset onboarding."),
    (WORKERS, "qualifications", "List, create, grant and revoke qualifications."),
    (PROVIDERS, "register", "Register a requester (name=NAME and its keys)."),
    (PROVIDERS, "requesters", "Registered requesters and their API; remove one."),
    (PROVIDERS, "hits", "HITs and studies; submissions that never arrived."),
    (PROVIDERS, "cleanup", "Expire HITs and stop studies no open unit needs."),
    (PROVIDERS, "mturk-local", "A local Mechanical Turk for tests and rehearsals."),
    (PROVIDERS, "prolific-local", "A local Prolific API for tests and rehearsals."),
    (DEPLOYMENT, "migrate", "Create or upgrade the database schema (release step)."),
    (DEPLOYMENT, "web", "Serve the worker-facing pages (the Procfile's web process)."),
    (DEPLOYMENT, "metrics", "Serve this machine's Prometheus metrics."),
    (DEPLOYMENT, "reconciled", "What beat's reconcilers found and what they did."),
    (DEPLOYMENT, "flower", "Watch Celery workers and tasks in Flower (login)."),
)
"""Every command's section, name and line in ``mephisto-dist --help``, in the order listed: a run's
life first. The full help is the command's docstring."""


_MODULES = {
    "run": "mephisto_dist.cli.run:run", "resume": "mephisto_dist.cli.run:resume",
    "status": "mephisto_dist.cli.runs:status", "runs": "mephisto_dist.cli.runs:runs",
    "shutdown": "mephisto_dist.cli.runs:shutdown", "reconciled": "mephisto_dist.cli.runs:reconciled",
    "limits": "mephisto_dist.cli.limits:limits", "wut": "mephisto_dist.cli.wut:wut",
    "costs": "mephisto_dist.cli.costs:costs", "review-app": "mephisto_dist.cli.review_web:review_web",
    "register": "mephisto_dist.cli.requesters:register", "cleanup": "mephisto_dist.cli.hits:cleanup",
    "mturk-local": "mephisto_dist.cli.mturk_local:mturk_local",
    "prolific-local": "mephisto_dist.cli.prolific_local:prolific_local",
    "flower": "mephisto_dist.cli.flower:flower", "import-mephisto": "mephisto_dist.cli.import_mephisto:import_mephisto",
    "review": "mephisto_dist.cli.review:review_app", "workers": "mephisto_dist.cli.workers:workers_app",
    "qualifications": "mephisto_dist.cli.workers:qualifications_app", "hits": "mephisto_dist.cli.hits:hits_app",
    "requesters": "mephisto_dist.cli.requesters:requesters_app",
}
"""Where each command not defined here lives: imported only when that command runs (or for the full
command list), so a command pays for its own imports alone (``run`` starts about half a second sooner)."""
_HERE: dict[str, Callable[..., None]] = {"export": export, "migrate": migrate, "web": web, "metrics": metrics}


def _command(name: str) -> Any:
    if name in _HERE:
        return _HERE[name]
    module, attribute = _MODULES[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def build_app(only: str | None = None) -> typer.Typer:
    """The CLI with every command, or with only the command ``only`` (the one being run)."""
    app = _new_app()
    for section, name, line in COMMANDS:
        if only is not None and name != only:
            continue
        command = _command(name)
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=name, rich_help_panel=section, short_help=line)
            continue
        # flower passes what follows "--" to Flower itself
        settings = {"allow_extra_args": True} if name == "flower" else None
        app.command(name=name, rich_help_panel=section, short_help=line, context_settings=settings)(command)
    return app


def _invoked(argv: list[str]) -> str | None:
    """The command the arguments name, when they name one and not only the top-level options."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    known = {name for _, name, _ in COMMANDS}
    return first if first in known and argv and argv[0] == first else None


def main() -> None:
    """The command boundary: a usage error (an unknown option or command, a missing argument, a value of
    the wrong type) or an error of ours (or a driver's, translated) is one ``error:`` line and the exit
    code the error tree gives it (``cli.console.exit_code_for``); anything else is a bug and keeps its
    traceback (exit 1)."""
    try:
        # Not standalone: Typer would draw its own boxed error and exit before we could say it our way.
        # Loading a command's modules makes little garbage, but allocates enough to set off full
        # collections, each walking every object loaded so far (tens of milliseconds apiece here). What
        # the imports made lives as long as the process anyway: kept out of later collections too.
        gc.disable()
        try:
            app = build_app(only=_invoked(sys.argv[1:]))
        finally:
            gc.freeze()
            gc.enable()
        code = app(prog_name=PROG_NAME, standalone_mode=False)
    except IllegalTransition:
        raise  # a bug, not the user's doing: the traceback says where
    except MephistoDistError as error:
        raise SystemExit(report(error)) from None
    except typer.Abort as aborted:
        # A confirmation prompt met Ctrl-C (an interrupt: 130) or the end of its input.
        if isinstance(aborted.__context__, KeyboardInterrupt):
            raise SystemExit(EXIT_INTERRUPTED) from None
        raise SystemExit(report(MephistoDistError("no answer: standard input ended"))) from None
    except typer.TyperException as error:
        raise SystemExit(report_usage(error)) from None
    except Exception as error:
        from mephisto_dist.errors.drivers import translate

        translated = translate(error)
        if translated is None:
            raise
        raise SystemExit(report(translated)) from None
    # Typer gives back a command's exit code (typer.Exit, Ctrl-C's 130), or the command's None.
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
