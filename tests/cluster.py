"""Machines for the multi-machine tests: each is a set of processes with its own loopback address
(127.0.0.2, 127.0.0.3, ...) and its own data directory. They share nothing but the services' TCP URLs
(PostgreSQL, Redis, S3 over HTTP) and an nginx balancer in front of their web processes, run with the
shipped ``infra/nginx/nginx.conf``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mephisto_dist.settings import Settings, load_settings
from tests.conftest import free_port, wait_for
from tests.system import ROOT, stop

NGINX_CONF = ROOT / "infra" / "nginx" / "nginx.conf"


@contextmanager
def redis_over_tcp(directory: Path) -> Iterator[str]:
    """A private redis-server on 127.0.0.1 (TCP only: no unix socket)."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not on PATH (see .ci/run)"
    port = free_port()
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--dir", str(directory)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url)
        wait_for(lambda: _pings(client), message="redis-server to start")
        client.close()
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _pings(client: object) -> bool:
    import redis

    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except redis.ConnectionError:
        return False


@dataclass
class Machine:
    address: str
    data_dir: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    def spawn(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = self.data_dir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(list(argv), cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes.append(process)
        return process

    def cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout_s, check=False)

    def web(self, port: int, public_port: int) -> subprocess.Popen[bytes]:
        process = self.spawn(f"web-{port}", sys.executable, "-m", "mephisto_dist.cli.app", "web",
                             "--host", self.address, "--port", str(port), "--public-port", str(public_port))
        wait_for(lambda: process.poll() is not None or _answers(f"http://{self.address}:{port}/task_config.json"),
                 timeout_s=30, message=f"web on {self.address}:{port}")
        assert process.poll() is None, (self.data_dir / f"web-{port}.log").read_text()
        return process

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        log = self.data_dir / f"{name}.log"
        process = self.spawn(name, sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.worker", "worker", "-E",
                             "--prefetch-multiplier", "1", "--concurrency", "2", "--loglevel", "INFO",
                             "--hostname", f"{name}@{self.address}")
        wait_for(lambda: process.poll() is not None or b"ready." in log.read_bytes(), timeout_s=30,
                 message=f"Celery worker {name}")
        assert process.poll() is None, log.read_text()
        return process

    def beat(self) -> subprocess.Popen[bytes]:
        return self.spawn("beat", sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.beat", "beat", "--loglevel", "INFO",
                          "--schedule", str(self.data_dir / "mephisto_dist.celery.schedule"))

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL, as a machine losing power would: no cleanup of any kind."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            stop(process)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def machine(root: Path, address: str, shared: dict[str, str], **extra: str) -> Machine:
    data_dir = root / address
    data_dir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update(shared)
    env["MEPHISTO_DIST_DATA_DIR"] = str(data_dir)
    env.update({f"MEPHISTO_DIST_{k}": v for k, v in extra.items()})
    env["COLUMNS"] = "200"
    return Machine(address, data_dir, env)


@contextmanager
def nginx(directory: Path, address: str, port: int, upstreams: list[str]) -> Iterator[str]:
    """The shipped ``infra/nginx/nginx.conf`` balancing ``address:port`` over these upstreams."""
    conf = NGINX_CONF.read_text()
    servers = "".join(f"        server {u} max_fails=1 fail_timeout=5s;\n" for u in upstreams)
    conf, removed = re.subn(r"(?m)^        server 127\.0\.0\.1:\d+ .*\n", "", conf)
    assert removed == 2 and conf.count("listen 3000;") == 1, "infra/nginx/nginx.conf changed shape"
    conf = conf.replace("        keepalive 64;", servers + "        keepalive 64;")
    conf = conf.replace("listen 3000;", f"listen {address}:{port};")
    with run_nginx(directory, conf, f"http://{address}:{port}") as url:
        yield url


@contextmanager
def run_nginx(directory: Path, conf: str, url: str) -> Iterator[str]:
    """Debian's nginx running ``conf`` as the recipe says (``nginx -p PREFIX -c nginx.conf``) with
    ``directory`` as its prefix, in the foreground; yields ``url`` once it answers there."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nginx.conf").write_text(conf)
    log = (directory / "nginx.out").open("ab")
    process = subprocess.Popen([binary, "-p", str(directory), "-c", str(directory / "nginx.conf"),
                                "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: process.poll() is not None or _answers(url + "/task_config.json"), timeout_s=20,
                 message="nginx to answer")
        assert process.poll() is None, (directory / "nginx.out").read_text() + (directory / "error.log").read_text()
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()
