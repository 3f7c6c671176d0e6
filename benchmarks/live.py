"""Benchmark the live channel: remote procedure calls per second and their round trip, seen from the page.

    python benchmarks/live.py [--pages 50] [--calls 40] [--webs 1] [--workers 1] [--concurrency 4]
                              [--pool prefork|threads] [--database-url URL] [--json out.json]

A ``remote_procedure`` run whose function returns at once is created in a fresh database (SQLite in a
temporary directory, or a fresh database on the PostgreSQL server of ``--database-url``), with a private
``redis-server`` on a unix socket. ``--webs`` web processes (``mephisto-dist web``) and ``--workers``
Celery workers (``--concurrency`` pool processes each) are started as subprocesses. P simulated pages
(asyncio tasks in this process, spread over the web processes) each get an agent over HTTP, open the
websocket and send ``alive``, then make ``--calls`` calls, waiting ``--think-ms`` after each answer (a
person reads it before asking again; 0 sends the next call at once, which measures capacity: with 50
pages back to back, every call waits behind the other 49), exactly as
``useMephistoRemoteProcedureTask`` sends them (``mephisto_bound_live_update`` with ``request_id``,
``target``, ``args``); a call's round trip is from sending the packet to receiving its
``client_bound_live_update`` answer. Reported: calls per second over the whole run, p50/p90/p99/max of
the round trip, and the CPU time of each process kind (the pages share the machine's cores).

Reference: Mephisto 1.1.1 answers a remote call in about 300 ms (median, in the browser): its TaskRunner
thread polls each agent's queue every 0.3 s. Targets here: p50 < 30 ms, p99 < 150 ms with 50 pages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FUNCTIONS = '''
def echo(request_id, args, agent_state):
    return {"echo": args}

function_registry = {"echo": echo}
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    sock = directory / "redis.sock"
    process = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
                                "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"unix://{sock}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def database(url: str | None, directory: Path) -> Iterator[str]:
    if url is None:
        yield f"sqlite:///{directory / 'bench.db'}"
        return
    import psycopg

    parts = urlsplit(url)
    name = f"mdist_live_{uuid.uuid4().hex[:10]}"
    admin = urlunsplit(parts._replace(scheme="postgresql"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_run(env: dict[str, str], directory: Path, pages: int) -> int:
    """A remote_procedure run with one assignment per page, launched (built straight in the database)."""
    from mephisto_dist.blueprints import remote_procedure
    from mephisto_dist.db.engine import transaction
    from mephisto_dist.db.migrate import upgrade
    from mephisto_dist.providers import make_provider
    from mephisto_dist.runs.launches import LaunchContext, launch_units
    from mephisto_dist.runs.task_runs import NewRun, create_task_run
    from mephisto_dist.runtime import Runtime
    from mephisto_dist.settings import load_settings

    rt = Runtime(load_settings(env))
    try:
        upgrade(rt.engine)
        hooks = directory / "hooks.py"
        hooks.write_text(FUNCTIONS)
        bundle = directory / "bundle.js"
        bundle.write_text("/* not loaded: the pages are simulated */\n")
        blueprint = {"_blueprint_type": remote_procedure.NAME, "hooks_module": str(hooks), "task_source": str(bundle)}
        task_name = f"live-bench-{uuid.uuid4().hex[:8]}"
        new = NewRun(
            task_name=task_name, blueprint_type=remote_procedure.NAME, architect_type="mock", provider_type="mock",
            requester_name="mock_requester", sandbox=True,
            config={"task_dir": str(directory), "conf_name": "bench",
                    "task": {"task_name": task_name, "task_title": "live benchmark", "task_description": "-",
                             "task_reward": 0.0, "task_tags": "bench"},
                    "architect": {"_architect_type": "mock"}, "provider": {"_provider_type": "mock"},
                    "blueprint": blueprint},
            task_dir=str(directory), build_dir=str(directory), server_url="http://localhost",
            max_concurrent_units=0, units_per_assignment=1, pay_amount=0.0,
            assignment_data=[remote_procedure.init_task_data({"index": i}, blueprint) for i in range(pages)])
        now = datetime.now(UTC)
        with transaction(rt.sessions) as session:
            run_id = create_task_run(session, new, now=now)
        launch_units(rt.sessions, LaunchContext(rt.limiter, make_provider("mock"), 60.0, 0), run_id, now=now)
        return run_id
    finally:
        rt.close()


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        return httpx.get(url + "/task_config.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (its pool), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pgid = int(fields[2])
        if pgid == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def page(base_url: str, worker: str, calls: int, think_s: float, samples: list[float],
               errors: list[str]) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(base_url + "/request_agent", json={"provider_data": {
            "worker_name": worker, "assignment_id": worker, "agent_registration_id": f"{worker}-{worker}",
            "provider_type": "mock"}})
        agent_id = answer.json()["data"]["agent_id"]
    if agent_id is None:
        errors.append(f"{worker}: no unit")
        return
    async with websockets.connect(base_url.replace("http://", "ws://") + "/", max_queue=None) as socket_:
        await socket_.send(json.dumps({"packet_type": "alive", "subject_id": agent_id, "data": {}}))
        # Pages start spread over one think time, as people do, not all in the same millisecond.
        await asyncio.sleep(random.uniform(0, think_s))
        for number in range(calls):
            if number:
                await asyncio.sleep(think_s)
            request_id = str(uuid.uuid4())
            sent = time.perf_counter()
            await socket_.send(json.dumps({"packet_type": "mephisto_bound_live_update", "subject_id": agent_id,
                                           "data": {"request_id": request_id, "target": "echo",
                                                    "args": json.dumps({"n": number}), "update_id": request_id}}))
            while True:
                packet = json.loads(await asyncio.wait_for(socket_.recv(), 30))
                if (packet["packet_type"] == "client_bound_live_update"
                        and packet["data"].get("handles") == request_id):
                    samples.append(time.perf_counter() - sent)
                    if "error" in json.loads(packet["data"]["response"]):
                        errors.append(packet["data"]["response"])
                    break


async def drive(urls: list[str], pages: int, calls: int, think_s: float) -> tuple[list[float], list[str], float]:
    samples: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(*(page(urls[i % len(urls)], f"page{i}", calls, think_s, samples, errors)
                           for i in range(pages)))
    return samples, errors, time.perf_counter() - started


def server_stages(env: dict[str, str]) -> dict[str, float]:
    """Where a call's time went on the server, from its stored timestamps: recorded by the web process ->
    claimed by a Celery worker (the queue) -> answered (the worker's run of it), medians in ms."""
    from sqlalchemy import select

    from mephisto_dist.db.engine import transaction
    from mephisto_dist.db.models import RemoteCall
    from mephisto_dist.runtime import Runtime
    from mephisto_dist.settings import load_settings

    rt = Runtime(load_settings(env))
    try:
        with transaction(rt.sessions) as session:
            rows = session.execute(select(RemoteCall.created_at, RemoteCall.claimed_at, RemoteCall.answered_at)).all()
    finally:
        rt.close()
    queued = [(c - a).total_seconds() for a, c, _ in rows if c is not None]
    ran = [(d - c).total_seconds() for _, c, d in rows if c is not None and d is not None]
    return {"recorded_to_claimed": round(statistics.median(queued) * 1000, 1) if queued else -1,
            "claimed_to_answered": round(statistics.median(ran) * 1000, 1) if ran else -1}


def percentile_ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--calls", type=int, default=40, help="calls per page, one after another")
    parser.add_argument("--think-ms", type=float, default=1000.0,
                        help="a page's pause between an answer and its next call (0: back to back, for capacity)")
    parser.add_argument("--webs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pool", choices=("prefork", "threads"), default="prefork")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="live-bench-"))
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        with private_redis(directory) as redis_url, database(args.database_url, directory) as database_url:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
            env.update({"MEPHISTO_DIST_DATA_DIR": str(directory / "data"), "MEPHISTO_DIST_DATABASE_URL": database_url,
                        "MEPHISTO_DIST_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)})
            run_id = create_run(env, directory, args.pages)
            urls = []
            for number in range(args.webs):
                port = free_port()
                processes.append(("web", start([sys.executable, "-m", "mephisto_dist.cli.app", "web", "--run",
                                                str(run_id), "--port", str(port)], env, directory / f"web{number}.log")))
                urls.append(f"http://127.0.0.1:{port}")
            for number in range(args.workers):
                log = directory / f"worker{number}.log"
                processes.append(("worker", start([sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.worker", "worker",
                                                   "--pool", args.pool, "--concurrency", str(args.concurrency),
                                                   "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                                                   "--hostname", f"bench{number}-{os.getpid()}@%h"], env, log)))
            for url in urls:
                wait_until(lambda url=url: answers(url), 30, f"the web process at {url}")
            time.sleep(3)  # the Celery workers finish starting (their log level hides "ready")
            cpu_before = {id(p): process_cpu_s(p.pid) for _, p in processes}
            load_avg_before = os.getloadavg()[0]
            load_before = time.process_time()
            samples, errors, wall_s = asyncio.run(drive(urls, args.pages, args.calls, args.think_ms / 1000))
            load_cpu_s = time.process_time() - load_before
            cpu = {}
            for kind, process in processes:
                cpu[kind] = round(cpu.get(kind, 0.0) + process_cpu_s(process.pid) - cpu_before[id(process)], 2)
            stages = server_stages(env)
    finally:
        for _, process in processes:
            stop(process)
        shutil.rmtree(directory, ignore_errors=True)
    result = {
        "pages": args.pages, "calls_per_page": args.calls, "think_ms": args.think_ms, "webs": args.webs, "workers": args.workers,
        "concurrency": args.concurrency, "pool": args.pool,
        "database": "postgresql" if args.database_url else "sqlite", "cpus": os.cpu_count(),
        "calls": len(samples), "errors": len(errors), "wall_s": round(wall_s, 2),
        "calls_per_s": round(len(samples) / wall_s, 1) if wall_s else None,
        "round_trip_ms": {"p50": percentile_ms(samples, 0.5), "p90": percentile_ms(samples, 0.9),
                          "p99": percentile_ms(samples, 0.99), "max": round(max(samples) * 1000, 1),
                          "mean": round(statistics.fmean(samples) * 1000, 1)} if samples else None,
        "cpu_s": {**cpu, "pages (this process)": round(load_cpu_s, 2)},
        "server_stages_ms_p50": stages,
        # Other processes on the machine compete for the same cores: say how busy it was.
        "load_avg_1min": {"before": round(load_avg_before, 1), "after": round(os.getloadavg()[0], 1)},
    }
    print(json.dumps(result, indent=2))
    if errors:
        print("first errors:", errors[:3], file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
