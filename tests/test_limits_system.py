"""Concurrency limits end to end: real web servers, a real Celery worker, simulated workers over HTTP."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, TaskRun, Unit
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.limiter import keys
from mephisto_dist.limiter.units import unit_holder
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.runtime import Runtime
from tests.conftest import wait_for
from tests.system import celery_worker, make_runtime, web_server
from tests.taskdirs import write_task_dir

pytestmark = pytest.mark.system

ACTIVE = (UnitStatus.LAUNCHED.value, UnitStatus.ASSIGNED.value)


@pytest.fixture
def runtime(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url)
    yield rt
    rt.close()


def active_units(rt: Runtime, run_id: int) -> int:
    with transaction(rt.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(Unit).where(
            Unit.task_run_id == run_id, Unit.status.in_(ACTIVE))) or 0)


def provider_data(worker: str, ref: str) -> dict[str, object]:
    return {"provider_data": {"worker_name": worker, "assignment_id": ref,
                              "agent_registration_id": f"{ref}-{worker}", "provider_type": "mock"}}


def test_cap_of_five_with_fifty_workers(tmp_path: Path, runtime: Runtime) -> None:
    cap, units, clients = 5, 60, 50
    task_dir = write_task_dir(tmp_path, rows=units, architect="mock", cap=cap)
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    observed: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            observed.append(active_units(runtime, run_id))
            time.sleep(0.005)

    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web.log") as url:
        enqueue_launch(runtime, run_id)
        wait_for(lambda: active_units(runtime, run_id) == cap, message="the first 5 units to launch")
        sampler = threading.Thread(target=sample)
        sampler.start()
        submits: list[float] = []
        claims: list[float] = []
        in_flight = 0
        most_in_flight = 0

        async def worker(n: int, client: httpx.AsyncClient) -> None:
            nonlocal in_flight, most_in_flight
            attempt = 0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                attempt += 1
                response = await client.post(url + "/request_agent", json=provider_data(f"w{n}", f"h{attempt}"))
                data = response.json()["data"]
                if data["agent_id"] is None:
                    if len(submits) >= units:
                        return
                    await asyncio.sleep(0.01)
                    continue
                claims.append(time.monotonic())
                in_flight += 1
                most_in_flight = max(most_in_flight, in_flight)
                await asyncio.sleep(0.02)  # the worker reads the page
                in_flight -= 1
                done = await client.post(url + "/submit_task", json={
                    "USED_AGENT_ID": data["agent_id"], "final_data": {"rating": "3"}})
                assert done.status_code == 200
                submits.append(time.monotonic())

        async def main() -> None:
            limits = httpx.Limits(max_connections=clients)
            async with httpx.AsyncClient(limits=limits, timeout=30) as client:
                await asyncio.gather(*(worker(n, client) for n in range(clients)))

        try:
            asyncio.run(main())
        finally:
            stop.set()
            sampler.join()

        def completed() -> bool:
            with transaction(runtime.sessions) as session:
                run = session.get(TaskRun, run_id)
                return bool(run and run.is_completed)

        wait_for(completed, message="the run to complete")
    assert len(submits) == units
    assert most_in_flight <= cap
    assert observed and max(observed) <= cap
    # A freed slot goes to a waiting worker at once, not after a polling interval: the gap from a
    # submit to the next claim that followed it.
    gaps = [min(c - s for c in claims if c > s) for s in sorted(submits)[:-cap] if any(c > s for c in claims)]
    assert gaps and statistics.median(gaps) < 1.0, statistics.median(gaps)


def test_per_worker_limits_hold_across_two_web_processes(tmp_path: Path, runtime: Runtime) -> None:
    task_dir = write_task_dir(tmp_path, rows=10, architect="mock", extra_yaml=(
        "    allowed_concurrent: 1\n    maximum_units_per_worker: 3\n"))
    run_id = create_run(runtime, prepare_run(task_dir, "example", [], check_port=False))
    with celery_worker(runtime.settings, tmp_path / "worker.log"), \
            web_server(runtime.settings, run_id, tmp_path / "web1.log") as first, \
            web_server(runtime.settings, run_id, tmp_path / "web2.log") as second:
        enqueue_launch(runtime, run_id)
        wait_for(lambda: active_units(runtime, run_id) == 10, message="10 units launched")

        async def burst(round_: int) -> list[dict[str, object]]:
            async with httpx.AsyncClient(timeout=30) as client:
                responses = await asyncio.gather(*(
                    client.post((first, second)[i % 2] + "/request_agent",
                                json=provider_data("same-worker", f"r{round_}-{i}"))
                    for i in range(12)))
            return [r.json()["data"] for r in responses]

        reasons: set[str] = set()
        for round_ in range(3):
            answers = asyncio.run(burst(round_))
            agents_given = [a["agent_id"] for a in answers if a["agent_id"]]
            assert len(agents_given) == 1, answers
            # The worker's token is the given unit's, and only that: no losing request of the burst
            # (several chose the same unit) gave it back or left its own.
            given = next(a for a in answers if a["agent_id"])
            with transaction(runtime.sessions) as session:
                unit_id = session.scalar(select(Agent.unit_id).where(Agent.id == given["agent_id"]))
            assert runtime.limiter.holders(keys.worker_assigned_pool(run_id, str(given["worker_id"]))) == {
                unit_holder(int(unit_id or 0))}
            reasons |= {str(a["failure_reason"]) for a in answers if not a["agent_id"]}
            done = httpx.post(first + "/submit_task", json={"USED_AGENT_ID": agents_given[0],
                                                           "final_data": {"rating": "1"}})
            assert done.status_code == 200
        assert any("at once" in r for r in reasons), reasons
        final = asyncio.run(burst(9))
        assert not any(a["agent_id"] for a in final)
        assert all("maximum number of units" in str(a["failure_reason"]) for a in final), final
        other = httpx.post(second + "/request_agent", json=provider_data("another-worker", "x")).json()["data"]
        assert other["agent_id"], other


def test_a_redis_flush_mid_run_neither_breaks_the_cap_nor_stalls(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                                 sqlite_url: str, redis_url: str) -> None:

    import redis as redis_lib

    from mephisto_dist.runs.launches import run_pool
    from tests.system import celery_beat

    cap, units = 3, 15
    rt = make_runtime(tmp_path / "data", sqlite_url, redis_url, POOL_RENEW_EVERY_S="0.5", RUN_SWEEP_EVERY_S="0.5")
    settings = rt.settings
    task_dir = write_task_dir(tmp_path, rows=units, architect="mock", cap=cap)
    run_id = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))
    observed: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            observed.append(active_units(rt, run_id))
            time.sleep(0.005)

    done = 0

    def work_one(url: str, n: int) -> bool:
        data = httpx.post(url + "/request_agent", json=provider_data(f"w{n}", "h")).json()["data"]
        if not data["agent_id"]:
            return False
        httpx.post(url + "/submit_task", json={"USED_AGENT_ID": data["agent_id"], "final_data": {}})
        return True

    sampler = threading.Thread(target=sample)
    with celery_worker(settings, tmp_path / "worker.log"), celery_beat(settings, tmp_path / "beat.log"), \
            web_server(settings, run_id, tmp_path / "web.log") as url:
        enqueue_launch(rt, run_id)
        wait_for(lambda: active_units(rt, run_id) == cap, message="the first units to launch")
        sampler.start()
        try:
            n = 0
            while done < 4:
                n += 1
                done += work_one(url, n)
            client = redis_lib.Redis.from_url(redis_url)
            client.flushall()  # the pools and any queued tasks are gone
            wait_for(lambda: rt.limiter.held(run_pool(run_id)) == cap, message="beat to rebuild the pool")
            client.close()
            deadline = time.monotonic() + 60
            while done < units and time.monotonic() < deadline:
                n += 1
                if work_one(url, n):
                    done += 1
                else:
                    time.sleep(0.02)

            def completed() -> bool:
                with transaction(rt.sessions) as session:
                    run = session.get(TaskRun, run_id)
                    return bool(run and run.is_completed)

            wait_for(completed, timeout_s=20, message="the run to complete after the flush")
        finally:
            stop.set()
            if sampler.is_alive():
                sampler.join()
    rt.close()
    assert done == units
    assert observed and max(observed) <= cap, max(observed)


def test_a_cap_removed_then_set_again_counts_every_unit_out_and_holds(
        tmp_path: Path, database_url: str, redis_url: str) -> None:
    """``limits --max-concurrent 0`` then ``--max-concurrent 2`` on a live run: the units launched while it
    was uncapped hold no token, so setting the cap again counts the pool afresh from the database; the
    units out drain and from then on the cap holds with web, Celery and beat all launching."""
    import subprocess
    import sys

    from mephisto_dist.runs.launches import run_pool
    from tests.system import ROOT, celery_beat, child_env
    from tests.test_cap_processes import launch_pressure, run_is_complete, sampler, simulated_workers

    cap, units = 2, 12
    rt = make_runtime(tmp_path / "data", database_url, redis_url, POOL_RENEW_EVERY_S="0.5",
                      RUN_SWEEP_EVERY_S="0.5", LEASE_TTL_S="10")
    task_dir = write_task_dir(tmp_path, rows=units, architect="mock", cap=cap)
    run_id = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))

    def set_cap(value: int) -> str:
        done = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "limits", str(run_id),
                               "--max-concurrent", str(value)], cwd=ROOT, env=child_env(rt.settings),
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run_done = threading.Event()
    submitted: list[int] = []
    with celery_worker(rt.settings, tmp_path / "worker.log"), celery_beat(rt.settings, tmp_path / "beat.log"), \
            web_server(rt.settings, run_id, tmp_path / "web.log") as url:
        enqueue_launch(rt, run_id)
        wait_for(lambda: active_units(rt, run_id) == cap, timeout_s=30, message="the first units to launch")
        set_cap(0)
        wait_for(lambda: active_units(rt, run_id) == units, timeout_s=30, message="every unit launched uncapped")
        shown = set_cap(cap)
        # Every unit out holds a token again, the ones launched uncapped too.
        assert rt.limiter.held(run_pool(run_id)) == units
        assert f"{units} units are out, none launches until fewer than {cap} are" in shown, shown
        with sampler(rt, run_id, tmp_path / "samples.txt") as samples:
            pressure = threading.Thread(target=launch_pressure, args=(rt, run_id, run_done), daemon=True)
            pressure.start()
            clients = threading.Thread(target=lambda: asyncio.run(simulated_workers([url], run_done, submitted)),
                                       daemon=True)
            clients.start()
            try:
                wait_for(lambda: run_is_complete(rt, run_id), timeout_s=120, message="the run to complete")
            finally:
                run_done.set()
                clients.join(30)
                pressure.join(5)
    rt.close()
    assert len(submitted) == units
    # The pool gives a token back just after the database write that ends its unit, so it drains a
    # moment after the units do.
    drained = next(i for i, s in enumerate(samples) if s.active <= cap and s.held <= cap)
    assert max(s.active for s in samples[drained:]) <= cap, max(s.active for s in samples[drained:])
    assert max(s.held for s in samples[drained:]) <= cap, max(s.held for s in samples[drained:])
    print(f"\n[{database_url.split(':')[0]}] cap removed and set again: {len(samples)} samples, max "
          f"launched+assigned {max(s.active for s in samples[drained:])}/{cap} once drained")


def test_the_cap_holds_while_beat_is_down_longer_than_the_lease(
        tmp_path: Path, database_url: str, redis_url: str) -> None:
    """Beat renews the pool's leases; with it down, the leases of units still out run out. A lapsed
    lease is not a free slot: the next acquire recounts the pool from the database, and a sampler never
    sees more than the cap out while web and Celery keep launching and workers keep submitting."""
    from mephisto_dist.providers.mock import MockProvider
    from mephisto_dist.runs.launches import LaunchContext, pools_for, rebuild_pool, run_pool
    from tests.system import register
    from tests.test_cap_processes import completed_count, launch_pressure, sampler, simulated_workers

    cap, units = 3, 20
    rt = make_runtime(tmp_path / "data", database_url, redis_url, LEASE_TTL_S="2", RUN_SWEEP_EVERY_S="0.5")
    task_dir = write_task_dir(tmp_path, rows=units, architect="mock", cap=cap)
    run_id = create_run(rt, prepare_run(task_dir, "example", [], check_port=False))
    pool = run_pool(run_id)
    run_done = threading.Event()
    submitted: list[int] = []
    with celery_worker(rt.settings, tmp_path / "worker.log"), web_server(rt.settings, run_id, tmp_path / "web.log") as url:
        enqueue_launch(rt, run_id)  # no beat process at all
        wait_for(lambda: active_units(rt, run_id) == cap, timeout_s=30, message="the first units to launch")
        held = [register(url, f"slow{n}") for n in range(cap)]
        assert all(agent["agent_id"] for agent in held), held
        wait_for(lambda: rt.limiter.held(pool) == 0, timeout_s=30, message="the leases to run out, beat down")
        # Three units are still assigned: a launcher is not given a fourth slot, but a recount.
        pools = pools_for(LaunchContext.of(rt, MockProvider()), run_id, cap)
        assert rt.limiter.acquire("launch:probe", pools).lost_pool == pool
        rebuild_pool(rt.sessions, rt.limiter, pool, rt.settings.lease_ttl_s)
        assert rt.limiter.acquire("launch:probe", pools).refused_pool == pool
        assert rt.limiter.held(pool) == cap
        with sampler(rt, run_id, tmp_path / "samples.txt") as samples:
            pressure = threading.Thread(target=launch_pressure, args=(rt, run_id, run_done), daemon=True)
            pressure.start()
            clients = threading.Thread(target=lambda: asyncio.run(simulated_workers([url], run_done, submitted)),
                                       daemon=True)
            clients.start()
            try:
                for agent in held:
                    done = httpx.post(url + "/submit_task", json={"USED_AGENT_ID": agent["agent_id"],
                                                                 "final_data": {"rating": "1"}})
                    assert done.status_code == 200, done.text
                wait_for(lambda: completed_count(rt, run_id) == units, timeout_s=120, message="every unit submitted")
            finally:
                run_done.set()
                clients.join(30)
                pressure.join(5)
    rt.close()
    most = max(s.active for s in samples)
    print(f"\n[{database_url.split(':')[0]}] beat down, lease 2 s: {len(samples)} samples, max launched+assigned "
          f"{most}/{cap}")
    assert most <= cap, most
