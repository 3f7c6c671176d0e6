"""One behavioural suite for the limiter contract, run against every implementation.

Time is the only difference: the memory implementations run on a fake clock that each poll advances,
the Redis ones on the server clock with short real leases. Either way a test waits for a condition
with a deadline (``eventually``), never for a fixed time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from conftest import wait_for

from mephisto_dist.limiter import Acquired, Limiter, PoolLimit, PoolState, RateBucket
from mephisto_dist.limiter.memory_pool import MemoryLimiter, MemoryRateBucket
from mephisto_dist.limiter.redis_pool import RedisLimiter, RedisRateBucket

LEASE_S = 0.3  # short enough to watch expire in real time, long enough to outlast a slow poll


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    limiter: Limiter
    bucket: RateBucket
    tick: Callable[[], None]  # lets some time pass on a fake clock; a no-op on a real one

    def eventually(self, condition: Callable[[], object], timeout_s: float = 3.0, message: str = "") -> None:
        def poll() -> object:
            self.tick()
            return condition()

        wait_for(poll, timeout_s=timeout_s, message=message or "condition")


@pytest.fixture(params=["memory", "redis"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()

        def tick() -> None:
            clock.now += 0.05

        yield Harness(MemoryLimiter(clock), MemoryRateBucket(clock), tick)
    else:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        yield Harness(RedisLimiter(client), RedisRateBucket(client), lambda: None)
        client.close()


OK = Acquired(ok=True)


def limit(pool: str, cap: int, lease_s: float | None = 60.0) -> PoolLimit:
    return PoolLimit(pool, cap, lease_s)


def test_cap_is_respected(harness: Harness) -> None:
    limiter = harness.limiter
    assert [limiter.acquire(f"unit:{i}", [limit("run", 3)]).ok for i in range(5)] == [
        True, True, True, False, False,
    ]
    assert limiter.acquire("unit:9", [limit("run", 3)]) == Acquired(ok=False, refused_pool="run")
    assert limiter.held("run") == 3
    assert limiter.holders("run") == {"unit:0", "unit:1", "unit:2"}
    assert limiter.release("unit:1", ["run"]) == 1
    assert limiter.acquire("unit:9", [limit("run", 3)]) == OK
    assert limiter.holders("run") == {"unit:0", "unit:2", "unit:9"}


def test_cap_zero_is_unlimited_but_counted(harness: Harness) -> None:
    for i in range(50):
        assert harness.limiter.acquire(f"unit:{i}", [limit("run", 0)]) == OK
    assert harness.limiter.held("run") == 50


def test_reacquire_is_idempotent(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.acquire("unit:1", [limit("run", 2)]) == OK
    assert limiter.acquire("unit:1", [limit("run", 2)]) == OK
    assert limiter.held("run") == 1
    assert limiter.acquire("unit:2", [limit("run", 2)]) == OK
    # Full, yet a holder already in the pool keeps its token.
    assert limiter.acquire("unit:1", [limit("run", 2)]) == OK
    assert limiter.acquire("unit:3", [limit("run", 2)]).ok is False
    assert limiter.held("run") == 2


def test_release_is_idempotent(harness: Harness) -> None:
    limiter = harness.limiter
    limiter.acquire("unit:1", [limit("a", 2), limit("b", 2)])
    assert limiter.release("unit:1", ["a", "b"]) == 2
    assert limiter.release("unit:1", ["a", "b"]) == 0
    assert limiter.release("unit:never", ["a", "nowhere"]) == 0
    assert limiter.release("unit:1", []) == 0
    assert limiter.held("a") == limiter.held("b") == 0


def test_release_each_gives_back_several_holders_tokens_in_one_step(harness: Harness) -> None:
    limiter = harness.limiter
    limiter.acquire("launch:x", [limit("run", 2), limit("deployment", 2)])
    limiter.acquire("unit:1", [limit("worker", 1), limit("task", 0, None)])
    tokens = [("launch:x", "run"), ("launch:x", "deployment"), ("unit:1", "worker"), ("unit:1", "task"),
              ("unit:1", "run"), ("unit:never", "nowhere")]
    assert limiter.release_each(tokens) == [True, True, True, True, False, False]
    assert limiter.release_each(tokens) == [False] * len(tokens)
    assert limiter.release_each([]) == []
    assert all(limiter.held(pool) == 0 for pool in ("run", "deployment", "worker", "task"))


def test_acquire_is_all_or_nothing_across_pools(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.acquire("unit:1", [limit("worker", 1)]) == OK
    pools = [limit("run", 5), limit("worker", 1), limit("task", 0, None)]
    assert limiter.acquire("unit:2", pools) == Acquired(ok=False, refused_pool="worker")
    assert limiter.held("run") == 0
    assert limiter.held("task") == 0
    assert limiter.release("unit:1", ["worker"]) == 1
    assert limiter.acquire("unit:2", pools) == OK
    assert limiter.holders("run") == limiter.holders("worker") == limiter.holders("task") == {"unit:2"}


def test_refused_pool_is_the_first_full_one(harness: Harness) -> None:
    limiter = harness.limiter
    limiter.acquire("unit:1", [limit("a", 1), limit("b", 1)])
    assert limiter.acquire("unit:2", [limit("b", 1), limit("a", 1)]) == Acquired(False, "b")
    assert limiter.acquire("unit:2", [limit("a", 1), limit("b", 1)]) == Acquired(False, "a")
    assert limiter.acquire("unit:2", []) == OK


def test_lease_expiry_returns_the_token(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.acquire("unit:1", [limit("run", 1, LEASE_S)]) == OK
    assert limiter.acquire("unit:2", [limit("run", 1, LEASE_S)]).ok is False
    harness.eventually(lambda: limiter.held("run") == 0, message="the lease to run out")
    assert limiter.release("unit:1", ["run"]) == 0
    assert limiter.acquire("unit:2", [limit("run", 1, LEASE_S)]) == OK


def test_non_expiring_pool_keeps_members(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.acquire("unit:1", [limit("task", 2, None), limit("run", 5, LEASE_S)]) == OK
    harness.eventually(lambda: limiter.held("run") == 0, message="the leased token to expire")
    assert limiter.holders("task") == {"unit:1"}
    # Renewing a never-expiring member keeps it so.
    assert limiter.renew("task", ["unit:1"], None) == 1
    assert limiter.holders("task") == {"unit:1"}


def test_renew_keeps_the_token(harness: Harness) -> None:
    limiter = harness.limiter
    # Both start with the same short lease, "kept" first; renewals give it a longer one so that a
    # slow poll on a loaded machine cannot let it lapse.
    limiter.acquire("unit:kept", [limit("run", 3, LEASE_S)])
    limiter.acquire("unit:lost", [limit("run", 3, LEASE_S)])
    renewed: list[int] = []

    def lost_while_kept_renewed() -> bool:
        renewed.append(limiter.renew("run", ["unit:kept", "unit:absent"], 3 * LEASE_S))
        return "unit:lost" not in limiter.holders("run")

    harness.eventually(lost_while_kept_renewed, message="the unrenewed lease to run out")
    assert limiter.holders("run") == {"unit:kept"}
    assert set(renewed) == {1}
    # An expired holder is not brought back by renew: its slot may be someone else's by now.
    assert limiter.renew("run", ["unit:lost"], LEASE_S) == 0
    assert limiter.renew("run", [], LEASE_S) == 0


def test_reconcile_replaces_contents(harness: Harness) -> None:
    limiter = harness.limiter
    for holder in ["unit:1", "unit:2", "unit:3"]:
        limiter.acquire(holder, [limit("run", 3)])
    assert limiter.reconcile("run", ["unit:2", "unit:4"], 60.0) == 2
    assert limiter.holders("run") == {"unit:2", "unit:4"}
    assert limiter.acquire("unit:5", [limit("run", 3)]) == OK
    assert limiter.acquire("unit:6", [limit("run", 3)]).ok is False
    assert limiter.reconcile("run", [], 60.0) == 0
    assert limiter.held("run") == 0


def test_reconcile_keeps_a_token_taken_after_the_caller_looked(harness: Harness) -> None:
    """A launch that takes a token between the recount's look at the pool and its database read is not
    in the recount; dropping it would let the pool admit one more than its cap."""
    limiter = harness.limiter
    for holder in ["unit:1", "unit:2"]:
        limiter.acquire(holder, [limit("run", 3)])
    seen = limiter.holders("run")
    assert limiter.acquire("unit:3", [limit("run", 3)]) == OK  # a launch racing the recount
    assert limiter.reconcile("run", ["unit:2", "unit:9"], 60.0, seen=seen) == 3
    assert limiter.holders("run") == {"unit:2", "unit:3", "unit:9"}
    assert limiter.acquire("unit:4", [limit("run", 3)]).ok is False
    assert limiter.reconcile("run", [], 60.0, seen=limiter.holders("run")) == 0


def test_reconcile_does_not_give_back_a_token_released_after_the_caller_looked(harness: Harness) -> None:
    """The recount's snapshot still counts a unit whose transition committed, and whose token was given
    back, after that snapshot: the token stays given back (a holder the caller saw is renewed, never
    added). A holder missing when the caller looked (a pool lost to a flush) is added."""
    limiter = harness.limiter
    for holder in ["unit:1", "unit:2"]:
        limiter.acquire(holder, [limit("worker", 2)])
    seen = limiter.holders("worker")
    assert limiter.release_each([("unit:1", "worker")]) == [True]  # its unit moved on after the snapshot
    assert limiter.reconcile("worker", ["unit:1", "unit:2", "unit:7"], 60.0, seen=seen) == 2
    assert limiter.holders("worker") == {"unit:2", "unit:7"}


def test_reconcile_gives_fresh_leases(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.reconcile("run", {"unit:1", "unit:2"}, LEASE_S) == 2
    harness.eventually(lambda: limiter.held("run") == 0, message="reconciled leases to run out")
    assert limiter.reconcile("task", ["unit:1"], None) == 1
    assert limiter.holders("task") == {"unit:1"}


def test_reconcile_many_holders(harness: Harness) -> None:
    holders = {f"unit:{i}" for i in range(10_000)}
    assert harness.limiter.reconcile("run", holders, 60.0) == 10_000
    assert harness.limiter.holders("run") == holders


def test_stored_cap_overrides_the_passed_one(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.get_cap("run") is None
    for i in range(2):
        assert limiter.acquire(f"unit:{i}", [limit("run", 2)]) == OK
    assert limiter.acquire("unit:2", [limit("run", 2)]).ok is False

    limiter.set_cap("run", 4)  # raised from the CLI while the run is live
    assert limiter.get_cap("run") == 4
    assert limiter.acquire("unit:2", [limit("run", 2)]) == OK
    assert limiter.acquire("unit:3", [limit("run", 2)]) == OK
    assert limiter.acquire("unit:4", [limit("run", 100)]).ok is False

    limiter.set_cap("run", 2)  # lowered below usage: nobody loses a token, nobody new gets one
    assert limiter.held("run") == 4
    assert limiter.acquire("unit:0", [limit("run", 100)]) == OK  # a holder keeps its token
    limiter.release("unit:0", ["run"])
    limiter.release("unit:1", ["run"])
    assert limiter.acquire("unit:4", [limit("run", 100)]).ok is False  # usage 2, not below 2
    limiter.release("unit:2", ["run"])
    assert limiter.acquire("unit:4", [limit("run", 100)]) == OK

    limiter.set_cap("run", 0)  # unlimited
    assert all(limiter.acquire(f"unit:x{i}", [limit("run", 1)]).ok for i in range(10))
    limiter.set_cap("run", None)  # back to the caller's cap
    assert limiter.get_cap("run") is None
    assert limiter.acquire("unit:y", [limit("run", 1)]).ok is False


def test_invalid_arguments_are_refused(harness: Harness) -> None:
    with pytest.raises(ValueError):
        PoolLimit("run", -1, 1.0)
    with pytest.raises(ValueError):
        PoolLimit("run", 1, 0.0)
    with pytest.raises(ValueError):
        harness.limiter.set_cap("run", -1)
    with pytest.raises(ValueError):
        harness.bucket.take("mturk", 0.0, 1)
    with pytest.raises(ValueError):
        harness.bucket.take("mturk", 1.0, 0)


def test_rate_bucket_bursts_then_asks_to_wait(harness: Harness) -> None:
    bucket = harness.bucket
    rate_per_s = 10.0
    assert [bucket.take("mturk", rate_per_s, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait_s = bucket.take("mturk", rate_per_s, 3)
    assert 0 < wait_s <= 1 / rate_per_s
    assert bucket.take("other-provider", rate_per_s, 3) == 0.0  # buckets are independent

    # The advertised wait is enough, and refusals took nothing meanwhile.
    harness.eventually(lambda: bucket.take("mturk", rate_per_s, 3) == 0.0, message="a refill")
    assert bucket.take("mturk", rate_per_s, 3) > 0


def test_rate_bucket_refills_up_to_burst_only(harness: Harness) -> None:
    bucket = harness.bucket
    assert bucket.take("api", 50.0, 2) == 0.0
    assert bucket.take("api", 50.0, 2) == 0.0

    def full_again() -> bool:
        # The bucket holds at most 2, however long it rested: a third take in a row must wait.
        return bucket.take("api", 50.0, 2) == 0.0 and bucket.take("api", 50.0, 2) == 0.0

    harness.eventually(full_again, message="the bucket to refill")
    assert bucket.take("api", 50.0, 2) > 0


def test_state_reads_the_cap_override_and_live_tokens_together(harness: Harness) -> None:
    limiter = harness.limiter
    assert limiter.state("run") == PoolState(None, 0)
    limiter.acquire("unit:1", [limit("run", 5)])
    limiter.acquire("unit:2", [PoolLimit("run", 5, LEASE_S)])
    limiter.set_cap("run", 3)
    assert limiter.state("run") == PoolState(3, 2)
    harness.eventually(lambda: limiter.state("run") == PoolState(3, 1), message="the short lease to run out")
    limiter.set_cap("run", None)
    assert limiter.state("run") == PoolState(None, 1)


def test_a_pool_rebuilt_from_the_database_refuses_until_rebuilt_once(harness: Harness) -> None:
    limiter = harness.limiter
    run = PoolLimit("run", 2, 60.0, rebuilt_from_db=True)
    assert limiter.acquire("launch:a", [run]) == Acquired(ok=False, lost_pool="run")
    assert limiter.held("run") == 0
    assert limiter.rebuild("run", ["launch:x"], 60.0) == 1
    # Another process's recount, made before the first rebuild, does not overwrite it.
    assert limiter.rebuild("run", ["launch:x", "launch:stale"], 60.0) is None
    assert limiter.holders("run") == {"launch:x"}
    assert limiter.acquire("launch:a", [run]) == OK
    assert limiter.acquire("launch:b", [run]) == Acquired(ok=False, refused_pool="run")
    # Pools not rebuilt from the database never need it.
    assert limiter.acquire("launch:a", [limit("other", 1)]) == OK


def test_a_cap_set_with_a_recount_refuses_until_the_pool_is_counted_again(harness: Harness) -> None:
    limiter = harness.limiter
    run = PoolLimit("run", 0, 60.0, rebuilt_from_db=True)
    limiter.rebuild("run", [], 60.0)
    assert limiter.acquire("launch:a", [run]) == OK  # uncapped: nothing else is kept
    limiter.set_cap("run", 2, recount=True)
    assert limiter.get_cap("run") == 2
    assert limiter.acquire("launch:b", [run]) == Acquired(ok=False, lost_pool="run")
    # The database's recount: three units out (launched while uncapped), more than the new cap.
    assert limiter.rebuild("run", ["launch:a", "launch:x", "launch:y"], 60.0) == 3
    assert limiter.acquire("launch:b", [run]) == Acquired(ok=False, refused_pool="run")
    limiter.set_cap("run", 4)  # without a recount the pool stays as it is
    assert limiter.acquire("launch:b", [run]) == OK
    assert limiter.held("run") == 4


def test_refresh_renews_and_removes_only_what_it_is_told(harness: Harness) -> None:
    limiter = harness.limiter
    for holder in ("launch:kept", "launch:done", "launch:newer"):
        limiter.acquire(holder, [limit("run", 5, LEASE_S)])
    # The reconciler's snapshot knew "kept" (still counts) and "done" (its unit is done); "newer" took
    # its token after the snapshot and must survive; "lost" is not in the pool and must not be added.
    assert limiter.refresh("run", ["launch:kept", "launch:lost"], ["launch:done"], 60.0) == 2
    assert limiter.holders("run") == {"launch:kept", "launch:newer"}
    harness.eventually(lambda: limiter.holders("run") == {"launch:kept"},
                       message="the unrenewed lease to run out while the renewed one stays")
    assert limiter.refresh("empty", [], [], None) == 0


def test_swap_hands_the_freed_slot_to_the_new_holder(harness: Harness) -> None:
    limiter = harness.limiter
    pools = [limit("run", 2), limit("deployment", 3)]
    assert limiter.acquire("launch:a", pools) == OK
    assert limiter.acquire("launch:b", pools) == OK
    assert limiter.acquire("launch:c", pools) == Acquired(ok=False, refused_pool="run")
    assert limiter.swap("launch:a", "launch:c", pools) == OK
    assert limiter.holders("run") == limiter.holders("deployment") == {"launch:b", "launch:c"}
    # An old holder that holds nothing (its lease ran out) frees nothing: a full pool refuses.
    assert limiter.swap("launch:gone", "launch:d", pools) == Acquired(ok=False, refused_pool="run")
    assert limiter.holders("run") == {"launch:b", "launch:c"}
    # With a cap lowered below usage the old holder's tokens go back and the new holder gets none.
    limiter.set_cap("run", 1)
    assert limiter.swap("launch:b", "launch:e", pools) == Acquired(ok=False, refused_pool="run")
    assert limiter.holders("run") == limiter.holders("deployment") == {"launch:c"}
    assert limiter.swap("launch:c", "launch:f", []) == OK


def test_swap_in_a_lost_pool_writes_nothing(harness: Harness) -> None:
    limiter = harness.limiter
    run = PoolLimit("run", 2, 60.0, rebuilt_from_db=True)
    assert limiter.acquire("launch:a", [limit("other", 2)]) == OK
    assert limiter.swap("launch:a", "launch:b", [limit("other", 2), run]) == Acquired(ok=False, lost_pool="run")
    assert limiter.holders("other") == {"launch:a"}
    assert limiter.rebuild("run", ["launch:a"], 60.0) == 1
    assert limiter.swap("launch:a", "launch:b", [limit("other", 2), run]) == OK
    assert limiter.holders("other") == limiter.holders("run") == {"launch:b"}


def test_an_exclusive_acquire_refuses_a_holder_that_already_has_a_token(harness: Harness) -> None:
    limiter = harness.limiter
    pools = [limit("a", 5), limit("b", 5)]
    assert limiter.acquire("unit:1", [limit("b", 5)]) == OK
    assert limiter.acquire("unit:1", pools, exclusive=True) == Acquired(ok=False, held_pool="b")
    assert limiter.holders("a") == set()  # nothing written
    assert limiter.acquire("unit:1", pools) == OK  # not exclusive: it passes, as before
    assert limiter.acquire("unit:2", pools, exclusive=True) == OK
    assert limiter.holders("a") == limiter.holders("b") == {"unit:1", "unit:2"}
    assert limiter.acquire("unit:3", [limit("a", 2)], exclusive=True) == Acquired(ok=False, refused_pool="a")


def test_a_lapsed_lease_in_a_pool_kept_from_the_database_is_not_a_free_slot(harness: Harness) -> None:
    limiter = harness.limiter
    run = PoolLimit("run", 2, LEASE_S, rebuilt_from_db=True)
    limiter.rebuild("run", [], LEASE_S)
    assert limiter.acquire("launch:a", [run]) == OK
    assert limiter.acquire("launch:b", [run]) == OK
    # Beat, which renews them, is down: the leases run out while their units may still count.
    harness.eventually(lambda: limiter.held("run") == 0, message="the leases to run out")
    assert limiter.acquire("launch:c", [run]) == Acquired(ok=False, lost_pool="run")
    assert limiter.release("launch:a", ["run"]) == 0  # a lapsed token is not one given back
    assert limiter.rebuild("run", ["launch:b"], 60.0) == 1  # the database's recount: b still counts
    assert limiter.acquire("launch:c", [run]) == OK
    assert limiter.acquire("launch:d", [run]) == Acquired(ok=False, refused_pool="run")


def test_the_repair_keeps_a_lapsed_holder_that_still_counts_and_frees_the_others(harness: Harness) -> None:
    limiter = harness.limiter
    limiter.rebuild("run", ["launch:kept"], 60.0)
    short = PoolLimit("run", 3, LEASE_S, rebuilt_from_db=True)
    assert limiter.acquire("launch:counts", [short]) == OK
    assert limiter.acquire("launch:leaked", [short]) == OK
    harness.eventually(lambda: limiter.held("run") == 1, message="two leases to run out")
    # The recount names launch:counts (its unit is out), not launch:leaked (its launcher died).
    assert limiter.refresh("run", ["launch:kept", "launch:counts"], [], 60.0) == 2
    assert limiter.holders("run") == {"launch:kept", "launch:counts"}
    assert limiter.acquire("launch:new", [short]) == OK
    assert limiter.acquire("launch:more", [short]) == Acquired(ok=False, refused_pool="run")
