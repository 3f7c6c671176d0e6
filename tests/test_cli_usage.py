"""The command line as a user types it, through ``main()``: a usage error (an unknown option or command, a
missing argument, a value of the wrong type) is one ``error:`` line naming the command's help, exit 2;
``--help`` is plain text that fits 80 columns, every flag without a type, every value named the same way
wherever it appears, the commands in sections in the order a run is lived."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mephisto_dist.cli.app import COMMANDS, PROG_NAME, main

USAGE = 2


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "argv", [PROG_NAME, *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    code = exited.value.code
    return code if isinstance(code, int) else 0, out, err


@pytest.mark.parametrize(("args", "line"), [
    (["run", "--foo", "x"], "error: no such option: --foo (see mephisto-dist run --help)"),
    (["run", "--detch", "x"], "error: no such option: --detch; did you mean --detach? (see mephisto-dist run --help)"),
    (["runs", "extra"], "error: got unexpected extra argument(s) (extra) (see mephisto-dist runs --help)"),
    (["shutdown"], "error: missing argument 'RUN_ID' (see mephisto-dist shutdown --help)"),
    (["limits", "abc"], ("error: invalid value for 'RUN_ID': input should be a valid integer, unable to parse "
                        "string as an integer (see mephisto-dist limits --help)")),
    (["nosuch"], "error: no such command 'nosuch' (see mephisto-dist --help)"),
    (["rn"], "error: no such command 'rn'; did you mean 'run', 'runs'? (see mephisto-dist --help)"),
    (["workers", "notify", "w1"], "error: missing option '--subject' (see mephisto-dist workers notify --help)"),
    (["export", "--run"], "error: option '--run' requires an argument"),
])
def test_a_usage_error_is_one_error_line_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], args: list[str],
                                                    line: str) -> None:
    code, out, err = cli(monkeypatch, capsys, *args)
    assert (code, out, err) == (USAGE, "", line + "\n")


def test_a_group_without_a_command_shows_its_help(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([], ["hits"], ["workers"]):
        code, out, err = cli(monkeypatch, capsys, *args)
        assert code == USAGE and err == "" and out.startswith(f"Usage: {' '.join([PROG_NAME, *args])} "), out


def test_the_command_list_in_sections_in_a_run_s_order(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(monkeypatch, capsys, "--help")
    assert code == 0
    listed = re.findall(r"^  ([a-z][a-z-]*) +[A-Z]", out, re.MULTILINE)
    assert listed == [name for _, name, _ in COMMANDS]
    headings = [line[:-1] for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == ["Options", *dict.fromkeys(section for section, _, _ in COMMANDS)]
    assert out.index("  run ") < out.index("  status ") < out.index("  export ") < out.index("  migrate ")


def _every_command() -> list[list[str]]:
    import typer

    from mephisto_dist.cli.app import build_app

    root = typer.main.get_command(build_app())
    found: list[list[str]] = [[]]
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found.append([name])
        found += [[name, sub] for sub in getattr(command, "commands", {})]
    return found


@pytest.mark.parametrize("command", _every_command(), ids=lambda c: " ".join(c) or "mephisto-dist")
def test_help_fits_80_columns_without_a_type_on_flags(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, err = cli(monkeypatch, capsys, *command, "--help")
    assert code == 0 and err == "", err
    assert "<bool>" not in out and "╭" not in out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    # An option's value is named in capitals (RUN_ID, TASK_NAME, FILE), never by its Python type.
    assert not re.search(r"--[a-z-]+ <", out), out
    assert "--run " not in out or "--run RUN_ID" in out
    assert "--task-name " not in out or "--task-name TASK_NAME" in out


def test_a_run_is_named_run_id_everywhere(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["status"], ["shutdown"], ["limits"], ["resume"]):
        _, out, _ = cli(monkeypatch, capsys, *command, "--help")
        assert "RUN_ID <int>" in out, out
    for command in (["export"], ["costs"], ["reconciled"], ["web"], ["review", "approve"], ["hits", "unreceived"]):
        _, out, _ = cli(monkeypatch, capsys, *command, "--help")
        assert "--run RUN_ID" in out, out


def test_register_s_help_names_its_keys_and_mturk_local_its_balance(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = cli(monkeypatch, capsys, "register", "--help")
    for key in ("name=NAME", "access_key_id=", "secret_access_key=", "endpoint_url=URL"):
        assert key in out
    _, out, _ = cli(monkeypatch, capsys, "mturk-local", "--help")
    assert "--balance DOLLARS" in out


@pytest.mark.system
def test_run_detach_says_the_run_its_worker_url_and_what_follows(tmp_path: Path, redis_url: str) -> None:
    """``run --detach`` prints the run id, where workers open it and the commands that follow; ``--quiet``
    prints the id alone (for scripts); ``resume --detach`` says the same of the relaunch."""
    from tests.taskdirs import write_task_dir

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_") and k != "COLUMNS"}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"), "MEPHISTO_DIST_REDIS_URL": redis_url})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], env=env, check=False,
                              capture_output=True, text=True, timeout=120)

    task_dir = write_task_dir(tmp_path / "a", port=3456, task_name="detached-task")
    assert cli("migrate").returncode == 0
    shown = cli("run", str(task_dir), "--detach")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "task run 1 of detached-task: enqueued for the deployment's Celery workers to launch",
        "workers open: http://localhost:3456/?worker_id=worker1&assignment_id=1 (any worker_id / assignment_id)",
        "next:",
        "  mephisto-dist status 1        its progress, and why it is not progressing",
        "  mephisto-dist shutdown 1      stop it (--force: now)",
        "  mephisto-dist export --run 1  its results",
    ]
    quiet = cli("run", str(write_task_dir(tmp_path / "b", port=3457)), "--detach", "-q")
    assert (quiet.returncode, quiet.stdout) == (0, "2\n"), quiet.stderr
    resumed = cli("resume", "1", "--detach")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == "task run 1 of detached-task: relaunch of what is not done enqueued"
    assert "  mephisto-dist shutdown 1      stop it (--force: now)" in resumed.stdout.splitlines()
