"""What the same service functions cost called directly and called the way the web calls them: handed by
``asyncio`` tasks to ``web.hot_threads.HotThreads`` (no HTTP). The gap is what running them on the hot
threads, interleaved with an event loop and with each other, costs (``profile-hot-path.md``).

    python benchmarks/hot_threads.py [--units 3000] [--mode pool|direct|thread|two] [--size 2]
                                     [--concurrency 20] [--cap 0] [--spare-after-ms MS]

- ``direct``: ``hot_path.py``'s loop on the main thread; ``thread``: the same on one other thread;
  ``two``: two threads, each its own loop over half the units (each its own SQLite connection);
- ``pool``: ``--concurrency`` asyncio tasks, each handing request_agent then submit_task to a
  ``HotThreads`` of ``--size`` threads holding their connections (as the web's).

Printed: the process's CPU per unit, wall per unit, and for ``pool`` the CPU of the jobs themselves
(``time.thread_time`` around each) and of the event loop's thread. SQLite and a private Redis, on the
example static task, as ``hot_path.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hot_path import _start_redis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=3000)
    parser.add_argument("--mode", choices=["pool", "direct", "thread", "two"], default="pool")
    parser.add_argument("--size", type=int, default=2, help="hot threads (pool)")
    parser.add_argument("--concurrency", type=int, default=20, help="asyncio tasks (pool)")
    parser.add_argument("--cap", type=int, default=0, help="the run's max_num_concurrent_units")
    parser.add_argument("--spare-after-ms", type=float, default=None,
                        help="threads past the first are spares (pool; the web's on SQLite: 50)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hot-threads-"))
    server, redis_url = _start_redis(folder)
    try:
        os.environ.update({"MEPHISTO_DIST_DATA_DIR": str(folder / "data"),
                           "MEPHISTO_DIST_DATABASE_URL": f"sqlite:///{folder / 'db.sqlite'}",
                           "MEPHISTO_DIST_REDIS_URL": redis_url})
        print(measure(args, folder))
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def measure(args: argparse.Namespace, folder: Path) -> str:
    from mephisto_dist.db.engine import holding_connections
    from mephisto_dist.db.migrate import upgrade
    from mephisto_dist.runs.launches import LaunchContext, launch_units
    from mephisto_dist.runs.preparation import create_run, prepare_run
    from mephisto_dist.runs.stopping import run_provider
    from mephisto_dist.runtime import Runtime
    from mephisto_dist.settings import load_settings
    from mephisto_dist.web.hot_threads import HotThreads
    from mephisto_dist.work import registration, submissions
    from mephisto_dist.work.claims import Registration
    from mephisto_dist.work.served import Served

    task_dir = folder / "task"
    shutil.copytree(ROOT / "examples" / "simple_static_task", task_dir)
    (task_dir / "data.csv").write_text("\n".join(["text"] + [f"sentence {i}" for i in range(args.units)]) + "\n")
    runtime = Runtime(load_settings())
    upgrade(runtime.engine)
    overrides = ["mephisto.architect.port=3999"] + ([f"mephisto.task.max_num_concurrent_units={args.cap}"]
                                                     if args.cap else [])
    run_id = create_run(runtime, prepare_run(task_dir, "example", overrides, check_port=False))
    launch_units(runtime.sessions, LaunchContext.of(runtime, run_provider(runtime, run_id)), run_id,
                 now=datetime.now(UTC))
    served = Served.for_runtime(runtime, run_id=run_id)
    served.run()

    def registration_of(i: int) -> Registration:
        worker = f"w{i}"
        return Registration(worker, f"a{i}-{worker}", {"worker_name": worker, "agent_registration_id": f"a{i}-{worker}",
                                                       "assignment_id": f"a{i}", "provider_type": "mock"})

    def cycle(i: int) -> None:
        details = registration.request_agent(served, registration_of(i))
        assert details.agent_id, details.failure_reason
        submissions.submit_task(served, details.agent_id, {"rating": "good"})

    def loop(first: int, last: int) -> None:
        with holding_connections():
            for i in range(first, last):
                cycle(i)

    jobs_cpu: dict[int, float] = {}

    def timed(work: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            began = time.thread_time()
            try:
                return work()
            finally:
                ident = threading.get_ident()
                jobs_cpu[ident] = jobs_cpu.get(ident, 0.0) + time.thread_time() - began
        return run

    async def pool_run() -> None:
        spare_after_s = None if args.spare_after_ms is None else args.spare_after_ms / 1000
        pool = HotThreads(args.size, around=holding_connections, spare_after_s=spare_after_s)
        numbers = iter(range(args.units))

        async def worker() -> None:
            for i in numbers:
                reg = registration_of(i)
                details = await pool.run(timed(lambda reg=reg: registration.request_agent(served, reg)))
                assert details.agent_id, details.failure_reason
                await pool.run(timed(lambda d=details: submissions.submit_task(served, d.agent_id, {"rating": "good"})))
        await asyncio.gather(*[worker() for _ in range(args.concurrency)])

    cpu, wall, loop_cpu = time.process_time(), time.perf_counter(), time.thread_time()
    if args.mode == "direct":
        loop(0, args.units)
    elif args.mode in ("thread", "two"):
        halves = [(0, args.units)] if args.mode == "thread" else [(0, args.units // 2), (args.units // 2, args.units)]
        threads = [threading.Thread(target=loop, args=half) for half in halves]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        asyncio.run(pool_run())
    cpu, wall, loop_cpu = time.process_time() - cpu, time.perf_counter() - wall, time.thread_time() - loop_cpu
    runtime.close()
    line = (f"{args.mode} ({args.units} units): CPU {1000 * cpu / args.units:.3f} ms a unit, "
            f"wall {1000 * wall / args.units:.3f} ms")
    if args.mode == "pool":
        line += (f"; size {args.size}, {args.concurrency} tasks: the jobs' own CPU "
                 f"{1000 * sum(jobs_cpu.values()) / args.units:.3f} ms, the event loop's "
                 f"{1000 * loop_cpu / args.units:.3f} ms")
    return line


if __name__ == "__main__":
    main()
