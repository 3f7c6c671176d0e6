"""Registering a worker's agent and taking their onboarding answers."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from mephisto_dist.blueprints.runner import runner_for
from mephisto_dist.db import outbox
from mephisto_dist.db.engine import pause, single_statement, transaction
from mephisto_dist.domain.status import AgentStatus
from mephisto_dist.errors import RequestError, ServiceError
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens
from mephisto_dist.providers import provider_class
from mephisto_dist.queue import OUTBOX_MESSAGE, PROVIDER_CALL, RUNNER_OUTBOX_MESSAGE, send_outbox
from mephisto_dist.review.qualifications import pending_worker_calls
from mephisto_dist.runners.live import calls
from mephisto_dist.work import claims, onboarding, partners
from mephisto_dist.work.claims import AgentDetails, Registration, RunContext
from mephisto_dist.work.served import Served, now

if TYPE_CHECKING:
    from mephisto_dist.db.async_statements import AsyncStatements

log = logging.getLogger(__name__)


def request_agent(served: Served, reg: Registration, *, tried_alone: bool = False) -> AgentDetails:
    """An agent on a unit of the served run (or onboarding, or a refusal); the TaskRunner hears of a new
    one through an outbox message written with the claim and sent after the commit. ``tried_alone``: the
    caller has just tried the one-statement claim (:func:`request_agent_on_loop`), which wrote nothing."""
    run = served.run()
    runner = runner_for(run.run_config.blueprint.blueprint_type)
    if not tried_alone and served.runtime.engine.dialect.name == "postgresql" and served.claims_alone(run):
        with single_statement(served.runtime.sessions) as connection:
            alone = claims.claim_alone(connection, run, reg, now=now())
        if alone is not None:
            return alone
    details = AgentDetails(reg.request_id, failure_reason=claims.NO_UNIT_AVAILABLE)
    messages: list[tuple[int, str]] = []
    for attempt in range(claims.CLAIM_ATTEMPTS):
        try:
            freed: list[UnitTokens] = []
            with transaction(served.runtime.sessions) as session:
                outcome = _register(session, served, run, reg, freed, retry=attempt + 1 < claims.CLAIM_ATTEMPTS)
                if (isinstance(outcome, AgentDetails) and runner.live and outcome.agent_id
                        and outcome.unit_id is not None and not outcome.created):
                    outcome = replace(outcome, init_task_data=runner.returning_agent_data(
                        outcome.init_task_data or {}, calls.requests_of(session, outcome.agent_id)))
                if isinstance(outcome, AgentDetails):
                    messages = _record_assigned(session, run, outcome)
            _release(served, freed)
            if isinstance(outcome, claims.ClaimBusy):
                raise outcome
            if isinstance(outcome, claims.Reservation):
                claimed = _claim_reserved(served, run, outcome)
                if claimed is None:
                    continue  # the unit went to another request meanwhile: choose again
                outcome, messages = claimed
            details = outcome
            break
        except claims.ClaimBusy:
            pause(claims.CLAIM_RETRY_S)  # never inside a transaction: it is closed here
    _send(served, messages)
    if run.hooks.hosts_assignments and details.agent_id and details.unit_id is not None:
        hosted = partners.init_task_data(run, details)
        if hosted is not None:
            details = replace(details, init_task_data=hosted)
    return details


async def request_agent_on_loop(served: Served, statements: AsyncStatements, run: RunContext,
                                reg: Registration) -> AgentDetails | None:
    """PostgreSQL, a run whose claims write nothing else (``Served.claims_alone``): the one-statement claim
    on the web's event loop. None when it wrote nothing: :func:`request_agent` (``tried_alone``) answers."""
    return await claims.claim_alone_on_loop(statements, run, reg, now=now())


def _register(session: Session, served: Served, run: RunContext, reg: Registration, freed: list[UnitTokens],
              *, retry: bool) -> AgentDetails | claims.Reservation | claims.ClaimBusy:
    """:func:`claims.register_agent`, with "every free unit is locked this instant" returned, not raised:
    the transaction then ends with a COMMIT of what the attempt did write (a worker row, an MTurk
    assignment taken back), not a ROLLBACK, which would also drop the connection's prepared statements
    (psycopg forgets them on ROLLBACK, and every statement is parsed and planned again)."""
    try:
        return claims.register_agent(session, run, reg, now=now(), gate=served.gate, retry=retry, freed=freed)
    except claims.ClaimBusy as busy:
        return busy


def _claim_reserved(served: Served, run: RunContext,
                    reservation: claims.Reservation) -> tuple[AgentDetails, list[tuple[int, str]]] | None:
    """Take the worker's per-worker tokens for the reserved unit (no transaction open), then claim it;
    with the outbox messages the claim wrote (to send after the commit). ``None`` when another request
    took the unit first (its tokens are given back)."""
    limiter = served.gate.limiter
    # Exclusive: a second request of the same worker that chose the same unit must not share, and
    # then give back, the token the first one's claim relies on.
    taken = limiter.acquire(reservation.holder, reservation.pools, exclusive=True)
    if taken.held_pool is not None:
        raise claims.ClaimBusy(run.run_id)  # that other request is claiming it right now
    if not taken.ok:
        return reservation.refusal(taken), []
    pools = [p.pool for p in reservation.pools]
    try:
        with transaction(served.runtime.sessions) as session:
            claimed = claims.claim_reserved(session, run, reservation, now=now())
            messages = [] if claimed is None else _record_assigned(session, run, claimed)
    except BaseException:
        limiter.release(reservation.holder, pools)
        raise
    if claimed is None:
        limiter.release(reservation.holder, pools)
        return None
    return claimed, messages


def submit_onboarding(served: Served, agent_id: str, data: dict[str, Any], *,
                      verdict: bool | None = None) -> AgentDetails:
    """Judge an onboarding submission with the task's ``validate_onboarding`` (outside any transaction:
    it is the task's own code, maybe slow), or take the ``verdict`` its hosted runner gave, record it and
    answer what the worker gets next."""
    run = served.run()
    if not run.onboarding_qualification:
        raise RequestError("this task run has no onboarding", 400)
    with transaction(served.runtime.sessions) as session:
        agent = onboarding.load(session, run.run_id, agent_id)
    if agent.status in (AgentStatus.ONBOARDING, AgentStatus.WAITING):
        passed = verdict if verdict is not None else _validate_onboarding(run, data)
    else:
        passed = agent.status == AgentStatus.APPROVED  # a repeat: the first verdict stands
    freed: list[UnitTokens] = []
    with transaction(served.runtime.sessions) as session:
        outcome = claims.submit_onboarding(session, run, agent_id, data, passed=passed, now=now(),
                                           gate=served.gate, freed=freed)
        # The verdict's qualification, copied to a provider that keeps its own (MTurk): sent now, so the
        # worker's standing there is right before they look for the next HIT (beat re-sends what fails).
        syncs = pending_worker_calls(session, agent.worker_id) if provider_class(run.provider_type).syncs_qualifications else []
        messages = _record_assigned(session, run, outcome) if isinstance(outcome, AgentDetails) else []
    _release(served, freed)
    _send_provider_calls(served, syncs)
    if isinstance(outcome, claims.Reservation):
        # The verdict is committed: the unit is claimed as request_agent claims one, or, taken by
        # another request meanwhile, the worker is answered as request_agent answers them now.
        try:
            claimed = _claim_reserved(served, run, outcome)
        except claims.ClaimBusy:
            claimed = None
        if claimed is None:
            return request_agent(served, outcome.reg)
        outcome, messages = claimed
    _send(served, messages)
    return outcome


def _release(served: Served, freed: list[UnitTokens]) -> None:
    """After the commit: give back the tokens of units the registration took back from an ended MTurk
    assignment. Redis failing here fails no request: beat's repair removes the tokens of units that no
    longer count for their worker."""
    try:
        release_unit_tokens(served.gate.limiter, freed)
    except ServiceError as error:
        log.warning("tokens of units taken back not given back now (%s): beat's repair will", error)


def _send_provider_calls(served: Served, call_ids: list[int]) -> None:
    for call_id in call_ids:
        try:
            served.runtime.queue.enqueue(PROVIDER_CALL, call_id)
        except ServiceError as error:
            log.warning("provider call %s not queued now (%s): beat re-sends it", call_id, error)
            return


def _record_assigned(session: Session, run: RunContext, details: AgentDetails) -> list[tuple[int, str]]:
    """The TaskRunner's on-assigned event for a new agent on a unit, when the run's runner wants it, and
    the start of its assignment's hosted runner when this claim completed it: outbox messages written in
    the claiming transaction (their ids, to send after the commit, each with the task that carries it
    out: a runner's start goes to the runner worker's queue, see ``queue.RUNNER_OUTBOX_MESSAGE``)."""
    if run.hooks.plays_onboarding and details.unit_id is None and details.agent_id \
            and onboarding.is_onboarding_id(details.agent_id):
        # Its world is played on a runner worker (once per onboarding agent: the message's key).
        ready = outbox.add(session, outbox.ONBOARDING_READY, details.agent_id, run_id=run.run_id,
                           payload={"agent_id": details.agent_id}, now=now())
        return [] if ready is None else [(ready, RUNNER_OUTBOX_MESSAGE)]
    if not (details.created and details.unit_id is not None and details.agent_id):
        return []
    messages = []
    if runner_for(run.run_config.blueprint.blueprint_type).wants_unit_assigned:
        message = outbox.add(session, outbox.UNIT_ASSIGNED, details.agent_id, run_id=run.run_id,
                             payload={"agent_id": details.agent_id}, now=now())
        messages += [] if message is None else [(message, OUTBOX_MESSAGE)]
    if run.hooks.hosts_assignments:
        ready = partners.record_claim(session, run.run_id, details.unit_id, now=now())
        messages += [] if ready is None else [(ready, RUNNER_OUTBOX_MESSAGE)]
    return messages


def _send(served: Served, messages: list[tuple[int, str]]) -> None:
    """The claim's outbox messages, after its commit, each as its task."""
    for task in sorted({task for _, task in messages}):
        send_outbox(served.runtime.queue, [message for message, sent_as in messages if sent_as == task], task=task)


def _validate_onboarding(run: RunContext, data: dict[str, Any]) -> bool:
    """The task's ``validate_onboarding`` verdict; everyone passes when the task has none."""
    validate = run.hooks.validate_onboarding
    if validate is None:
        return True
    try:
        return bool(validate(dict(data)))
    except Exception as error:
        # A bug in the task's hook is not a verdict on the worker: leave the onboarding open.
        log.exception("the task's validate_onboarding hook failed")
        raise RequestError(f"the task's validate_onboarding hook failed: {type(error).__name__}: {error}",
                           500) from None
