"""``mephisto-dist flower``: refuses to start without a login, binds to 127.0.0.1, keeps the password off
the command line, and shows our tasks under readable names with ids as their only arguments."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import Settings
from tests.conftest import free_port, wait_for
from tests.system import ROOT, celery_worker, child_env, make_runtime, stop
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

LOGIN = ("watcher", "s3cret-pass")


@pytest.fixture
def runtime(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url)
    yield rt
    rt.close()


@contextmanager
def flower(settings: Settings, log: Path, port: int, extra_env: dict[str, str],
           *args: str) -> Iterator[subprocess.Popen[bytes]]:
    env = child_env(settings)
    env.update(extra_env)
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.app", "flower", "--port", str(port),
                                    *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop(process)


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def test_flower_refuses_to_start_without_credentials(tmp_path: Path, runtime: Runtime) -> None:
    port = free_port()
    env = {k: v for k, v in child_env(runtime.settings).items() if not k.startswith("FLOWER_")}
    env["COLUMNS"] = "300"
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "flower", "--port", str(port)],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "flower needs credentials" in result.stderr and "MEPHISTO_DIST_FLOWER_BASIC_AUTH" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not answers(f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize("extra", [["--auth="], ["--auth", ""], ["--auth"], ["--basic-auth= "],
                                   ["--auth", "--port=1"]])
def test_flowers_own_login_options_left_empty_are_no_login(runtime: Runtime, extra: list[str]) -> None:
    """Flower takes an empty --auth or --basic-auth as no login at all: so does this."""
    env = {k: v for k, v in child_env(runtime.settings).items() if not k.startswith("FLOWER_")}
    env["COLUMNS"] = "300"
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "flower", "--port", str(free_port()),
                             "--", *extra], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "flower needs credentials" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_malformed_login_is_refused(runtime: Runtime) -> None:
    env = child_env(runtime.settings)
    env["MEPHISTO_DIST_FLOWER_BASIC_AUTH"] = "just-a-user"
    result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "flower"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "must be user:password" in result.stderr
    assert "just-a-user" not in result.stderr


def test_flower_asks_for_the_login_and_shows_our_tasks_by_name(tmp_path: Path, runtime: Runtime) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    login = {"MEPHISTO_DIST_FLOWER_BASIC_AUTH": ":".join(LOGIN)}
    with flower(runtime.settings, tmp_path / "flower.log", port, login) as process, \
            celery_worker(runtime.settings, tmp_path / "worker.log"):
        wait_for(lambda: answers(url), timeout_s=30, message="Flower to answer")
        assert httpx.get(url + "/api/workers").status_code == 401
        assert httpx.get(url + "/api/workers", auth=("watcher", "wrong")).status_code == 401
        assert httpx.get(url + "/api/workers", auth=LOGIN).status_code == 200
        assert not answers(f"http://127.0.0.2:{port}/"), "Flower must bind to 127.0.0.1 only"
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert LOGIN[1].encode() not in cmdline

        task_dir = write_task_dir(tmp_path, rows=2, architect="mock")
        run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
        enqueue_launch(runtime, run_id)

        def launch_task() -> dict[str, Any] | None:
            tasks = httpx.get(url + "/api/tasks", auth=LOGIN).json()
            return next((t for t in tasks.values() if t.get("name") == "mephisto_dist.launch_units"), None)

        task = wait_for(launch_task, timeout_s=30, message="Flower to see the launch task")
        assert task["args"] == f"[{run_id}]"
        assert task["kwargs"] == "{}"
        # Flower counted those events in its own metrics, served at its /metrics behind its login, and
        # wrote nothing into the machine's metrics folder (prometheus-client's files end in _<pid>.db).
        wait_for(lambda: "flower_events_total{" in httpx.get(url + "/metrics", auth=LOGIN).text, timeout_s=10,
                 message="Flower's own metrics")
        folder = runtime.settings.metrics_dir
        assert not [f.name for f in folder.glob(f"*_{process.pid}.db")], sorted(f.name for f in folder.iterdir())


def test_flowers_own_auth_option_is_accepted(tmp_path: Path, runtime: Runtime) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"FLOWER_BASIC_AUTH": ":".join(LOGIN)}
    with flower(runtime.settings, tmp_path / "flower.log", port, env):
        wait_for(lambda: answers(url), timeout_s=30, message="Flower to answer")
        assert httpx.get(url + "/api/workers").status_code == 401
        assert httpx.get(url + "/api/workers", auth=LOGIN).status_code == 200
    assert os.environ.get("FLOWER_BASIC_AUTH") is None
