"""Celery tasks for the reconcilers of the outside world (servers; the crowd provider's HITs and studies), and the
deployment of a run's remote server."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from mephisto_dist import metrics, queue
from mephisto_dist.architects import Architect, make_architect
from mephisto_dist.celery.tasks import app, runtime
from mephisto_dist.reconcile.servers import reconcile_servers, remote_architect_of, runs_missing_a_server

log = logging.getLogger(__name__)
# An instance boots, installs nothing (the image has mephisto-dist) and starts the web: minutes at most.
EC2_DEPLOY_GRACE_S = 600.0


def architect_for(name: str) -> Architect | None:
    return make_architect(name, runtime())


@app.task(name=queue.RECONCILE_SERVERS)  # type: ignore[untyped-decorator]
def reconcile_servers_task() -> int:
    rt = runtime()
    decisions = reconcile_servers(rt.sessions, architect_for, now=datetime.now(UTC),
                                  stale_s=rt.settings.heartbeat_stale_s,
                                  deploy_grace_s=max(EC2_DEPLOY_GRACE_S, rt.settings.heartbeat_stale_s))
    for decision in decisions:
        log.info("server %s: %s (%s)", decision.server_id, decision.action.value, decision.found)
        metrics.record_reconciler_action("server_" + decision.action.value.replace(" ", "_"))
    for run_id in runs_missing_a_server(rt.sessions):
        rt.queue.enqueue(queue.DEPLOY_SERVER, run_id)
    return len(decisions)


@app.task(name=queue.DEPLOY_SERVER)  # type: ignore[untyped-decorator]
def deploy_server(run_id: int) -> int | None:
    """Deploy the run's server when its architect deploys remotely and none is live yet (the architect
    checks and records under the run's lock), then launch its units."""
    rt = runtime()
    architect_type = remote_architect_of(rt.sessions, run_id)
    if architect_type is None:
        return None
    architect = architect_for(architect_type)
    assert architect is not None
    server_id = architect.deploy(run_id)
    rt.queue.enqueue(queue.LAUNCH_UNITS, run_id)
    return server_id


@app.task(name=queue.RECONCILE_HITS)  # type: ignore[untyped-decorator]
def reconcile_hits_task() -> int:
    """Every registered MTurk requester's orphaned HITs, and submissions that never reached us."""
    from mephisto_dist.reconcile.hits import reconcile_all

    rt = runtime()
    decisions = reconcile_all(rt.sessions, rt.redis, rt.settings.deployment, now=datetime.now(UTC))
    for decision in decisions:
        log.info("HIT %s: %s (%s)", decision.hit_id, decision.action.value, decision.found)
        metrics.record_reconciler_action(f"hit_{decision.action.value}")
    return len(decisions)


@app.task(name=queue.RECONCILE_STUDIES)  # type: ignore[untyped-decorator]
def reconcile_studies_task() -> int:
    """Every registered study-based requester's studies (Prolific): those of finished runs stopped, places
    kept in line with the units waiting, submissions that never reached us recorded, and the units of
    participants who returned or timed out handed back."""
    from mephisto_dist.reconcile.studies import reconcile_all
    from mephisto_dist.runs.returns import hand_back_units_of_agents

    rt = runtime()
    found = reconcile_all(rt.sessions, rt.redis, rt.settings.deployment, now=datetime.now(UTC))
    for decision in found.decisions:
        log.info("study %s: %s (%s)", decision.study_id, decision.action.value, decision.found)
        metrics.record_reconciler_action("study_" + decision.action.value.replace(" ", "_"))
    if found.recorded:
        metrics.record_reconciler_action("submission_unreceived", found.recorded)
    for run_id, agent_ids in found.gave_up.items():
        handed = hand_back_units_of_agents(rt.sessions, rt.limiter, run_id, agent_ids, now=datetime.now(UTC))
        if handed:
            log.info("run %s: %s unit(s) whose participant returned or timed out are available again", run_id, handed)
            metrics.record_reconciler_action("units_handed_back", handed)
    return len(found.decisions)
