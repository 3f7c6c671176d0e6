"""``mephisto-dist wut [KIND[=NAME] [ARG...]]``: what a task config may set, printed from the same
argument registry (``config.arguments``) that validates configs."""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.table import Table

from mephisto_dist.cli.console import console
from mephisto_dist.config.arguments import (
    BLUEPRINT,
    KINDS,
    TASK,
    Argument,
    Section,
    get_section,
    sections,
)
from mephisto_dist.errors import ConfigError

COLUMNS = ("dest", "type", "default", "help", "choices", "required", "implemented")
NOT_YET = "not yet"
TABLE_MIN_WIDTH = 140
"""Narrower than this, a section's arguments are listed one under another: the table's seven columns
would squeeze its help into a few letters a line."""
HELP_INDENT = 6


def argument_row(argument: Argument) -> tuple[str, str, str, str, str, str, str]:
    """One table row, in :data:`COLUMNS` order, the way Mephisto's ``wut`` prints it, plus whether
    mephisto-dist carries the argument out (``not yet``: accepted so Mephisto's configs load)."""
    choices = "" if argument.choices is None else ", ".join(str(c) for c in argument.choices)
    return (argument.dest, argument.type.__name__, argument.default_text, argument.help, choices,
            str(argument.required), "yes" if argument.implemented else NOT_YET)


def select_arguments(section: Section, names: Sequence[str]) -> tuple[Argument, ...]:
    """The section's arguments, or only the named ones (in the order named)."""
    if not names:
        return section.arguments
    chosen = []
    for name in names:
        argument = section.argument(name)
        if argument is None:
            label = "task" if section.kind == TASK else f"{section.kind} {section.name!r}"
            close = difflib.get_close_matches(name, section.dests, n=1)
            hint = f"; did you mean {close[0]!r}" if close else ""
            target = TASK if section.kind == TASK else f"{section.kind}={section.name}"
            raise ConfigError(f"{label} has no argument {name!r}{hint}; list them: mephisto-dist wut {target}")
        chosen.append(argument)
    return tuple(chosen)


def argument_table(title: str, arguments: Sequence[Argument]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in COLUMNS:
        table.add_column(column, no_wrap=column in ("dest", "type", "default", "implemented"), overflow="fold")
    for argument in arguments:
        table.add_row(*argument_row(argument))
    return table


def _shared_state_arguments(section: Section) -> tuple[Argument, ...]:
    # The registry declares no SharedTaskState arguments yet; a section that gains some shows them.
    return tuple(getattr(section, "shared_state_arguments", ()))


def _parse_target(target: str) -> tuple[str, str | None]:
    kind, _, name = target.partition("=")
    kind = kind.strip().removeprefix("mephisto.").removeprefix("mephisto/")
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    return kind, (name.strip() or None) if "=" in target else None


def wut(
    args: Annotated[list[str] | None, typer.Argument(
        metavar="KIND[=NAME] [ARG]",
        help="blueprint=static_task, architect=local, provider=mock, task; then argument names to show.")] = None,
) -> None:
    """Show what a task config may set: the kinds, their names, or one section's arguments."""
    args = list(args or [])
    if not args:
        _print_kinds()
        return
    kind, name = _parse_target(args[0])
    if name is None and kind != TASK:
        if len(args) > 1:
            raise ConfigError(f"name the {kind} first: wut {kind}=NAME {' '.join(args[1:])}")
        console.print(f"{kind}: {_names(kind)}", highlight=False)
        console.print(f"see one with: mephisto-dist wut {kind}={sections(kind)[0].name}", highlight=False)
        return
    section = get_section(kind, name or TASK)
    arguments = select_arguments(section, args[1:])
    _print_section(section, arguments, filtered=len(args) > 1)


def _print_kinds() -> None:
    for kind in KINDS:
        console.print(f"{kind}: {_names(kind)}", highlight=False)
    console.print("see one with: mephisto-dist wut blueprint=static_task (or architect=local, provider=mock, "
                  "task)", highlight=False)


def _names(kind: str) -> str:
    return ", ".join(s.name if s.implemented else f"{s.name} ({NOT_YET} implemented)" for s in sections(kind))


def _print_section(section: Section, arguments: Sequence[Argument], *, filtered: bool) -> None:
    # Wrapped at the terminal's width (or COLUMNS) even into a pipe: this is text to read, not a log line.
    console.print(section.description, highlight=False, soft_wrap=False)
    if not section.implemented:
        console.print(f"{section.kind} {section.name!r} is accepted in task configs but {NOT_YET} implemented: "
                      "a run with it is refused", highlight=False)
    title = "Task run arguments" if section.kind == TASK else f"{section.kind.capitalize()} arguments"
    if section.kind != TASK:
        title += f" ({section.name})"
    _print_arguments(title, arguments)
    if section.kind != BLUEPRINT or filtered:
        return
    shared = _shared_state_arguments(section)
    if shared:
        _print_arguments("Shared state arguments", shared)
    else:
        console.print(f"{section.name} has no shared-state arguments", highlight=False)


def _print_arguments(title: str, arguments: Sequence[Argument]) -> None:
    """Mephisto's table when the terminal is wide enough, else one argument under another."""
    if console.width >= TABLE_MIN_WIDTH:
        console.print(argument_table(title, arguments))
        return
    console.print(title, highlight=False)
    for argument in arguments:
        console.print(f"  {argument.dest}: {argument_facts(argument)}", highlight=False, markup=False)
        if argument.help:
            console.print(textwrap.fill(argument.help, width=console.width, initial_indent=HELP_INDENT * " ",
                                        subsequent_indent=HELP_INDENT * " "), highlight=False, markup=False)


def argument_facts(argument: Argument) -> str:
    """An argument's type, default, choices and whether it is carried out, in one line for the narrow list."""
    facts = [argument.type.__name__, "required" if argument.required else f"default {argument.default_text}"]
    if argument.choices is not None:
        facts.append("choices: " + ", ".join(str(c) for c in argument.choices))
    if not argument.implemented:
        facts.append(f"{NOT_YET} implemented")
    return ", ".join(facts)
