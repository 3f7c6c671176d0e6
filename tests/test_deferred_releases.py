"""Token releases no request waits for, given back in batches by one thread (``limiter.deferred``), on a real
Redis: every unit queued is given back, in far fewer Redis calls than units, what is queued when the
process stops is given back before it does, and a Redis outage loses one batch to beat's repair, not the
thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
import redis

from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.limiter import PoolLimit, keys
from mephisto_dist.limiter.deferred import DeferredReleases
from mephisto_dist.limiter.redis_pool import RedisLimiter
from mephisto_dist.limiter.units import UnitTokens, token_holder, unit_holder
from tests.conftest import wait_for

RUN_ID = 7
TASK = "deferred-task"


@pytest.fixture
def limiter(redis_url: str) -> Iterator[RedisLimiter]:
    client = redis.Redis.from_url(redis_url)
    yield RedisLimiter(client)
    client.close()


def held_units(limiter: RedisLimiter, count: int, first: int = 1) -> list[UnitTokens]:
    """Submitted units, each still holding its run-wide tokens (a recount's copy) and its worker's slot."""
    units = []
    for unit_id in range(first, first + count):
        unit = UnitTokens(RUN_ID, unit_id, f"L{unit_id}", UnitStatus.COMPLETED, worker_id=unit_id, task_name=TASK)
        assert limiter.acquire(token_holder(unit_id, unit.launch_id), [
            PoolLimit(keys.run_units_pool(RUN_ID), 0, 60.0), PoolLimit(keys.deployment_units_pool(), 0, 60.0)]).ok
        assert limiter.acquire(unit_holder(unit_id), [
            PoolLimit(keys.worker_assigned_pool(RUN_ID, unit_id), 1, 60.0)]).ok
        units.append(unit)
    return units


def still_held(limiter: RedisLimiter, units: list[UnitTokens]) -> int:
    """How many of these units' tokens are still held (three each at first)."""
    launches = {token_holder(u.unit_id, u.launch_id) for u in units}
    run_wide = (len(launches & limiter.holders(keys.run_units_pool(RUN_ID)))
                + len(launches & limiter.holders(keys.deployment_units_pool())))
    return run_wide + sum(unit_holder(u.unit_id) in limiter.holders(keys.worker_assigned_pool(RUN_ID, u.unit_id))
                          for u in units)


def evalsha_calls(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    finally:
        client.close()


def test_units_queued_from_many_threads_are_all_given_back_in_a_few_calls(limiter: RedisLimiter,
                                                                          redis_url: str) -> None:
    units = held_units(limiter, 400)
    assert still_held(limiter, units) == 1200
    releases = DeferredReleases(limiter)
    calls_before = evalsha_calls(redis_url)
    threads = [threading.Thread(target=lambda part=units[i::8]: [releases.add([u]) for u in part]) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: still_held(limiter, units) == 0, 10.0, message="every queued unit given back")
    calls = evalsha_calls(redis_url) - calls_before
    assert 1 <= calls <= 40, f"{calls} release calls for 400 units queued at once"
    releases.close()


def test_close_gives_back_what_is_queued_and_later_units_at_once(limiter: RedisLimiter) -> None:
    units = held_units(limiter, 30)
    releases = DeferredReleases(limiter)
    releases.add(units[:20])
    releases.close()  # a web process stopping: nothing queued is left behind
    assert still_held(limiter, units[:20]) == 0
    releases.add(units[20:])  # after close: on the caller's thread, before add returns
    assert still_held(limiter, units) == 0


def test_a_redis_outage_loses_each_batch_to_the_repair_not_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:1/0")  # a port nobody listens on
    releases = DeferredReleases(RedisLimiter(client))
    unit = UnitTokens(RUN_ID, 1, "L1", UnitStatus.COMPLETED, worker_id=1, task_name=TASK)
    with caplog.at_level(logging.WARNING, logger="mephisto_dist.limiter.deferred"):
        releases.add([unit])
        wait_for(lambda: caplog.text.count("not given back now") == 1, 30.0, message="the failed batch logged")
        releases.add([unit])  # the thread lives on: the next batch is tried too
        wait_for(lambda: caplog.text.count("not given back now") == 2, 30.0, message="the next batch tried")
    releases.close()
    client.close()
