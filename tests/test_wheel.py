"""What ships works: the wheel built from this tree holds every file the package reads at run time, and,
installed (not editable) into a fresh virtualenv from the lock, runs a static task and a remote-procedure
task end to end on the embedded default, from a folder where this checkout cannot be imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from mephisto_dist.compat.bundle import build_bundle
from tests.browser import RunProcess, free_port, user_env

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
STARTUP_S = 60.0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree's tracked files (as a fresh clone holds them: no stale ``build/`` folder can
    slip old modules in), built with the pinned setuptools (no download)."""
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("mephisto_dist-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed (dependencies at the lock's versions); its bin dir."""
    where = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    installed = subprocess.run(
        [str(where / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(LOCK), str(wheel)],
        capture_output=True, text=True, timeout=900, check=False, env=_wheel_env(os.environ))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return where / "bin"


def test_the_wheel_holds_every_file_of_the_package(wheel: Path) -> None:
    tracked = subprocess.run(["git", "ls-files", "mephisto_dist"], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.split()
    assert tracked, "git ls-files found nothing: is this a checkout?"
    shipped = set(zipfile.ZipFile(wheel).namelist())
    missing = [path for path in tracked if path not in shipped]
    assert not missing, f"files the package holds but the wheel lacks: {missing}"


def _wheel_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without PYTHONPATH: a developer's PYTHONPATH pointing at a checkout would put it before the
    wheel, and the test would run the checkout."""
    return {k: v for k, v in env.items() if k != "PYTHONPATH"}


def _installed_copy(venv: Path) -> Path:
    """Where the venv's interpreter imports mephisto_dist from (not this checkout)."""
    found = subprocess.run([str(venv / "python"), "-c", "import mephisto_dist, sys; print(mephisto_dist.__file__)"],
                           cwd=venv, check=True, capture_output=True, text=True, env=_wheel_env(os.environ)).stdout.strip()
    return Path(found)


@pytest.fixture
def started(venv: Path, tmp_path: Path) -> Iterator[list[RunProcess]]:
    runs: list[RunProcess] = []
    yield runs
    for run in runs:
        run.stop()


def _start(venv: Path, tmp_path: Path, task_dir: Path, task_name: str, runs: list[RunProcess]) -> tuple[RunProcess, int]:
    port = free_port()
    env = _wheel_env(user_env(tmp_path / "data"))
    env["PATH"] = f"{venv}:{env['PATH']}"
    process = subprocess.Popen(
        [str(venv / "mephisto-dist"), "run", str(task_dir), f"mephisto.architect.port={port}",
         f"mephisto.task.task_name={task_name}"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1)
    run = RunProcess(process)
    runs.append(run)
    run.wait_for_line(f"http://localhost:{port}/?worker_id=", STARTUP_S)
    run.wait_for_line("created=0 ", STARTUP_S)
    return run, port


def _export(venv: Path, tmp_path: Path, task_name: str) -> list[dict[str, Any]]:
    import json

    env = _wheel_env(user_env(tmp_path / "data"))
    result = subprocess.run([str(venv / "mephisto-dist"), "export", "--task-name", task_name, "--format", "jsonl"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_a_static_task_runs_from_the_installed_wheel(venv: Path, tmp_path: Path, started: list[RunProcess]) -> None:
    assert ROOT not in _installed_copy(venv).parents
    task_dir = tmp_path / "simple_static_task"
    shutil.copytree(ROOT / "examples" / "simple_static_task", task_dir)
    run, port = _start(venv, tmp_path, task_dir, "wheel-static", started)
    url = f"http://127.0.0.1:{port}"
    page = httpx.get(url + "/?worker_id=w1&assignment_id=a1", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    for n in range(3):
        worker = f"wheel-worker-{n}"
        answer = httpx.post(url + "/request_agent", timeout=10, json={
            "provider_data": {"worker_name": worker, "assignment_id": f"a{n}",
                              "agent_registration_id": f"a{n}-{worker}", "provider_type": "mock"},
            "client_timestamp": 0}).json()["data"]
        assert answer["agent_id"], answer
        submitted = httpx.post(url + "/submit_task", timeout=10, json={
            "USED_AGENT_ID": answer["agent_id"], "final_data": {"rating": "good", "n": n}, "client_timestamp": 0})
        assert submitted.status_code == 200, submitted.text
    assert run.wait_exit(60) == 0, run.output
    records = _export(venv, tmp_path, "wheel-static")
    assert sorted(r["data"]["outputs"]["n"] for r in records) == [0, 1, 2]


@pytest.mark.browser
def test_a_remote_procedure_task_runs_from_the_installed_wheel(
        venv: Path, tmp_path: Path, started: list[RunProcess], browser: Any) -> None:
    task_dir = tmp_path / "remote_procedure_task"
    shutil.copytree(ROOT / "examples" / "remote_procedure_task", task_dir,
                    ignore=shutil.ignore_patterns("node_modules", "build"))
    build_bundle(task_dir, force_rebuild=True, post_install_script=None, log_path=tmp_path / "npm.log",
                 say=lambda text: None)
    run, port = _start(venv, tmp_path, task_dir, "wheel-rp", started)
    page = browser.new_context().new_page()
    page.set_default_timeout(30_000)
    page.goto(f"http://localhost:{port}/?worker_id=wheel-worker&assignment_id=a1")
    page.wait_for_selector("#ask")
    page.fill("#text", "What a wonderful and happy day")
    page.click("#ask")
    # The answer comes over the live channel: a heartbeat, the call on Celery, the answer via Redis.
    page.wait_for_selector("#answer")
    assert page.inner_text("#answer") == "positive (2)"
    page.click("#submit")
    page.wait_for_selector("#done")
    run.stop()
    (record,) = [r for r in _export(venv, tmp_path, "wheel-rp") if r["status"] == "completed"]
    assert [call["status"] for call in record["data"]["requests"]] == ["answered"]
    assert "Traceback" not in run.output, run.output
