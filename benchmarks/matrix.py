"""The deployments of issue 12's benchmark table, each started fresh on this machine and driven by
``benchmarks/load.py``; prints one row per (deployment, cap, workers).

    python benchmarks/matrix.py [--units 1000] [--think-ms 20] [--reload-ms 1000] [--only embedded|pg1|pg2]
                                [--set WEB_THREADS=4] [--json out.json]

- ``embedded``: ``mephisto-dist run TASK`` attached with no URLs set: embedded Redis (unix socket),
  SQLite, and the web, worker and beat processes it starts itself.
- ``pg1`` / ``pg2``: PostgreSQL (a fresh database on 127.0.0.1:5432), a private redis-server over TCP,
  two Celery workers, beat, and one web process, or two behind nginx (``infra/nginx``); the run is
  created with ``run --detach``.
Each row uses a fresh run of ``--units`` + 200 rows; load.py stops after ``--units`` submissions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("MEPHISTO_DIST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
EXTRA: dict[str, str] = {}  # --set NAME=VALUE: further settings for every process started
sys.path.insert(0, str(ROOT / "benchmarks"))
from throughput import role_of, write_task_folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url + "/task_config.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGINT if "run" in argv else signal.SIGTERM)
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(5)


@contextmanager
def pg_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "bench_" + uuid.uuid4().hex[:8]
    admin = create_engine(make_url(PG_ADMIN).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROLES = frozenset({"web", "redis keeper", "nginx", "postgresql", "redis", "beat", "celery worker", "run (cli)"})


def cpu_by_role(kernel: bool = False) -> dict[int, tuple[str, int, float]]:
    """Every process on the machine: pid -> (role, start time, CPU seconds; with ``kernel``, those in the
    kernel only), the role read off its name and command line ("other" for the rest: a benchmark's figures
    are only clean when "other" stays near 0)."""
    found: dict[int, tuple[str, int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        role = role_of(comm, command)
        role = role if role in ROLES else "other"
        ticks = int(fields[12]) if kernel else int(fields[11]) + int(fields[12])  # (utime +) stime
        found[int(entry.name)] = (role, int(fields[19]), ticks / CLOCK_TICKS)
    return found


def cpu_spent(before: dict[int, tuple[str, int, float]], after: dict[int, tuple[str, int, float]]) -> dict[str, float]:
    """CPU seconds each role spent between two readings (a process started meanwhile counts from 0; one that
    ended meanwhile is lost: none of the deployment's should)."""
    spent: dict[str, float] = {}
    for pid, (role, started, seconds) in after.items():
        earlier = before.get(pid)
        base = earlier[2] if earlier is not None and earlier[1] == started else 0.0
        spent[role] = round(spent.get(role, 0.0) + seconds - base, 2)
    return spent


def load(url: str, workers: int, units: int, think_ms: float, out: Path, cap: int,
         reload_ms: float = 1000.0) -> dict[str, Any]:
    before, children_before = cpu_by_role(), resource.getrusage(resource.RUSAGE_CHILDREN)
    kernel_before = cpu_by_role(kernel=True)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "load.py"), url, "--workers", str(workers), "--cap", str(cap),
                    "--units", str(units), "--think-ms", str(think_ms), "--reload-ms", str(reload_ms),
                    "--duration", "300", "--json", str(out)],
                   check=False, stdout=subprocess.DEVNULL)
    spent = cpu_spent(before, cpu_by_role())
    in_kernel = cpu_spent(kernel_before, cpu_by_role(kernel=True))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # load.py, ended: its CPU is ours now
    spent["load generator"] = round(children.ru_utime + children.ru_stime - children_before.ru_utime
                                    - children_before.ru_stime, 2)
    result: dict[str, Any] = json.loads(out.read_text())
    result.pop("accepted_agents", None)
    result["cpu_s"] = spent
    submitted = int(result.get("units") or units)
    result["web_cpu_ms_per_unit"] = round(spent.get("web", 0.0) / submitted * 1000, 3)
    result["web_kernel_ms_per_unit"] = round(in_kernel.get("web", 0.0) / submitted * 1000, 3)
    return result


def embedded(tmp: Path, cap: int, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    write_task_folder(tmp / "task", args.units + 200, cap, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env["MEPHISTO_DIST_DATA_DIR"] = str(tmp / "data")
    env.update(EXTRA)
    with process([sys.executable, "-m", "mephisto_dist.cli.app", "run", str(tmp / "task")], env, tmp / "run.log"):
        url = f"http://127.0.0.1:{port}"
        wait(lambda: answers(url) and "launched=" in (tmp / "run.log").read_text(), 60, "the embedded run")
        time.sleep(1)  # the first launch batch lands
        return load(url, workers, args.units, args.think_ms, tmp / "load.json", cap, args.reload_ms)


def postgres(tmp: Path, cap: int, workers: int, args: argparse.Namespace, webs: int) -> dict[str, Any]:
    with ExitStack() as stack:
        redis_port = free_port()
        stack.enter_context(process(["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                                     "--appendonly", "no"], dict(os.environ), tmp / "redis.log"))
        database_url = stack.enter_context(pg_database())
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
        env.update({"MEPHISTO_DIST_DATA_DIR": str(tmp / "data"), "MEPHISTO_DIST_DATABASE_URL": database_url,
                    "MEPHISTO_DIST_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", **EXTRA})
        cli = [sys.executable, "-m", "mephisto_dist.cli.app"]
        time.sleep(0.5)
        subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
        public = free_port()
        write_task_folder(tmp / "task", args.units + 200, cap, public)
        for n in range(2):
            stack.enter_context(process([sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.worker", "worker", "-E",
                                         "--prefetch-multiplier", "1", "--concurrency", "1",
                                         "--hostname", f"bench{n}@%h"], env, tmp / f"worker{n}.log"))
        stack.enter_context(process([sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.beat", "beat", "--schedule",
                                     str(tmp / "mephisto_dist.celery.schedule")], env, tmp / "beat.log"))
        created = subprocess.run([*cli, "run", str(tmp / "task"), "--detach", "--quiet"], env=env, check=True,
                                 capture_output=True, text=True)
        run_id = created.stdout.strip().splitlines()[-1]
        ports = [public] if webs == 1 else [free_port() for _ in range(webs)]
        for port in ports:
            stack.enter_context(process([*cli, "web", "--run", run_id, "--port", str(port)], env,
                                        tmp / f"web{port}.log"))
            wait(lambda port=port: answers(f"http://127.0.0.1:{port}"), 60, "a web process")
        if webs > 1:
            stack.enter_context(nginx(tmp / "nginx", public, ports))
        url = f"http://127.0.0.1:{public}"
        wait(lambda: answers(url), 30, "the balancer")
        time.sleep(2)  # the first launch batch lands
        return load(url, workers, args.units, args.think_ms, tmp / "load.json", cap, args.reload_ms)


@contextmanager
def nginx(directory: Path, port: int, upstreams: list[int]) -> Iterator[None]:
    """The shipped infra/nginx/nginx.conf, its listen port and upstreams set, with ``directory`` as prefix."""
    conf = (ROOT / "infra" / "nginx" / "nginx.conf").read_text()
    conf = re.sub(r"(?m)^        server 127\.0\.0\.1:\d+ .*\n", "", conf)
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n" for p in upstreams)
    conf = conf.replace("        keepalive 64;", servers + "        keepalive 64;")
    conf = conf.replace("listen 3000;", f"listen 127.0.0.1:{port};")
    directory.mkdir(parents=True)
    (directory / "nginx.conf").write_text(conf)
    with process([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(directory), "-c", str(directory / "nginx.conf"),
                  "-g", "daemon off;"], dict(os.environ), directory / "nginx.out"):
        yield


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--think-ms", type=float, default=20.0)
    parser.add_argument("--reload-ms", type=float, default=1000.0, help="see load.py --reload-ms")
    parser.add_argument("--only", choices=["embedded", "pg1", "pg2"], action="append")
    parser.add_argument("--caps", default="0,50")
    parser.add_argument("--workers", default="20,100")
    parser.add_argument("--json")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a MEPHISTO_DIST_ setting for every process started (without the prefix), e.g. WEB_THREADS=4")
    args = parser.parse_args()
    for setting in args.set:
        name, _, value = setting.partition("=")
        EXTRA[f"MEPHISTO_DIST_{name.removeprefix('MEPHISTO_DIST_')}"] = value
    rows = []
    for deployment in args.only or ["embedded", "pg1", "pg2"]:
        for cap in map(int, args.caps.split(",")):
            for workers in map(int, args.workers.split(",")):
                with tempfile.TemporaryDirectory(prefix="mephisto-dist-matrix-") as scratch:
                    tmp = Path(scratch)
                    if deployment == "embedded":
                        result = embedded(tmp, cap, workers, args)
                    else:
                        result = postgres(tmp, cap, workers, args, webs=int(deployment[-1]))
                row = {"deployment": deployment, "cap": cap, **result}
                rows.append(row)
                print_row(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def print_row(row: dict[str, Any]) -> None:
    ep = row["endpoints_ms"]

    def p(name: str, q: str) -> str:
        return str(ep.get(name, {}).get(q))

    first = max((ep.get(n, {}).get("first_second", {}).get("p99") or 0) for n in ("request_agent", "submit_task"))
    print(f"{row['deployment']:<9} cap {row['cap']:>3} workers {row['workers']:>3}: {row['units_per_s']:>6} units/s | "
          f"request_agent p50/p95/p99 {p('request_agent', 'p50')}/{p('request_agent', 'p95')}/"
          f"{p('request_agent', 'p99')} | submit_task {p('submit_task', 'p50')}/{p('submit_task', 'p95')}/"
          f"{p('submit_task', 'p99')} | first-second p99 {first} | reoffer p50 {row['slot_reoffer_ms']['p50']} | "
          f"reload {row.get('reload_ms')} ms | "
          f"refusals {sum(row['refusals'].values())} errors {sum(row['errors'].values())} | "
          f"load {row['loadavg_before'][0]}->{row['loadavg_after'][0]}", flush=True)
    print(f"{'':<9} web CPU {row['web_cpu_ms_per_unit']} ms/unit ({row.get('web_kernel_ms_per_unit')} in the "
          "kernel) | CPU s by role: "
          + ", ".join(f"{role} {seconds}" for role, seconds in sorted(row["cpu_s"].items())), flush=True)


if __name__ == "__main__":
    main()
