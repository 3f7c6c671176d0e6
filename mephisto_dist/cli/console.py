"""Console output shared by the commands."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console


def _console(*, stderr: bool) -> Console:
    made = Console(stderr=stderr)
    # Wrapping at a guessed width helps nobody reading a log or a pipe: a path's tail on its own line.
    made.soft_wrap = not made.is_terminal
    return made


console = _console(stderr=False)
err_console = _console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
