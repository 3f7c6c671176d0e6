"""Entry point and the small commands. ``run`` lives in ``cli.run``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from mephisto_dist.cli.console import EXIT_CODES_HELP, EXIT_INTERRUPTED, err_console, fail, report
from mephisto_dist.errors import IllegalTransition, MephistoDistError

app = typer.Typer(
    name="mephisto-dist",
    help="Run Mephisto crowdsourcing tasks on a distributed runtime (Celery workers, Redis limits, SQL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog=EXIT_CODES_HELP,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from mephisto_dist import __version__

        print(f"mephisto-dist {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Run Mephisto crowdsourcing tasks on a distributed runtime (Celery workers, Redis limits, SQL)."""


@app.command()
def export(
    task_name: Annotated[str | None, typer.Option("--task-name", help="Every run of this task_name.")] = None,
    run: Annotated[int | None, typer.Option("--run", help="One task run, by id.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl, json or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")] = None,
    include_unsubmitted: Annotated[bool, typer.Option(
        "--all", help="Also units still open (created, launched, assigned).")] = False,
    include_expired: Annotated[bool, typer.Option(
        "--expired/--no-expired", help="Include units that expired unsubmitted (the default).")] = True,
    download: Annotated[Path | None, typer.Option(
        "--download", help="Also fetch every uploaded file from storage into this folder.")] = None,
) -> None:
    """Export results: one record per submitted or expired unit, with its status, inputs, outputs and
    metadata (tips, feedback)."""
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
        err_console.print(f"exported {exported.count} unit(s) from {exported.run_count} run(s)"
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


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (the Procfile's release step)."""
    from mephisto_dist.cli.runtime import opened_runtime

    with opened_runtime(migrate=True):
        err_console.print("database schema is up to date")


@app.command()
def web(
    run: Annotated[int | None, typer.Option("--run", help="Serve this run (default: the newest open run on --port).")] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
    public_port: Annotated[int | None, typer.Option(
        "--public-port", help="The run's port when a balancer listens on it and this process behind it "
        "(default: --port).")] = None,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", help="Serve Prometheus metrics on this port too (default: "
        "MEPHISTO_DIST_METRICS_PORT; never the worker-facing port).")] = None,
    metrics_host: Annotated[str | None, typer.Option(
        "--metrics-host", help="Address for the metrics listener (default: --host).")] = None,
    server_id: Annotated[int | None, typer.Option("--server-id", help="The record an architect made for this "
                                                  "server (default: record a new one).")] = None,
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
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: MEPHISTO_DIST_METRICS_PORT, else 9100).")] = None,
) -> None:
    """Serve this machine's Prometheus metrics (every process's, summed) and the deployment's figures."""
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


def _register_commands() -> None:
    from mephisto_dist.cli.limits import limits
    from mephisto_dist.cli.mturk_local import mturk_local
    from mephisto_dist.cli.prolific_local import prolific_local
    from mephisto_dist.cli.requesters import register, requesters_app
    from mephisto_dist.cli.run import resume
    from mephisto_dist.cli.run import run as run_command
    from mephisto_dist.cli.runs import reconciled, runs, shutdown, status

    app.command(name="run")(run_command)
    app.command(name="metrics")(metrics)
    app.command(name="resume")(resume)
    app.command(name="shutdown")(shutdown)
    app.command(name="runs")(runs)
    app.command(name="status")(status)
    app.command(name="reconciled")(reconciled)

    from mephisto_dist.cli.hits import cleanup, hits_app

    app.add_typer(hits_app, name="hits")
    app.command(name="cleanup")(cleanup)
    app.command(name="limits")(limits)
    app.command(name="mturk-local")(mturk_local)
    app.command(name="prolific-local")(prolific_local)
    app.command(name="register")(register)
    app.add_typer(requesters_app, name="requesters")

    from mephisto_dist.cli.costs import costs
    from mephisto_dist.cli.flower import flower
    from mephisto_dist.cli.review import review_app
    from mephisto_dist.cli.workers import qualifications_app, workers_app
    from mephisto_dist.cli.wut import wut

    app.command(name="flower", context_settings={"allow_extra_args": True})(flower)

    app.command(name="wut")(wut)
    app.command(name="costs")(costs)
    app.add_typer(review_app, name="review")
    app.add_typer(workers_app, name="workers")
    app.add_typer(qualifications_app, name="qualifications")


_register_commands()


def main() -> None:
    """The command boundary: an error of ours (or a driver's, translated) is one ``error:`` line and
    the exit code the error tree gives it (``cli.console.exit_code_for``); anything else is a bug and
    keeps its traceback (exit 1)."""
    try:
        app()
    except IllegalTransition:
        raise  # a bug, not the user's doing: the traceback says where
    except MephistoDistError as error:
        raise SystemExit(report(error)) from None
    except SystemExit as stopped:
        # Click turns Ctrl-C into "Aborted!" and exit 1, the code of a bug; an interrupt is 130.
        aborted = stopped.__context__
        if stopped.code == 1 and isinstance(aborted, click.exceptions.Abort) and isinstance(
                aborted.__cause__, KeyboardInterrupt):
            raise SystemExit(EXIT_INTERRUPTED) from None
        raise
    except Exception as error:
        from mephisto_dist.errors.drivers import translate

        translated = translate(error)
        if translated is None:
            raise
        raise SystemExit(report(translated)) from None


if __name__ == "__main__":
    main()
