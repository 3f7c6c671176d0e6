"""The processes ``run`` forks for the embedded default: a standby web server that serves only once told
where (and exits unused when the start fails), and the Redis keeper, which outlives the run that forked
it, serves every run of the data directory and stops once none is left, even when they were SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis

from mephisto_dist.cli.embedded import KEEPER_PROCESS_NAME, WEB_PROCESS_NAME
from tests.conftest import wait_for
from tests.system import ROOT, free_port

pytestmark = pytest.mark.system

STANDBY = """
import json, sys, time
from pathlib import Path
from mephisto_dist.cli.embedded import ChildProcesses, EmbeddedRedis
from mephisto_dist.settings import load_settings
from dataclasses import replace

settings = load_settings()
children = ChildProcesses(settings, Path(sys.argv[1]))
children.fork_web()
pid = children._standby[1].pid
print(json.dumps({"pid": pid}), flush=True)
served = None
if sys.argv[2] == "serve":
    url = EmbeddedRedis(settings.embedded_redis_socket).start()
    children.settings = replace(settings, redis_url=url)
    served = children.release_web("127.0.0.1", int(sys.argv[3])).process
    sys.stdin.readline()
children.stop()
print(json.dumps({"exit": None if served is None else served.returncode}), flush=True)
"""

USER = """
import sys
from pathlib import Path
from mephisto_dist.cli.embedded import EmbeddedRedis
print(EmbeddedRedis(Path(sys.argv[1])).start(), flush=True)
sys.stdin.readline()
"""


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env["MEPHISTO_DIST_DATA_DIR"] = str(data_dir)
    return env


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_standby_web_server_never_told_to_serve_exits_without_serving(tmp_path: Path) -> None:
    process = subprocess.run([sys.executable, "-c", STANDBY, str(tmp_path / "logs"), "cancel"], cwd=ROOT,
                             env=_env(tmp_path / "data"), capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in process.stdout.splitlines()]
    assert _gone(lines[0]["pid"])
    log = (tmp_path / "logs" / "web.log").read_text()
    assert "Traceback" not in log and "Uvicorn running" not in log


def test_a_released_standby_web_server_serves_under_its_own_name(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    migrate = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "migrate"], cwd=ROOT, env=_env(data_dir),
                             capture_output=True, text=True, timeout=60, check=False)
    assert migrate.returncode == 0, migrate.stderr
    process = subprocess.Popen([sys.executable, "-c", STANDBY, str(tmp_path / "logs"), "serve", str(port)], cwd=ROOT,
                               env=_env(data_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdin is not None
        pid = json.loads(process.stdout.readline())["pid"]
        wait_for(lambda: _comm(pid) == WEB_PROCESS_NAME, message="the forked server to take its name")

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/is_alive", timeout=1) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_for(answers, timeout_s=30, message="the released web server to answer")
        process.stdin.write("\n")
        process.stdin.flush()
        assert json.loads(process.stdout.readline())["exit"] is not None  # stopped by ChildProcesses.stop
        assert _gone(pid)
    finally:
        process.kill()
        process.wait(10)


def test_the_redis_keeper_outlives_each_run_but_not_the_last(tmp_path: Path) -> None:
    socket = tmp_path / "data" / "redis.sock"
    users = [subprocess.Popen([sys.executable, "-c", USER, str(socket)], cwd=ROOT, env=_env(tmp_path / "data"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        urls = [user.stdout.readline().strip() for user in users if user.stdout is not None]
        assert urls == [f"unix://{socket}"] * 2
        client = redis.Redis(unix_socket_path=str(socket), socket_timeout=2)
        assert client.ping()
        mine = {str(user.pid) for user in users}

        def keepers() -> list[int]:
            listed = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True,
                                    check=True).stdout
            return [int(pid) for pid, ppid, comm in (line.split(maxsplit=2) for line in listed.splitlines())
                    if ppid in mine and comm == KEEPER_PROCESS_NAME]

        found = wait_for(keepers, message="the keeper, forked by a run and named mephisto-keeper")
        users[0].send_signal(signal.SIGKILL)  # the run that forked the keeper dies outright
        users[0].wait(10)
        # The keeper notices that run is gone (it drops its registration) and keeps serving the other.
        first = socket.parent / "redis.users" / str(users[0].pid)
        wait_for(lambda: not first.exists(), timeout_s=10, message="the keeper to notice the killed run")
        assert client.ping(), "the keeper stopped Redis while a run still used it"
        users[1].send_signal(signal.SIGKILL)
        users[1].wait(10)

        def stopped() -> bool:
            try:
                redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping()
            except (redis.ConnectionError, redis.TimeoutError):
                return True
            return False

        wait_for(stopped, timeout_s=15, message="the keeper to stop Redis once no run used it")
        wait_for(lambda: all(_gone(pid) for pid in found), timeout_s=15, message="the keeper to exit")
    finally:
        for user in users:
            user.kill()
            user.wait(10)


def test_runs_starting_at_once_share_one_redis_server(tmp_path: Path) -> None:
    """The first run to find no server hands its lock to the keeper it forks, which holds it until its
    server answers: the others wait for that server rather than each starting one on the same socket."""
    socket = tmp_path / "data" / "redis.sock"
    users = [subprocess.Popen([sys.executable, "-c", USER, str(socket)], cwd=ROOT, env=_env(tmp_path / "data"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        urls = [user.stdout.readline().strip() for user in users if user.stdout is not None]
        assert urls == [f"unix://{socket}"] * 3
        servers = [pid for pid in _pids() if _comm(pid) == "redis-server" and _cwd(pid) == socket.parent]
        assert len(servers) == 1, servers  # each runs in the data directory (--dir)
    finally:
        for user in users:
            user.kill()
            user.wait(10)
