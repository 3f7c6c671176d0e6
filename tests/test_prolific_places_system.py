"""Places added to one study by several processes at once are all kept: each increase reads and writes
the study's total under its Redis places lock (``providers.prolific.places``), against a real
prolific-local process."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from mephisto_dist.providers import UnitLaunch
from mephisto_dist.providers.prolific.places import PlacesLock
from mephisto_dist.providers.prolific.provider import ProlificProvider
from tests.prolific_local_process import FAKE_TOKEN, prolific_local

pytestmark = pytest.mark.system
PROCESSES, INCREASES = 4, 12


@pytest.fixture()
def prolific(tmp_path: Path) -> Iterator[str]:
    with prolific_local(tmp_path / "prolific.sqlite3", tmp_path / "prolific.log", processing_s=0.0) as url:
        yield url


def _provider(prolific: str, redis_url: str, deployment: str) -> ProlificProvider:
    return ProlificProvider(
        {"requester_name": "lab", "endpoint_url": prolific, "deployment": deployment},
        client_factory=lambda access: httpx.Client(base_url=f"{prolific}/api/v1/", timeout=30,
                                                   headers={"Authorization": f"Token {FAKE_TOKEN}"}),
        places_lock=PlacesLock(redis.Redis.from_url(redis_url)))


def _increase(prolific: str, redis_url: str, study_id: str, counts: list[int], start: multiprocessing.Event) -> None:
    provider = _provider(prolific, redis_url, "places")
    start.wait(30)
    for count in counts:
        provider.add_places(study_id, count)


def test_concurrent_increases_from_several_processes_all_count(prolific: str, redis_url: str) -> None:
    provider = _provider(prolific, redis_url, "places")
    study_id = provider.publish_unit(UnitLaunch(1, 1, "first"), "http://task.example",
                                     {"task_title": "Places", "task_description": "Count", "task_reward": 0.1}).split(":")[0]
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Event()
    plans = [[1 + (p + i) % 3 for i in range(INCREASES)] for p in range(PROCESSES)]
    workers = [spawn.Process(target=_increase, args=(prolific, redis_url, study_id, plan, start)) for plan in plans]
    for worker in workers:
        worker.start()
    start.set()  # all at once
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    found = httpx.get(f"{prolific}/api/v1/studies/{study_id}/", headers={"Authorization": f"Token {FAKE_TOKEN}"})
    assert found.json()["total_available_places"] == 1 + sum(sum(plan) for plan in plans)
