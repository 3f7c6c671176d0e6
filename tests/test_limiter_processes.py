"""The Redis limiter under real processes, crashes, lost data and a missing server (Redis only)."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import wait_for
from limiter_fixtures import PrivateRedis, churn, hold

from mephisto_dist.errors import ServiceError
from mephisto_dist.limiter import PoolLimit, keys
from mephisto_dist.limiter.redis_pool import RedisLimiter, RedisRateBucket

pytestmark = pytest.mark.system

SPAWN = multiprocessing.get_context("spawn")
PROCESSES = 8
ATTEMPTS_PER_PROCESS = 1_250
CAP = 3


@pytest.fixture
def limiter(redis_client: redis.Redis) -> RedisLimiter:
    return RedisLimiter(redis_client)


@pytest.fixture
def children() -> Iterator[list[multiprocessing.process.BaseProcess]]:
    """Processes a test starts; whatever is still alive at the end is killed."""
    started: list[multiprocessing.process.BaseProcess] = []
    yield started
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(10)


def test_cap_holds_under_contention(
    redis_url: str, limiter: RedisLimiter, redis_client: redis.Redis,
    children: list[multiprocessing.process.BaseProcess],
) -> None:
    start = SPAWN.Event()
    results = SPAWN.Queue()
    for index in range(PROCESSES):
        process = SPAWN.Process(
            target=churn,
            args=(redis_url, "run:1:units", CAP, index, ATTEMPTS_PER_PROCESS, "held-counter", start, results),
        )
        process.start()
        children.append(process)
    start.set()

    # Sample the pool from outside for as long as the children churn.
    samples: list[int] = []
    while any(process.is_alive() for process in children) and len(samples) < 1_000_000:
        samples.append(limiter.held("run:1:units"))
    reports = [results.get(timeout=30) for _ in children]
    for child in children:
        child.join(10)
        assert child.exitcode == 0

    successes = sum(report[1] for report in reports)
    assert PROCESSES * ATTEMPTS_PER_PROCESS >= 10_000
    assert 0 < successes < PROCESSES * ATTEMPTS_PER_PROCESS  # the cap did refuse some
    assert max(report[2] for report in reports) <= CAP
    assert sum(report[3] for report in reports) == 0
    assert len(samples) > 10 and max(samples) <= CAP
    assert limiter.held("run:1:units") == 0
    assert int(redis_client.get("held-counter") or 0) == 0


def test_a_killed_holder_frees_its_token_within_the_lease(
    redis_url: str, limiter: RedisLimiter, children: list[multiprocessing.process.BaseProcess],
) -> None:
    lease_s = 1.0
    pool = PoolLimit("run:2:units", 2, lease_s)
    survivor_ready, survivor_stop = SPAWN.Event(), SPAWN.Event()
    victim_ready, victim_stop = SPAWN.Event(), SPAWN.Event()  # referenced until the child has them
    survivor = SPAWN.Process(
        target=hold, args=(redis_url, pool.pool, pool.cap, "unit:survivor", lease_s, 0.2,
                           survivor_ready, survivor_stop),
    )
    survivor.start()
    children.append(survivor)
    assert survivor_ready.wait(30)
    # The victim takes its token after the survivor, so once the victim's lease has run out the
    # survivor's first lease has too: finding the survivor still there proves its renewals count.
    victim = SPAWN.Process(
        target=hold, args=(redis_url, pool.pool, pool.cap, "unit:victim", lease_s, None,
                           victim_ready, victim_stop),
    )
    victim.start()
    children.append(victim)
    assert victim_ready.wait(30)
    assert limiter.acquire("unit:third", [pool]).ok is False

    os.kill(victim.pid or 0, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: limiter.acquire("unit:third", [pool]).ok, timeout_s=lease_s + 1.0,
             message="the killed holder's token to come back")
    assert time.monotonic() - killed_at <= lease_s + 1.0
    assert limiter.holders(pool.pool) == {"unit:survivor", "unit:third"}

    survivor_stop.set()
    survivor.join(10)
    assert survivor.exitcode == 0
    assert limiter.holders(pool.pool) == {"unit:third"}


def test_reconcile_restores_a_flushed_pool(
    redis_url: str, limiter: RedisLimiter, redis_client: redis.Redis,
    children: list[multiprocessing.process.BaseProcess],
) -> None:
    pool, cap = "run:3:units", PROCESSES
    stop, results = SPAWN.Event(), SPAWN.Queue()
    readies = []
    for index in range(PROCESSES):
        ready = SPAWN.Event()
        process = SPAWN.Process(
            target=hold, args=(redis_url, pool, cap, f"unit:{index}", 30.0, None, ready, stop, results),
        )
        process.start()
        children.append(process)
        readies.append(ready)
    assert all(ready.wait(30) for ready in readies)
    known = {f"unit:{index}" for index in range(PROCESSES)}  # what the database says is live
    assert limiter.holders(pool) == known

    redis_client.flushall()
    assert limiter.held(pool) == 0
    assert limiter.acquire("unit:intruder", [PoolLimit(pool, cap, 30.0)]).ok  # the cap is blind now
    assert limiter.reconcile(pool, known, 30.0) == PROCESSES
    assert limiter.holders(pool) == known
    assert limiter.acquire("unit:late", [PoolLimit(pool, cap, 30.0)]).ok is False

    stop.set()
    reports = dict(results.get(timeout=30) for _ in children)
    assert reports == dict.fromkeys(known, 1)
    assert limiter.held(pool) == 0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    # A short directory: unix socket paths are limited to about 100 bytes.
    server = PrivateRedis(tmp_path)
    server.start()
    wait_for(server.pings, message="the private redis-server to start")
    yield server
    server.stop()


def test_a_missing_server_is_a_service_error(private_redis: PrivateRedis) -> None:
    limiter = RedisLimiter.from_url(private_redis.url)
    bucket = RedisRateBucket.from_url(private_redis.url)
    assert limiter.acquire("unit:1", [PoolLimit("run", 1, 30.0)]).ok
    private_redis.stop()
    calls: list[Callable[[], object]] = [
        lambda: limiter.acquire("unit:2", [PoolLimit("run", 1, 30.0)]),
        lambda: limiter.release("unit:1", ["run"]),
        lambda: limiter.renew("run", ["unit:1"], 30.0),
        lambda: limiter.held("run"),
        lambda: limiter.reconcile("run", ["unit:1"], 30.0),
        lambda: limiter.get_cap("run"),
        lambda: limiter.set_cap("run", 3),
        lambda: bucket.take("mturk", 5.0, 5),
    ]
    for call in calls:
        with pytest.raises(ServiceError, match=re.escape(f"Redis at {private_redis.url} is not answering")):
            call()

    # After a restart the server has lost pools and scripts alike; reconcile rebuilds the pool and
    # the scripts are loaded again on first use.
    private_redis.start()
    wait_for(private_redis.pings, message="the private redis-server to restart")
    assert limiter.held("run") == 0
    assert limiter.reconcile("run", ["unit:1"], 30.0) == 1
    assert limiter.acquire("unit:2", [PoolLimit("run", 1, 30.0)]).refused_pool == "run"
    assert bucket.take("mturk", 5.0, 5) == 0.0


def test_keys_follow_the_schema(limiter: RedisLimiter, redis_client: redis.Redis) -> None:
    limiter.acquire("unit:1", [PoolLimit("leased", 0, 30.0), PoolLimit("forever", 0, None)])
    limiter.acquire("unit:2", [PoolLimit("leased", 0, 5.0)])
    limiter.set_cap("leased", 7)
    RedisRateBucket(redis_client).take("mturk", 2.0, 10)

    leased, forever = keys.pool_key("leased"), keys.pool_key("forever")
    # Only the limiter's namespace: processes of other tests may still be winding down on this server.
    assert sorted(redis_client.keys(keys.PREFIX + ":*")) == sorted(
        key.encode() for key in [leased, forever, keys.cap_key("leased"), keys.rate_key("mturk")]
    )
    assert redis_client.type(leased) == b"zset" and redis_client.type(keys.rate_key("mturk")) == b"hash"
    # The latest lease, not the last one given (5 s); the expiry is the lease's end rounded up to the next ms.
    assert 20_000 < redis_client.pttl(leased) <= 30_001
    assert redis_client.pttl(forever) == -1
    assert redis_client.pttl(keys.cap_key("leased")) == -1
    assert 4_000 < redis_client.pttl(keys.rate_key("mturk")) <= 6_000  # 10 tokens at 2/s, + 1 s
    assert redis_client.get(keys.cap_key("leased")) == b"7"

    assert limiter.release("unit:1", ["leased", "forever"]) == 2
    assert redis_client.exists(forever) == 0  # Redis drops an emptied pool


def test_pool_names_cannot_forge_each_other() -> None:
    assert keys.worker_task_units_pool("a:worker:b", "c") != keys.worker_task_units_pool("a", "b:worker:c")
    assert keys.run_units_pool(12) == "run:12:units"
    assert keys.pool_key("x") != keys.cap_key("x")
