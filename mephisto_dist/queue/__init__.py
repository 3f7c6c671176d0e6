"""Celery task names and the enqueue side of the queue, kept at arm's length from the Celery app.

The web server and the CLI only *send* tasks; ``mephisto_dist.celery`` registers them under these names. Tasks are
sent after the database commit they read (callers enqueue outside their transaction).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Protocol

from mephisto_dist.errors import ServiceError

log = logging.getLogger(__name__)

LAUNCH_UNITS = "mephisto_dist.launch_units"
OUTBOX_MESSAGE = "mephisto_dist.outbox_message"
"""Carries out one outbox row (``db.outbox``) by id: the TaskRunner's unit-assigned and unit-submitted events."""
RUNNER_OUTBOX_MESSAGE = "mephisto_dist.runner_outbox_message"
"""The same, on the runner worker, for the messages that start a hosted runner (an assignment whose units
are all claimed, an onboarding world): the pair waiting for it is not held up behind the default queue's
events, launches and sweeps, and an assignment's start is one transaction that also marks its message
done (beat's re-send of one goes to :data:`OUTBOX_MESSAGE`, which carries it out too)."""
RESEND_OUTBOX = "mephisto_dist.resend_outbox"
REMOTE_CALL = "mephisto_dist.remote_call"
LIVE_SWEEP = "mephisto_dist.live_sweep"
RECONCILE_POOLS = "mephisto_dist.reconcile_pools"
RECONCILE_RUNS = "mephisto_dist.reconcile_runs"
HAND_BACK_RETURNED = "mephisto_dist.hand_back_returned"

DEFAULT_QUEUE = "mephisto"
LIVE_QUEUE = "live"
"""Remote procedure calls, which a page waits on, have a queue of their own. A worker consumes both unless
told otherwise and takes from them in turn, so a backlog of launches or reconciler runs on the default queue
does not stand in front of a call; ``celery -A mephisto_dist.celery.worker worker -Q live`` runs a worker for calls only."""
QUEUES = (DEFAULT_QUEUE, LIVE_QUEUE)
RUN_ASSIGNMENT = "mephisto_dist.run_assignment"
"""Runs one assignment's hosted TaskRunner (``runners.assignments``) until it ends: minutes, mostly waiting."""
RESTART_ASSIGNMENT = "mephisto_dist.restart_assignment"
"""Runs again, from its stored messages, an assignment whose runner died (``mephisto.task.runner_restarts``)."""
RUN_ONBOARDING = "mephisto_dist.run_onboarding"
"""Plays one onboarding agent's onboarding world (a hosted runner's ``run_onboarding``) until it is submitted."""
ASSIGNMENTS_QUEUE = "assignments"
"""Hosted runners have a queue of their own, not in :data:`QUEUES`: a prefork worker never takes one (it
would hold a process for a whole conversation); the runner worker (``mephisto_dist.celery.runner_worker``,
threads pool) consumes only it."""
ROUTES = {REMOTE_CALL: LIVE_QUEUE, RUN_ASSIGNMENT: ASSIGNMENTS_QUEUE, RESTART_ASSIGNMENT: ASSIGNMENTS_QUEUE,
          RUN_ONBOARDING: ASSIGNMENTS_QUEUE, RUNNER_OUTBOX_MESSAGE: ASSIGNMENTS_QUEUE}


class TaskQueue(Protocol):
    def enqueue(self, name: str, *args: Any) -> None: ...


def send_outbox(queue: TaskQueue, message_ids: Sequence[int], *, task: str = OUTBOX_MESSAGE) -> None:
    """Send outbox messages (``db.outbox``) after the commit that wrote them, as ``task``
    (:data:`OUTBOX_MESSAGE` or :data:`RUNNER_OUTBOX_MESSAGE`). A broker that does not answer is no
    failure: the messages are in the database, and beat's sweep sends them."""
    for message_id in message_ids:
        try:
            queue.enqueue(task, message_id)
        except ServiceError as error:
            log.warning("outbox message %s not sent now (%s): beat re-sends it", message_id, error)
            return


REDIS_TIMEOUT_S = 5.0


def celery_config(broker_url: str, timeout_s: float = REDIS_TIMEOUT_S) -> dict[str, Any]:
    """The Celery settings every process of the deployment shares. A silent broker (a network
    partition) costs a bounded wait and a few quick retries, then an error, never a hung process."""
    return {
        "broker_url": broker_url,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": DEFAULT_QUEUE,
        # Every queue named here is consumed by a worker started without -Q.
        "task_queues": {name: {"routing_key": name} for name in QUEUES},
        "task_routes": {task: {"queue": name} for task, name in ROUTES.items()},
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "broker_transport_options": {"visibility_timeout": 3600, "socket_timeout": timeout_s,
                                     "socket_connect_timeout": timeout_s, "retry_on_timeout": True,
                                     "health_check_interval": 30},
        "broker_connection_timeout": timeout_s,
        "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0, "interval_step": 0.2,
                                      "interval_max": 1},
    }


class CeleryQueue:
    """Sends Celery tasks. Celery is loaded at the first send, not before: it takes half a second of CPU
    to import, most commands never send, and a web server's first request would otherwise wait for it
    (a claim with nothing to send reads ``Runtime.queue`` too)."""

    def __init__(self, broker_url: str, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        self._url = broker_url
        self._timeout_s = timeout_s

    @cached_property
    def _app(self) -> Any:
        from celery import Celery

        app = Celery("mephisto_dist_sender", set_as_current=False)
        app.conf.update(celery_config(self._url, self._timeout_s))
        return app

    def enqueue(self, name: str, *args: Any) -> None:
        from kombu.exceptions import OperationalError

        try:
            self._app.send_task(name, args=list(args), expires=SEND_EXPIRES_S.get(name))
        except OperationalError as error:
            raise ServiceError(f"the task queue (Redis) is not answering: {error}") from error

    def waiting(self) -> int:
        """Tasks in the default queue that no worker has taken yet (remote calls, on their own queue, are
        not counted)."""
        from kombu.exceptions import ChannelError

        with self._app.connection_for_read() as connection:
            try:
                declared = connection.default_channel.queue_declare(queue=DEFAULT_QUEUE, passive=True)
            except ChannelError:
                return 0  # no task was ever sent on this broker
            return int(declared.message_count)

    def close(self) -> None:
        if "_app" in self.__dict__:
            self._app.close()


# Review side effects on the crowd provider (``mephisto_dist.celery.review_tasks``): one ledger row per call.
PROVIDER_CALL = "mephisto_dist.provider_call"
RESEND_PROVIDER_CALLS = "mephisto_dist.resend_provider_calls"

# Beat's reconcilers of the outside world (``mephisto_dist.celery.reconcile_tasks``).
RECONCILE_SERVERS = "mephisto_dist.reconcile_servers"
DEPLOY_SERVER = "mephisto_dist.deploy_server"
RECONCILE_HITS = "mephisto_dist.reconcile_hits"
RECONCILE_STUDIES = "mephisto_dist.reconcile_studies"

# Sweeps sent outside beat's schedule (whose entries expire: ``beat.schedule``): a nudge to reconcile
# runs when a submission freed a deployment-wide slot, which beat's next round does anyway; a server
# deploy, which the server reconciler sends again while the run has no server. Queued behind a worker
# outage they are dropped unrun after this long rather than piling up.
SEND_EXPIRES_S = {RECONCILE_RUNS: 30.0, DEPLOY_SERVER: 300.0}
