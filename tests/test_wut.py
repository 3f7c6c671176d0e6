"""``mephisto-dist wut``: the tables come from the argument registry that validates configs (every dest of
a section, exactly the named ones when filtered), and bad kinds or names get one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mephisto_dist.cli.wut import COLUMNS, NOT_YET, argument_facts, argument_row, select_arguments
from mephisto_dist.config.arguments import KINDS, TASK, Section, get_section, sections
from mephisto_dist.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
ALL_SECTIONS = [section for kind in KINDS for section in sections(kind)]


def wut(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "300"})
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "wut", *args], env=env, cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=60)


def table_rows(stdout: str) -> list[list[str]]:
    """The body rows of every rich table in the output, as cell texts (wrapped cells are not joined)."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            if cells[0]:
                rows.append(cells)
    return rows


def target(section: Section) -> str:
    return TASK if section.kind == TASK else f"{section.kind}={section.name}"


@pytest.mark.parametrize("section", ALL_SECTIONS, ids=target)
def test_a_row_per_argument_from_the_definitions(section: Section) -> None:
    rows = [argument_row(argument) for argument in select_arguments(section, [])]
    assert [row[0] for row in rows] == list(section.dests)
    for row, argument in zip(rows, section.arguments, strict=True):
        assert len(row) == len(COLUMNS)
        assert row[1] == argument.type.__name__ and row[3] == argument.help
        assert row[2] == ("???" if argument.required else repr(argument.default))
        assert row[5] == str(argument.required)


@pytest.mark.system
@pytest.mark.parametrize("section", ALL_SECTIONS, ids=target)
def test_wut_prints_every_dest_of_a_section(tmp_path: Path, section: Section) -> None:
    result = wut(tmp_path, target(section))
    assert result.returncode == 0, result.stderr
    # The description is wrapped at the terminal's width: compare the words.
    assert " ".join(section.description.split()) in " ".join(result.stdout.split())
    assert "dest" in result.stdout and "required" in result.stdout
    printed = table_rows(result.stdout)
    assert [row[0] for row in printed] == list(section.dests)
    for row, argument in zip(printed, section.arguments, strict=True):
        assert row[1:3] == [argument.type.__name__, argument.default_text]
    if section.kind == "blueprint":
        assert f"{section.name} has no shared-state arguments" in result.stdout


@pytest.mark.system
def test_extra_names_limit_the_rows(tmp_path: Path) -> None:
    result = wut(tmp_path, "blueprint=static_task", "task_source", "data_csv")
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert [row[0] for row in rows] == ["task_source", "data_csv"]
    assert rows[0][2] == "???" and rows[0][5] == "True"
    source = get_section("blueprint", "static_task").argument("data_csv")
    assert source is not None and source.help in result.stdout
    task = table_rows(wut(tmp_path, "task", "task_reward").stdout)
    assert [row[:3] for row in task] == [["task_reward", "float", "???"]]


@pytest.mark.system
def test_wut_alone_lists_every_kind_and_name(tmp_path: Path) -> None:
    result = wut(tmp_path)
    assert result.returncode == 0, result.stderr
    for kind in KINDS:
        names = ", ".join(section.name for section in sections(kind))
        assert f"{kind}: {names}" in result.stdout
    architects = wut(tmp_path, "architect")
    assert "architect: local, ec2, mock" in architects.stdout


@pytest.mark.parametrize(("args", "needles"), [
    (["blueprint=mock_blueprint"], ["unknown blueprint 'mock_blueprint'", "known: static_task"]),
    (["provider=upwork"], ["unknown provider 'upwork'", "mturk_sandbox"]),
    (["architekt=local"], ["unknown kind 'architekt'", "known: blueprint, architect, provider, task"]),
    (["blueprint=static_task", "data_cvs"], ["no argument 'data_cvs'", "did you mean 'data_csv'"]),
    (["task", "nope"], ["task has no argument 'nope'"]),
])
@pytest.mark.system
def test_unknown_kinds_and_names_are_one_line_errors(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    result = wut(tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert result.stdout == ""


def test_select_arguments_refuses_an_unknown_name() -> None:
    with pytest.raises(ConfigError, match="'port'"):
        select_arguments(get_section("provider", "mock"), ["port"])


@pytest.mark.system
def test_at_80_columns_the_arguments_are_listed_one_under_another(tmp_path: Path) -> None:
    """The seven-column table needs a wide terminal; at 80 columns each argument is a line of facts and
    its help below, nothing past column 80."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "80"})
    section = get_section("blueprint", "static_task")
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "wut", target(section)], env=env,
                            cwd=ROOT, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "┃" not in result.stdout
    for argument in section.arguments:
        assert f"  {argument.dest}: {argument_facts(argument)}" in lines
        assert " ".join(argument.help.split()) in " ".join(result.stdout.split())
    assert "  task_source: str, required" in lines
    # An argument accepted but not carried out says so on its line (the local architect's server_type).
    local = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "wut", "architect=local"], env=env,
                           cwd=ROOT, check=False, capture_output=True, text=True, timeout=60)
    assert local.returncode == 0, local.stderr
    assert any(line.startswith("  server_type: ") and line.endswith(f", {NOT_YET} implemented")
               for line in local.stdout.splitlines()), local.stdout
