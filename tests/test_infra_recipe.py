"""``infra/`` runs as written: the shipped nginx.conf (Debian's nginx, its own prefix), two web processes as
the ``mephisto-dist-web@.service`` template runs them, a Celery worker and beat as their units run them,
each command taken from its unit's ExecStart. Only what infra/README.md says to set is changed: the
ports (the balancer's 3000, the web instances 3101 and 3102, here free ones), the virtualenv's bin
directory and the data directory. Then a worker completes a unit through nginx, and a live websocket
reaches a web process through it."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from websockets.sync.client import connect

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.runtime import Runtime
from tests.cluster import NGINX_CONF, run_nginx
from tests.conftest import free_port, wait_for
from tests.system import ROOT, child_env, make_runtime, register, stop
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

SYSTEMD = ROOT / "infra" / "systemd"
VENV_BIN = "/opt/mephisto-dist/venv/bin/"
DATA_DIR = "/var/lib/mephisto-dist"
BALANCER_PORT, WEB_PORTS = "3000", ("3101", "3102")


def exec_start(unit: str, instance: str = "") -> list[str]:
    """The unit's ExecStart as argv, with systemd's ``%i`` the instance name."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / unit).read_text())
    return [arg.replace("%i", instance) for arg in shlex.split(parser["Service"]["ExecStart"])]


def as_installed_here(argv: list[str], data_dir: Path, ports: dict[str, str]) -> list[str]:
    """The unit's command on this machine: the venv's scripts are this environment's, the data directory
    the test's, the recipe's ports free ones."""
    assert argv[0].startswith(VENV_BIN), argv
    script = shutil.which(argv[0].removeprefix(VENV_BIN))
    assert script is not None, f"{argv[0]} is not installed here"
    here = [script]
    for arg in argv[1:]:
        arg = arg.replace(DATA_DIR, str(data_dir))
        here.append(ports.get(arg, arg))
    return here


@pytest.fixture
def runtime(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", pg_url, redis_url)
    yield rt
    rt.close()


def spawn(stack: ExitStack, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(argv, cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    stack.callback(stop, process)
    return process


def unit_statuses(rt: Runtime, run_id: int) -> list[str]:
    with read_transaction(rt.sessions) as session:
        return list(session.scalars(select(Unit.status).where(Unit.task_run_id == run_id)))


def test_the_recipe_runs_as_written(tmp_path: Path, runtime: Runtime) -> None:
    balancer = str(free_port())
    webs = [str(free_port()) for _ in WEB_PORTS]
    ports = {BALANCER_PORT: balancer, **dict(zip(WEB_PORTS, webs, strict=True))}
    env = child_env(runtime.settings)
    data_dir = runtime.settings.data_dir

    conf = NGINX_CONF.read_text()
    for old, new in [(f"listen {BALANCER_PORT};", f"listen {balancer};"),
                     *((f"127.0.0.1:{old} ", f"127.0.0.1:{new} ") for old, new in zip(WEB_PORTS, webs, strict=True))]:
        assert conf.count(old) == 1, f"{old!r} is not in infra/nginx/nginx.conf once"
        conf = conf.replace(old, new)

    task_dir = write_task_dir(tmp_path, rows=3, port=int(balancer), cap=2)
    created = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "run", str(task_dir), "--detach", "--quiet"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert created.returncode == 0, created.stderr
    run_id = int(created.stdout.strip().splitlines()[-1])

    with ExitStack() as stack:
        for name, unit in [("worker", "mephisto-dist-worker.service"), ("beat", "mephisto-dist-beat.service")]:
            spawn(stack, as_installed_here(exec_start(unit), data_dir, ports), env, tmp_path / f"{name}.log")
        for web in WEB_PORTS:
            argv = as_installed_here(exec_start("mephisto-dist-web@.service", web), data_dir, ports)
            assert argv[argv.index("--public-port") + 1] == balancer and argv[argv.index("--port") + 1] == ports[web]
            spawn(stack, argv, env, tmp_path / f"web-{web}.log")
        for web in webs:  # both web processes answer, before the balancer sends them anything: a request
            # to one still starting would take it out of the pool for fail_timeout (max_fails=1)
            wait_for(lambda web=web: _answers(f"http://127.0.0.1:{web}/task_config.json"), timeout_s=60,
                     message=f"the web process on {web}")
        url = stack.enter_context(run_nginx(tmp_path / "nginx", conf, f"http://127.0.0.1:{balancer}"))

        wait_for(lambda: unit_statuses(runtime, run_id).count(UnitStatus.LAUNCHED.value) == 2, timeout_s=60,
                 message="the worker to launch two units (cap 2)")
        agent = register(url, "w1", "a1")
        assert agent["agent_id"], agent

        # The live channel: a websocket on "/" through nginx reaches a web process, which answers the
        # page's alive with its agent's status and its heartbeat with the backend's.
        with connect(url.replace("http://", "ws://") + "/", open_timeout=10) as socket:
            socket.send(json.dumps({"packet_type": "alive", "subject_id": agent["agent_id"], "data": {}}))
            status = json.loads(socket.recv(timeout=10))
            assert status["packet_type"] == "update_status" and status["subject_id"] == agent["agent_id"], status
            socket.send(json.dumps({"packet_type": "heartbeat", "subject_id": agent["agent_id"], "data": {}}))
            beat = json.loads(socket.recv(timeout=10))
            assert beat["packet_type"] == "heartbeat" and beat["data"]["last_mephisto_ping"] > 0, beat

        done = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": agent["agent_id"],
                                                      "final_data": {"rating": "5"}}, timeout=30)
        assert done.status_code == 200, done.text
        wait_for(lambda: unit_statuses(runtime, run_id).count(UnitStatus.COMPLETED.value) == 1, timeout_s=30,
                 message="the unit to be completed")
        # The freed slot is refilled: the third unit launches.
        wait_for(lambda: unit_statuses(runtime, run_id).count(UnitStatus.LAUNCHED.value) == 2, timeout_s=60,
                 message="the third unit to launch")
    nginx_errors = (tmp_path / "nginx" / "error.log").read_text()
    assert "[emerg]" not in nginx_errors and "[crit]" not in nginx_errors, nginx_errors


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
