"""Every Redis key of the limiter is built here. This docstring is the key schema.

``P`` is the prefix (default ``mephisto-dist:limiter``; one Redis can serve several deployments
with different prefixes). ``<pool>`` and ``<bucket>`` are caller-chosen names, see below.

=================================  ======  ===============================================  ===========
key                                type    TTL                                              owner
=================================  ======  ===============================================  ===========
``P:pool:<pool>``                  ZSET    member = holder, score = lease expiry in ms on   acquire.lua,
                                           the Redis server clock (``+inf``: never          release.lua,
                                           expires). PEXPIREAT = the latest lease in it;    swap.lua,
                                                                                            renew.lua,
                                           no TTL while a member never expires; Redis       reconcile.lua,
                                           drops it when empty.                             rebuild.lua,
                                                                                            refresh.lua
``P:cap:<pool>``                   STRING  integer cap overriding the caller's; no TTL,     set_cap (CLI)
                                           removed by ``set_cap(pool, None)``.
``P:ready:<pool>``                 STRING  ``1`` while the pool is intact (``rebuild.lua``   rebuild.lua,
                                           sets it); a flush or restart removes it, and so  set_cap
                                           does a cap set with ``recount``, so acquire.lua  (recount)
                                           refuses until it is rebuilt. No TTL.
``P:rate:<bucket>``                HASH    ``tokens`` (float), ``ts`` (server ms of the     rate.lua
                                           last refill); TTL = time to refill the burst +
                                           1 s, after which a fresh bucket is the same.
=================================  ======  ===============================================  ===========

The ``P:pool:`` and ``P:cap:`` namespaces differ in their fixed part, so no pool name can collide
with another pool's cap key. The limiter assumes one Redis (not Cluster): an acquire touches several
pools in one script.

Pool names for DESIGN.md's limits (components are escaped so ``:`` in an id cannot forge another
name); holders are unit ids:

- :func:`run_units_pool` -- ``max_num_concurrent_units``: units of a run ``launched`` or
  ``assigned``; leased.
- :func:`worker_assigned_pool` -- ``allowed_concurrent``: units a worker holds ``assigned`` in a run;
  leased.
- :func:`worker_task_units_pool` -- ``maximum_units_per_worker``: units a worker ever took across runs
  sharing a ``task_name``; ``lease_s=None``.
- :func:`deployment_units_pool` -- ``MEPHISTO_DIST_MAX_CONCURRENT_UNITS``: units of every run;
  leased.

The live channel (``mephisto_dist.runners.live``) keeps its keys under ``L`` (``mephisto-dist:live``):

=================================  =======  ==============================================  ===========
key                                type     TTL                                             owner
=================================  =======  ==============================================  ===========
``L:heartbeats``                   ZSET     member = agent id, score = its page's last      heartbeat.lua
                                            heartbeat in ms on the Redis server clock; no   (web),
                                            TTL: the sweep removes members it handled.      stale.lua
                                                                                            (sweep)
``L:call:<call id>:lease``         STRING   the Celery worker running a remote call; PX     live.calls
                                            ``remote_call_lease_s``, renewed while the
                                            function runs, so it lapses when the worker
                                            dies.
``L:agent:<agent id>``             channel  pub/sub: packets for that agent's page, heard   live.outbox,
                                            by the web process holding its websocket.       live.hub
``L:agent:<agent id>:inbox``       LIST     JSON entries for a hosted runner's agent: its   inbox.lua
                                            page's messages (``act``), status changes,      (web, sweep),
                                            ``shutdown``; 1 day, refreshed on each push;    runner BLPOP
                                            deleted when the runner ends.                   (assignments)
``L:agent:<agent id>:taking``      LIST     the inbox entry the runner took (LMOVE) and     live.inbox
                                            has not yet stored; given back to a restarted   (runner)
                                            runner; 1 day; deleted once stored.
``L:agent:<agent id>:seen``        SET      ``update_id`` of the page's messages pushed     inbox.lua
                                            (a resent packet is dropped); 1 day.
``L:assignment:<id>:runner``       STRING   ``running``: the runner worker hosting the      assignments.
                                            assignment's TaskRunner, PX a few seconds,      lease (runner
                                            renewed by a thread; ``ended:<unix time>``      worker); the
                                            (1 day) once ``run_assignment`` returned (the   live sweep
                                            submission timeout counts from it). Missing     reads it
                                            while its agents are in task: the runner died.  and claims it
                                            ``restarting:<n>`` (SET NX, PX a few leases):   for a restart
                                            the sweep's claim to start the n-th restart.
``L:assignment:<id>:restarts``     STRING   restarts of the assignment's runner so far      assignments.
                                            (INCR by the sweep holding the claim); 1 day.   recovery
``L:onboarding:<id>:runner``       STRING   the runner worker playing the onboarding        assignments.
                                            agent's world (SET NX: one player), 1 day.      onboarding
``L:onboarding:<id>:verdict``      LIST     ``1``/``0``: the runner's validate_onboarding   assignments.
                                            on the submitted onboarding, for the web        onboarding;
                                            request waiting on it (BLPOP); 10 minutes.      web BLPOP
=================================  =======  ==============================================  ===========
"""

from __future__ import annotations

PREFIX = "mephisto-dist:limiter"


def pool_key(pool: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:pool:{pool}"


def cap_key(pool: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:cap:{pool}"


def ready_key(pool: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:ready:{pool}"


def rate_key(bucket: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:rate:{bucket}"


def _part(value: str | int) -> str:
    return str(value).replace("%", "%25").replace(":", "%3A")


def run_units_pool(task_run_id: str | int) -> str:
    return f"run:{_part(task_run_id)}:units"


def worker_assigned_pool(task_run_id: str | int, worker_id: str | int) -> str:
    return f"run:{_part(task_run_id)}:worker:{_part(worker_id)}:assigned"


def worker_task_units_pool(task_name: str, worker_id: str | int) -> str:
    return f"task:{_part(task_name)}:worker:{_part(worker_id)}:units"


def deployment_units_pool() -> str:
    return "deployment:units"


LIVE_PREFIX = "mephisto-dist:live"


def live_heartbeats_key(prefix: str = LIVE_PREFIX) -> str:
    return f"{prefix}:heartbeats"


def remote_call_lease_key(call_id: int, prefix: str = LIVE_PREFIX) -> str:
    return f"{prefix}:call:{call_id}:lease"


def assignment_runner_lease(assignment_id: int, prefix: str = LIVE_PREFIX) -> str:
    return f"{prefix}:assignment:{assignment_id}:runner"


def assignment_runner_restarts(assignment_id: int, prefix: str = LIVE_PREFIX) -> str:
    return f"{prefix}:assignment:{assignment_id}:restarts"


def agent_channel(agent_id: str, prefix: str = LIVE_PREFIX) -> str:
    return f"{prefix}:agent:{_part(agent_id)}"


def agent_inbox(agent_id: str, prefix: str = LIVE_PREFIX) -> str:
    return f"{prefix}:agent:{_part(agent_id)}:inbox"


def agent_inbox_taking(agent_id: str, prefix: str = LIVE_PREFIX) -> str:
    return f"{prefix}:agent:{_part(agent_id)}:taking"


def agent_seen_updates(agent_id: str, prefix: str = LIVE_PREFIX) -> str:
    return f"{prefix}:agent:{_part(agent_id)}:seen"


def onboarding_runner(agent_id: str, prefix: str = LIVE_PREFIX) -> str:
    return f"{prefix}:onboarding:{_part(agent_id)}:runner"


def onboarding_runner_lease(agent_id: str, prefix: str = LIVE_PREFIX) -> str:
    """The lease of the runner playing an onboarding world (``runners.assignments.lease``)."""
    return f"{prefix}:onboarding:{_part(agent_id)}:lease"


def onboarding_verdict(agent_id: str, prefix: str = LIVE_PREFIX) -> str:
    return f"{prefix}:onboarding:{_part(agent_id)}:verdict"
