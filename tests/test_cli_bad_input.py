"""Bad input to ``mephisto-dist run``: a one-line error naming the problem, exit code 2, and no TaskRun
left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env["MEPHISTO_DIST_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], env=env, check=False,
                          capture_output=True, text=True, timeout=60)


def task_runs(data_dir: Path) -> int:
    db = data_dir / "mephisto-dist.db"
    if not db.exists():
        return 0
    engine = create_engine(f"sqlite:///{db}")
    try:
        if "task_run" not in inspect(engine).get_table_names():
            return 0
        with engine.connect() as connection:
            return int(connection.execute(text("select count(*) from task_run")).scalar_one())
    finally:
        engine.dispose()


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_missing_task_folder(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "data", "run", str(tmp_path / "nope"))
    assert_refused(result, "task folder not found", "nope")


def test_missing_conf(tmp_path: Path, free_port: int) -> None:
    task_dir = write_task_dir(tmp_path, port=free_port)
    result = run_cli(tmp_path / "data", "run", str(task_dir), "conf=pilot")
    assert_refused(result, "config 'pilot' not found", "example")


def test_missing_task_source(tmp_path: Path, free_port: int) -> None:
    task_dir = write_task_dir(tmp_path, port=free_port)
    (task_dir / "server_files" / "task.html").unlink()
    result = run_cli(tmp_path / "data", "run", str(task_dir))
    assert_refused(result, "task.html")
    assert task_runs(tmp_path / "data") == 0


def test_missing_data_file(tmp_path: Path, free_port: int) -> None:
    task_dir = write_task_dir(tmp_path, port=free_port)
    (task_dir / "data.csv").unlink()
    assert_refused(run_cli(tmp_path / "data", "run", str(task_dir)), "data_csv not found", "data.csv")


def test_ragged_csv(tmp_path: Path, free_port: int) -> None:
    task_dir = write_task_dir(tmp_path, port=free_port, csv_text="a,b\n1,2\n3,4,5\n")
    assert_refused(run_cli(tmp_path / "data", "run", str(task_dir)), "data.csv line 3")
    assert task_runs(tmp_path / "data") == 0


def test_csv_without_rows(tmp_path: Path, free_port: int) -> None:
    task_dir = write_task_dir(tmp_path, port=free_port, csv_text="")
    assert_refused(run_cli(tmp_path / "data", "run", str(task_dir)), "data.csv")


def test_unknown_override_key_suggests_the_closest(tmp_path: Path, free_port: int) -> None:
    task_dir = write_task_dir(tmp_path, port=free_port)
    result = run_cli(tmp_path / "data", "run", str(task_dir), "mephisto.task.max_num_concurent_units=5")
    assert_refused(result, "unknown key", "did you mean 'mephisto.task.max_num_concurrent_units'")


@pytest.mark.parametrize(("override", "needle"), [
    ("mephisto/blueprint=mock_blueprint", "unknown blueprint 'mock_blueprint'"),
    ("mephisto/architect=heroku", "unknown architect 'heroku'"),
    ("mephisto/provider=upwork", "unknown provider 'upwork'"),
])
def test_unknown_abstractions(tmp_path: Path, free_port: int, override: str, needle: str) -> None:
    task_dir = write_task_dir(tmp_path, port=free_port)
    assert_refused(run_cli(tmp_path / "data", "run", str(task_dir), override), needle)


@pytest.mark.parametrize("case", ["missing folder", "unknown key", "missing conf"])
def test_run_without_options_answers_as_typer_does(tmp_path: Path, free_port: int, case: str) -> None:
    # `run DIR [KEY=VALUE ...]` is called past Typer's parsing (cli.app._plain_run); `run -- DIR ...` names
    # the same arguments through Typer: the two must answer alike.
    task_dir = write_task_dir(tmp_path, port=free_port)
    args = {"missing folder": [str(tmp_path / "nope")],
            "unknown key": [str(task_dir), "mephisto.task.max_num_concurent_units=5"],
            "missing conf": [str(task_dir), "conf=pilot"]}[case]
    plain = run_cli(tmp_path / "data", "run", *args)
    parsed = run_cli(tmp_path / "data", "run", "--", *args)
    assert_refused(plain)
    assert (plain.returncode, plain.stdout, plain.stderr) == (parsed.returncode, parsed.stdout, parsed.stderr)


def test_port_already_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        task_dir = write_task_dir(tmp_path, port=port)
        result = run_cli(tmp_path / "data", "run", str(task_dir))
    assert_refused(result, f"port {port} is already taken")
    assert task_runs(tmp_path / "data") == 0


def test_export_needs_one_selector(tmp_path: Path) -> None:
    assert_refused(run_cli(tmp_path / "data", "export"), "--task-name", "--run")


def test_export_of_an_unknown_task(tmp_path: Path) -> None:
    unknown = run_cli(tmp_path / "data", "export", "--task-name", "ghost")
    assert unknown.returncode == 4, unknown.stderr  # not found (README's exit codes)
    assert unknown.stderr.strip() == "error: no task named 'ghost'; there are no tasks yet"
