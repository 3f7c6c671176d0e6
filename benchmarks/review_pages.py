"""The review app with a large run (issue 22): every page kind's p50 / p99, and how long a bulk approval
of 1,000 units takes to answer. By hand, not a test.

    python -m compileall -q mephisto_dist
    python benchmarks/review_pages.py [--database sqlite|postgresql|URL] [--units 10000] [--workers 200]
                                      [--requests 30] [--approve 1000] [--json out.json]

It makes a run of ``--units`` units directly in a fresh database (SQLite in a temporary data directory,
or PostgreSQL at ``MEPHISTO_DIST_TEST_PG_URL`` / postgresql://postgres@127.0.0.1:5432/test in a schema
of its own, dropped at the end): the run, its assignments and units as ``mephisto-dist run`` makes them,
then workers and agents written in bulk and every unit submitted (``completed``), one worker holding
``--approve`` units and the others sharing the rest. It starts a private ``redis-server`` (a unix
socket), one Celery worker (the Procfile's ``worker``, concurrency 1) and ``mephisto-dist review-app``
on them, signs in, and asks each page ``--requests`` times in turn, one request at a time. Then it
approves the heavy worker's units (our page's "approve all of a worker's units" form) and, through
Mephisto's API, ``--approve`` units of others, timing each POST until it answers; the Celery worker
decides them (how long until both batches are finished is printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mephisto_dist.db.engine import make_engine, make_sessionmaker, transaction
from mephisto_dist.db.migrate import upgrade
from mephisto_dist.db.models import Agent, TaskRun, Unit, Worker
from mephisto_dist.runs.task_runs import NewRun, create_task_run

PG_URL = os.environ.get("MEPHISTO_DIST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REVIEWER = ("bench", "a-long-benchmark-password")


def database(kind: str, data_dir: Path) -> tuple[str, Callable[[], None]]:
    """The database URL to use, and how to clean it up."""
    if kind == "sqlite":
        return f"sqlite:///{data_dir / 'bench.db'}", lambda: None
    base = PG_URL if kind == "postgresql" else kind
    schema = f"bench_review_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), drop


def make_run(url: str, *, units: int, workers: int, heavy: int) -> dict[str, Any]:
    """The run, submitted by ``workers`` workers; worker 0 holds ``heavy`` units."""
    engine = make_engine(url)
    upgrade(engine)
    factory = make_sessionmaker(engine)
    t0 = datetime.now(UTC) - timedelta(hours=3)
    new = NewRun(task_name="bench-review", blueprint_type="static_task", architect_type="mock",
                 provider_type="mock", requester_name="mock_requester", sandbox=True,
                 config={"task": {"task_name": "bench-review"}, "architect": {}, "provider": {}, "blueprint": {}},
                 task_dir="/nonexistent", build_dir="/nonexistent", server_url="http://localhost:3000",
                 max_concurrent_units=0, units_per_assignment=1, pay_amount=0.5,
                 assignment_data=[{"sentence": f"sentence number {i}", "html": "task.html"} for i in range(units)])
    started = time.monotonic()
    with transaction(factory) as session:
        run_id = create_task_run(session, new, now=t0)
    with transaction(factory) as session:
        task_id = session.scalar(select(TaskRun.task_id).where(TaskRun.id == run_id))
        session.execute(insert(Worker), [{"provider_type": "mock", "worker_name": f"worker-{w:04d}",
                                          "created_at": t0} for w in range(workers)])
        worker_ids = list(session.scalars(select(Worker.id).order_by(Worker.id)))
        rows = session.execute(select(Unit.id, Unit.assignment_id).where(Unit.task_run_id == run_id)
                               .order_by(Unit.id)).all()
        agents, changes = [], []
        for i, (unit_id, assignment_id) in enumerate(rows):
            worker_id = worker_ids[0] if i < heavy else worker_ids[1 + (i - heavy) % (workers - 1)]
            assigned = t0 + timedelta(seconds=1 + i)
            submitted = assigned + timedelta(seconds=30 + i % 90)
            agent_id = uuid.uuid4().hex
            agents.append({"id": agent_id, "unit_id": unit_id, "assignment_id": assignment_id, "task_run_id": run_id,
                           "worker_id": worker_id, "registration_id": f"{assignment_id}-{worker_id}",
                           "status": "completed", "provider_data": {"worker_name": f"w{worker_id}"},
                           "init_data": {}, "outputs": {"rating": str(i % 5 + 1), "comment": f"answer {i}"},
                           "task_metadata": None, "created_at": assigned, "status_changed_at": submitted,
                           "submitted_at": submitted})
            changes.append({"b_id": unit_id, "b_worker": worker_id, "b_agent": agent_id, "b_launched": t0,
                            "b_assigned": assigned, "b_completed": submitted})
        session.execute(insert(Agent), agents)
        session.connection().execute(
            update(Unit).where(Unit.id == _bind("b_id")).values(
                status="completed", worker_id=_bind("b_worker"), agent_id=_bind("b_agent"),
                launched_at=_bind("b_launched"), assigned_at=_bind("b_assigned"), completed_at=_bind("b_completed"),
                status_changed_at=_bind("b_completed")), changes)
        heavy_units = [unit_id for unit_id, _ in rows[:heavy]]
        other_units = [unit_id for unit_id, _ in rows[heavy:]]
    print(f"made run {run_id}: {units} units by {workers} workers in {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    engine.dispose()
    return {"run_id": run_id, "task_id": task_id, "heavy_worker": worker_ids[0], "other_worker": worker_ids[1],
            "heavy_units": heavy_units, "other_units": other_units}


def _bind(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name)


def start_redis(data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    socket = data_dir / "redis.sock"
    process = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(socket), "--unixsocketperm",
                                "700", "--save", "", "--appendonly", "no", "--dir", str(data_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not socket.exists():
        if time.monotonic() > deadline:
            raise SystemExit("redis-server did not start")
        time.sleep(0.05)
    return f"unix://{socket}", process


def app_env(url: str, data_dir: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update(MEPHISTO_DIST_DATA_DIR=str(data_dir), MEPHISTO_DIST_DATABASE_URL=url, MEPHISTO_DIST_REDIS_URL=redis_url,
               MEPHISTO_DIST_REVIEW_USERS=":".join(REVIEWER), MEPHISTO_DIST_REVIEW_SECRET="b" * 40,
               PYTHONPATH=str(REPO))
    return env


def start_worker(env: dict[str, str], data_dir: Path) -> subprocess.Popen[bytes]:
    log_path = data_dir / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "mephisto_dist.celery.worker", "worker",
                                    "--concurrency", "1", "--loglevel", "INFO", "--without-gossip",
                                    "--without-mingle", "--prefetch-multiplier", "1"],
                                   cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while b"ready." not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the Celery worker did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    return process


def start_app(env: dict[str, str], data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    log = (data_dir / "review-app.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "mephisto_dist.cli.app", "review-app", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"the review app did not answer; see {data_dir / 'review-app.log'}")


def stop(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not ended in 30 s (a Celery worker's warm shutdown may be finishing
    the provider calls of the batches)."""
    child.terminate()
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=30)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="sqlite")
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--approve", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-review-") as scratch:
        data_dir = Path(scratch)
        url, drop = database(args.database, data_dir)
        try:
            made = make_run(url, units=args.units, workers=args.workers, heavy=args.approve)
            results = measure(url, data_dir, made, args)
        finally:
            drop()
    results.update(database=args.database, units=args.units, workers=args.workers, requests=args.requests,
                   load_average_at_end=os.getloadavg())
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def measure(url: str, data_dir: Path, made: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    redis_url, redis_process = start_redis(data_dir)
    env = app_env(url, data_dir, redis_url)
    worker = start_worker(env, data_dir)
    process = start_app(env, data_dir, port)
    base = f"http://127.0.0.1:{port}"
    run_id, task_id = made["run_id"], made["task_id"]
    one_unit = made["other_units"][0]
    worker_units = made["other_units"][: args.units // args.workers]
    pages = {
        "runs list /": "/",
        "run page /runs/R": f"/runs/{run_id}",
        "run live part /runs/R/live": f"/runs/{run_id}/live",
        "units by worker /runs/R/review": f"/runs/{run_id}/review",
        "workers /workers": "/workers",
        "a worker's approve preview": f"/runs/{run_id}/workers/{made['other_worker']}/approve",
        "unit detail /units/U": f"/units/{one_unit}",
        "api tasks": "/api/tasks",
        "api task": f"/api/tasks/{task_id}",
        "api worker-units-ids": f"/api/tasks/{task_id}/worker-units-ids",
        "api units (one worker's)": f"/api/units?task_id={task_id}&unit_ids={','.join(map(str, worker_units))}",
        "api units/details": f"/api/units/details?unit_ids={one_unit}",
        "api review-stats (task)": f"/api/review-stats?task_id={task_id}",
        "api review-stats (worker)": f"/api/review-stats?task_id={task_id}&worker_id={made['other_worker']}",
        "api qualifications": "/api/qualifications",
        "api worker qualifications": f"/api/workers/{made['other_worker']}/qualifications",
        "api review.html": f"/api/units/{one_unit}/review.html",
    }
    timings: dict[str, list[float]] = {name: [] for name in pages}
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            client.post("/login", data={"reviewer": REVIEWER[0], "password": REVIEWER[1], "next": "/"})
            for name, path in pages.items():  # once each, unmeasured: the app's first use of each path
                answer = client.get(path)
                if answer.status_code != 200:
                    raise SystemExit(f"{name}: {path} answered {answer.status_code}: {answer.text[:300]}")
            for _ in range(args.requests):
                for name, path in pages.items():
                    started = time.perf_counter()
                    client.get(path).raise_for_status()
                    timings[name].append(time.perf_counter() - started)
            page = client.get(f"/runs/{run_id}/workers/{made['heavy_worker']}/approve")
            csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            started = time.perf_counter()
            answer = client.post(f"/runs/{run_id}/workers/{made['heavy_worker']}/approve",
                                 data={"csrf": csrf, "reason": ""})
            form_s = time.perf_counter() - started
            assert answer.status_code == 303, (answer.status_code, answer.text[:300])
            batch_url = answer.headers["location"]
            ids = made["other_units"][: args.approve]
            started = time.perf_counter()
            api = client.post("/api/units/approve", json={"unit_ids": ids}, headers={"Origin": base})
            api_s = time.perf_counter() - started
            assert api.status_code == 200 and "batch_id" in api.json(), (api.status_code, api.text[:300])
            started = time.perf_counter()
            for url_of_batch in (batch_url, f"/batches/{api.json()['batch_id']}"):
                while "data-finished=\"true\"" not in client.get(url_of_batch).text:
                    time.sleep(0.5)
            worked_s = time.perf_counter() - started
    finally:
        for child in (process, worker, redis_process):
            stop(child)
    print(f"{'page':40} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    summary = {}
    for name, values in timings.items():
        p50, p99 = statistics.median(values) * 1000, percentile(values, 99) * 1000
        summary[name] = {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "max_ms": round(max(values) * 1000, 1)}
        print(f"{name:40} {p50:8.1f} {p99:8.1f} {max(values) * 1000:8.1f}")
    print(f"approve {args.approve} units of one worker (our form): the POST answered in {form_s * 1000:.0f} ms; "
          f"both batches were worked {worked_s:.1f} s after the API's POST")
    print(f"approve {len(ids)} units through Mephisto's API: the POST answered in {api_s * 1000:.0f} ms")
    return {"pages": summary, "approve_form_ms": round(form_s * 1000, 1), "approve_api_ms": round(api_s * 1000, 1),
            "first_batch_done_s_after": round(worked_s, 1)}


if __name__ == "__main__":
    main()
