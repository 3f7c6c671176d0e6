"""Console output shared by the commands, and the command boundary: errors become an ``error:`` line
and an exit code here, and nowhere else."""

from __future__ import annotations

import re
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

# Typer (0.29) carries its own copy of Click and exports only BadParameter of its usage errors.
from typer._click.exceptions import NoArgsIsHelpError, UsageError

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


def report_usage(error: typer.TyperException) -> int:
    """Say a usage error the command line parser found (an unknown option or command, a missing argument,
    a value of the wrong type) in one ``error:`` line naming the command and its help; its exit code.
    A group called without a command (``mephisto-dist hits``) shows its help instead."""
    context = error.ctx if isinstance(error, UsageError) else None
    if isinstance(error, NoArgsIsHelpError):
        console.print(error.format_message(), markup=False, highlight=False)
        return EXIT_USAGE
    message = usage_message(error.format_message())
    where = f" (see {context.command_path} --help)" if context is not None else ""
    err_console.print(f"[bold red]error:[/] {escape(message)}{escape(where)}", highlight=False)
    return EXIT_USAGE


def usage_message(text: str) -> str:
    """The parser's message as one clause of ours: "Missing argument 'RUN_ID'." is "missing argument
    'RUN_ID'"; its later sentences and suggestions ("Did you mean 'run'?") follow after a semicolon."""
    text = re.sub(r"\s*\(Possible options: (.*)\)$", r". Did you mean \1?", text.strip())
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", text) if s]
    clauses = [_lower_first(s.rstrip(".")) for s in sentences]
    # "Invalid value for 'RUN_ID': Input should be ..." : the explanation after the colon is a clause too.
    return re.sub(r": ([A-Z][a-z])", lambda m: ": " + m.group(1).lower(), "; ".join(clauses))


def _lower_first(sentence: str) -> str:
    return sentence[:1].lower() + sentence[1:] if sentence[1:2].islower() else sentence
