"""The runner worker's tasks: run one assignment's hosted TaskRunner, or one onboarding agent's onboarding
world (``mephisto_dist.runners.assignments``).

Acknowledged when it starts (not ``acks_late``): the agents' statuses are the record of a started runner,
so a re-delivery (the broker's visibility timeout on a conversation longer than it) finds them no longer
waiting and does nothing. A runner whose process died is restarted, when its run allows, by a restart
the live sweep sends once per claim on the assignment's lease (a repeated delivery finds the claim taken).
"""

from __future__ import annotations

from functools import lru_cache

from mephisto_dist import queue
from mephisto_dist.blueprints.hooks import TaskHooks
from mephisto_dist.celery.runner_worker import app
from mephisto_dist.db import outbox
from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.runners import events
from mephisto_dist.runners.assignments import host, onboarding
from mephisto_dist.runs.bundles import run_files
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import load_settings


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    """This process's resources, shared by its threads (sessions and Redis pools are thread-safe)."""
    return Runtime(load_settings())


def _hooks(run: TaskRun) -> TaskHooks:
    return run_files(runtime().bundles, run).hooks


@app.task(name=queue.RUN_ASSIGNMENT, acks_late=False)  # type: ignore[untyped-decorator]
def run_assignment(assignment_id: int, agent_ids: list[str]) -> str:
    """Start the assignment with these agents (all still waiting) and run it to its end."""
    return host.run_assignment(runtime(), assignment_id, agent_ids, _hooks)


@app.task(name=queue.RUNNER_OUTBOX_MESSAGE, acks_late=False)  # type: ignore[untyped-decorator]
def runner_outbox_message(message_id: int) -> str | None:
    """Carry out an outbox message that starts a hosted runner, here, at once. An ``assignment_ready``
    runs the assignment in this thread, its start marking the message done in the start's own
    transaction (the agents' move from ``waiting`` is what makes it once: a re-send finds them started);
    an ``onboarding_ready`` is delivered as the default queue does (claimed, sent, marked done). A message
    lost before its start stays pending, and beat's sweep sends it again."""
    rt = runtime()
    with read_transaction(rt.sessions) as session:
        found = outbox.unfinished(session, message_id)
    if found is None:
        return None
    kind, payload = found
    if kind != outbox.ASSIGNMENT_READY:
        events.deliver(rt, message_id)
        return None
    return host.run_assignment(rt, int(payload["assignment_id"]), list(payload["agent_ids"]), _hooks,
                               message_id=message_id)


@app.task(name=queue.RESTART_ASSIGNMENT, acks_late=False)  # type: ignore[untyped-decorator]
def restart_assignment(assignment_id: int, claim: str) -> str:
    """Run again, from its stored messages, the assignment whose runner died (the sweep's ``claim``)."""
    return host.restart_assignment(runtime(), assignment_id, claim, _hooks)


@app.task(name=queue.RUN_ONBOARDING, acks_late=False)  # type: ignore[untyped-decorator]
def run_onboarding(agent_id: str) -> str:
    """Play the onboarding agent's onboarding world until it is submitted and judged."""
    return onboarding.run_onboarding(runtime(), agent_id, _hooks)
