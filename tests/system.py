"""Real processes for system tests: a Celery worker and the web server, on the test's Redis and
database."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from mephisto_dist.db.migrate import upgrade
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import Settings, load_settings
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


def make_runtime(data_dir: Path, database_url: str, redis_url: str, **settings: str) -> Runtime:
    """A Runtime on the test's database (migrated) and Redis; ``settings`` are further MEPHISTO_DIST_*
    variables without the prefix (``MAX_UPLOAD_BYTES="65536"``)."""
    env = {"MEPHISTO_DIST_DATA_DIR": str(data_dir), "MEPHISTO_DIST_DATABASE_URL": database_url,
           "MEPHISTO_DIST_REDIS_URL": redis_url}
    env.update({f"MEPHISTO_DIST_{name}": value for name, value in settings.items()})
    runtime = Runtime(load_settings(env))
    upgrade(runtime.engine)
    return runtime


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update(settings.to_env())
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@contextmanager
def celery_worker(settings: Settings, log: Path, concurrency: int = 2, *, name: str = "test",
                  env: dict[str, str] | None = None, queues: Sequence[str] = (),
                  loglevel: str = "INFO", app: str = "mephisto_dist.celery.worker") -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker process (its own process group); ``name`` tells two workers apart; it consumes every
    queue unless ``queues`` names some (``-Q``). Beat's idle sweeps are logged at DEBUG only. ``app``: the
    Celery app module (a test's own, built on the product's ``make_celery``)."""
    only = ["-Q", ",".join(queues)] if queues else []
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, "worker", "--concurrency", str(concurrency),
             "--loglevel", loglevel, "--without-gossip", "--without-mingle", "--hostname", f"{name}-{os.getpid()}@%h",
             *only],
            cwd=ROOT, env={**child_env(settings), **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_for(lambda: process.poll() is not None or b"ready." in log.read_bytes(), timeout_s=30,
                 message="the Celery worker to be ready")
        assert process.poll() is None, log.read_text()
        yield process
    finally:
        stop(process)


@contextmanager
def runner_worker(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The Procfile's ``runner`` process: threads pool on the assignments queue."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.runner_worker", "worker", "-Q",
             "assignments", "-P", "threads", "-c", "8", "--loglevel", "INFO", "--without-gossip",
             "--without-mingle", "--hostname", f"runner-{os.getpid()}@%h"],
            cwd=ROOT, env=child_env(settings), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: process.poll() is not None or b"ready." in log.read_bytes(), timeout_s=30,
                 message="the runner worker to be ready")
        assert process.poll() is None, log.read_text()
        yield process
    finally:
        stop(process)


@contextmanager
def web_server(settings: Settings, run_id: int, log: Path, port: int | None = None) -> Iterator[str]:
    """The web process of a run, on ``port`` (a run's own port, where a provider sends workers) or a free
    one; yields its URL once it answers."""
    port = port or free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mephisto_dist.cli.app", "web", "--run", str(run_id), "--port", str(port)],
            cwd=ROOT, env=child_env(settings), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url + "/task_config.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, timeout_s=30, message="the web server to answer")
        yield url
    finally:
        stop(process)


@contextmanager
def celery_beat(settings: Settings, log: Path, *, loglevel: str = "INFO") -> Iterator[subprocess.Popen[bytes]]:
    """Celery beat (its own process group). It logs the sweeps it sends at DEBUG only."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.beat", "beat", "--loglevel", loglevel,
             "--schedule", str(log.with_suffix(".schedule"))],
            cwd=ROOT, env=child_env(settings), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        stop(process)


def register(url: str, worker: str, assignment: str = "a1") -> dict[str, Any]:
    """A mock-provider worker's ``request_agent`` (Mephisto's registration id ``<assignment>-<worker>``);
    the answer's ``data``."""
    response = httpx.post(url + "/request_agent", json={
        "provider_data": {"worker_name": worker, "assignment_id": assignment,
                          "agent_registration_id": f"{assignment}-{worker}", "provider_type": "mock"},
        "client_timestamp": 0})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


class KillableRedis:
    """A redis-server of this test's own on a unix socket, to kill and start again."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(unix_socket_path=str(self.socket))

        def pings() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(pings, message="redis-server to start")
        client.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
