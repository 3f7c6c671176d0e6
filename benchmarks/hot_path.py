"""Where a unit's web CPU goes, without HTTP: the service functions behind ``/request_agent`` and
``/submit_task`` called in a loop, in this process, on a run created and launched the way ``mephisto-dist
run`` does it (``examples/simple_static_task``'s config, the mock provider).

    python benchmarks/hot_path.py [--units 2000] [--cap 0] [--database-url URL] [--redis-url URL]
                                  [--profile FILE] [--statements] [--workers N]

Printed: CPU (this process, user + system) per unit for the whole cycle and for each call, wall time per
unit, and with ``--statements`` the SQL statements and transactions per unit (counted by SQLAlchemy's
events). ``--profile FILE`` writes a cProfile of the loop. The difference between this figure and the web
process's CPU per unit in ``throughput.py`` is what HTTP costs (uvicorn, Starlette, the thread hand-off).

Defaults: a temporary SQLite database and a private Redis (``redis-server`` on PATH). With
``--database-url postgresql://...`` a fresh schema of that database is used and dropped afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    socket = folder / "redis.sock"
    server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(socket), "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    return server, f"unix://{socket}"


def _pg_schema_url(url: str) -> tuple[str, str]:
    schema = f"hot_{uuid.uuid4().hex[:8]}"
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}", schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--cap", type=int, default=0)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--profile")
    parser.add_argument("--statements", action="store_true")
    parser.add_argument("--workers", type=int, default=0,
                        help="how many workers take the units in turn (0: a new worker for every unit)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="hot-path-"))
    redis_server = None
    schema = None
    try:
        redis_url = args.redis_url
        if redis_url is None:
            redis_server, redis_url = _start_redis(folder)
        database_url = args.database_url or f"sqlite:///{folder / 'db.sqlite'}"
        if database_url.startswith("postgresql"):
            database_url, schema = _pg_schema_url(database_url)
        os.environ.update({"MEPHISTO_DIST_DATA_DIR": str(folder / "data"), "MEPHISTO_DIST_DATABASE_URL": database_url,
                           "MEPHISTO_DIST_REDIS_URL": redis_url})
        result = run(args, folder)
    finally:
        if redis_server is not None:
            redis_server.terminate()
            redis_server.wait(10)
        if schema is not None and args.database_url:
            import sqlalchemy

            engine = sqlalchemy.create_engine(args.database_url)
            with engine.begin() as connection:
                connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)
    for line in result:
        print(line)


def run(args: argparse.Namespace, folder: Path) -> list[str]:
    from sqlalchemy import event

    from mephisto_dist.db.migrate import upgrade
    from mephisto_dist.runs.launches import LaunchContext, launch_units
    from mephisto_dist.runs.preparation import create_run, prepare_run
    from mephisto_dist.runs.stopping import run_provider
    from mephisto_dist.runtime import Runtime
    from mephisto_dist.settings import load_settings
    from mephisto_dist.work import registration, submissions
    from mephisto_dist.work.claims import Registration
    from mephisto_dist.work.served import Served

    task_dir = folder / "task"
    shutil.copytree(ROOT / "examples" / "simple_static_task", task_dir)
    rows = ["text"] + [f"sentence {i}" for i in range(args.units)]
    (task_dir / "data.csv").write_text("\n".join(rows) + "\n")
    runtime = Runtime(load_settings())
    upgrade(runtime.engine)
    overrides = ["mephisto.architect.port=3999"] + ([f"mephisto.task.max_num_concurrent_units={args.cap}"]
                                                     if args.cap else [])
    run_id = create_run(runtime, prepare_run(task_dir, "example", overrides, check_port=False))
    provider = run_provider(runtime, run_id)
    launch_units(runtime.sessions, LaunchContext.of(runtime, provider), run_id, now=_now())
    served = Served.for_runtime(runtime, run_id=run_id)
    served.run()

    counts: Counter[str] = Counter()
    if args.statements:
        @event.listens_for(runtime.engine, "before_cursor_execute")
        def _statement(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            counts[statement.split()[0].upper()] += 1

    def cycle(i: int) -> tuple[float, float]:
        worker = f"w{i % args.workers}" if args.workers else f"w{i}"
        reg = Registration(worker, f"a{i}-{worker}", {"worker_name": worker, "agent_registration_id": f"a{i}-{worker}",
                                                      "assignment_id": f"a{i}", "provider_type": "mock"})
        started = time.process_time()
        details = registration.request_agent(served, reg)
        middle = time.process_time()
        assert details.agent_id, details.failure_reason
        submissions.submit_task(served, details.agent_id, {"rating": "good", "comment": ""})
        return middle - started, time.process_time() - middle

    # As the web's hot-path threads run them: on connections held from one transaction to the next.
    from mephisto_dist.db.engine import holding_connections

    holding = holding_connections()
    holding.__enter__()
    warm = min(50, args.units // 10)
    for i in range(warm):
        cycle(i)
    counts.clear()
    profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not wall
    request_cpu = submit_cpu = 0.0
    wall = time.perf_counter()
    cpu = time.process_time()
    if profiler:
        profiler.enable()
    for i in range(warm, args.units):
        a, b = cycle(i)
        request_cpu += a
        submit_cpu += b
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    holding.__exit__(None, None, None)
    n = args.units - warm
    runtime.close()
    workers = f"{args.workers} workers" if args.workers else "a new worker for each unit"
    lines = [f"{n} units, cap {args.cap or 'none'}, {runtime.engine.dialect.name}, {workers}",
             (f"  CPU per unit      {1000 * cpu / n:.3f} ms (request_agent {1000 * request_cpu / n:.3f}, "
             f"submit_task {1000 * submit_cpu / n:.3f})"),
             f"  wall per unit     {1000 * wall / n:.3f} ms"]
    if args.statements:
        total = sum(counts.values())
        lines.append(f"  statements/unit   {total / n:.2f}: " +
                     ", ".join(f"{kind} {count / n:.2f}" for kind, count in counts.most_common()))
    return lines


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


if __name__ == "__main__":
    main()
