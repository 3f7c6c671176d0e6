"""Console output shared by the commands, and the command boundary: errors become an ``error:`` line
and an exit code here, and nowhere else."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from mephisto_dist.errors import IllegalTransition, MephistoDistError, NotFoundError, ServiceError

EXIT_OK = 0
EXIT_BUG = 1
"""An unexpected error: a bug. Python's traceback is printed (and so lands in the log)."""
EXIT_USAGE = 2
"""Bad input or usage: a task folder, an option, a value, a state that does not allow the command."""
EXIT_UNREACHABLE = 3
"""A service the command needs failed or cannot be reached: the database, Redis, storage, a provider's API."""
EXIT_NOT_FOUND = 4
"""Something named does not exist: a run, a unit, a worker, a qualification, a HIT."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (for an attached run: pressed twice, the run force-stopped)."""
EXIT_TERMINATED = 143
"""An attached run's command was sent SIGTERM: its services stopped, the run left to resume."""

EXIT_CODES_HELP = (
    f"Exit codes: {EXIT_OK} ok; {EXIT_BUG} an unexpected error (a bug: a traceback); {EXIT_USAGE} bad input or "
    f"usage; {EXIT_UNREACHABLE} a service the command needs (database, Redis, storage, a provider's API) is "
    f"unreachable or failed; {EXIT_NOT_FOUND} not found (an unknown run, unit, worker, ...); "
    f"{EXIT_INTERRUPTED} interrupted (Ctrl-C); {EXIT_TERMINATED} terminated (SIGTERM) during an attached run."
)


def _console(*, stderr: bool) -> Console:
    made = Console(stderr=stderr)
    # Wrapping at a guessed width helps nobody reading a log or a pipe: a path's tail on its own line.
    made.soft_wrap = not made.is_terminal
    return made


console = _console(stderr=False)
err_console = _console(stderr=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Stop the command on bad input or usage (or ``code``), saying why in one ``error:`` line."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def exit_code_for(error: MephistoDistError) -> int:
    """The exit code of a command stopped by ``error``, from the error tree (``mephisto_dist.errors``)."""
    if isinstance(error, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, ServiceError):
        return EXIT_UNREACHABLE
    if isinstance(error, IllegalTransition):
        return EXIT_BUG
    return EXIT_USAGE


def report(error: MephistoDistError) -> int:
    """Say ``error`` in one line on stderr; its exit code."""
    err_console.print(f"[bold red]error:[/] {error}", highlight=False)
    return exit_code_for(error)
