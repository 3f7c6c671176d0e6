"""Taking a worker's submission (answers and uploaded files) and their metadata (tips, feedback)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, overload

from sqlalchemy import select, update

from mephisto_dist.blueprints.runner import runner_for
from mephisto_dist.db import outbox
from mephisto_dist.db.engine import single_statement, transaction
from mephisto_dist.db.models import Agent
from mephisto_dist.db.transitions import (
    CompletedAlone,
    NextLaunch,
    complete_submission_alone,
    complete_submission_alone_statement,
    completed_alone,
)
from mephisto_dist.domain.metadata import merge_metadata
from mephisto_dist.domain.status import AGENT_SUBMITTING, UnitStatus
from mephisto_dist.errors import RequestError, ServiceError
from mephisto_dist.limiter import Acquired, PoolLimit
from mephisto_dist.limiter.units import UnitTokens, release_unit_tokens, token_holder
from mephisto_dist.providers import UnitLaunch
from mephisto_dist.queue import LAUNCH_UNITS, RECONCILE_RUNS, send_outbox
from mephisto_dist.runs.launches import (
    LaunchContext,
    bind_next_launch,
    hand_over,
    launch_units,
    new_launch_id,
    pools_for,
    send_launch_on_loop,
)
from mephisto_dist.runs.task_runs import mark_completed_if_done
from mephisto_dist.work import claims
from mephisto_dist.work.claims import RunContext, Submission
from mephisto_dist.work.served import AfterCommit, HandOver, Served, finished, now
from mephisto_dist.work.uploads import StoredFile, UploadBatch

if TYPE_CHECKING:
    from mephisto_dist.db.async_statements import AsyncStatements

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadedFile:
    """A file input of a multipart submission, still in the request's temporary storage."""

    field: str
    filename: str
    content_type: str | None
    data: BinaryIO


@overload
def submit_task(served: Served, agent_id: str, outputs: dict[str, Any], files: Sequence[UploadedFile] = (), *,
                split: Literal[False] = False) -> Submission: ...


@overload
def submit_task(served: Served, agent_id: str, outputs: dict[str, Any], files: Sequence[UploadedFile] = (), *,
                split: Literal[True]) -> Submission | AfterCommit[Submission]: ...


def submit_task(served: Served, agent_id: str, outputs: dict[str, Any], files: Sequence[UploadedFile] = (), *,
                split: bool = False, tried_alone: bool = False) -> Submission | AfterCommit[Submission]:
    """Store the files, then record the answer; a refused or repeated submission leaves no files behind
    (a repeat keeps the first answer and its files).

    ``split`` (no files): for a caller that does the work after the commit itself (``web.context``'s
    ``call_split``). When that work may wait (a capped run's hand-over in Redis and the next launch's
    record, tokens given back, a launch or an event sent), it is handed back, not done (``AfterCommit``);
    the answer is committed either way, and ``served.finished`` does that work where the caller is.
    ``tried_alone``: the caller has just tried the one-statement submission (:func:`submit_task_on_loop`),
    which wrote nothing."""
    if split and not files:
        return _record(served, agent_id, outputs, split=True, tried_alone=tried_alone)
    batch = _store_files(served, agent_id, outputs, files) if files else None
    try:
        submission = finished(_record(served, agent_id, outputs))
    except BaseException:
        if batch is not None:
            served.uploads.discard(batch)
        raise
    if not submission.first and batch is not None:
        served.uploads.discard(batch)
    return submission


def submit_metadata(served: Served, agent_id: str, metadata: dict[str, Any]) -> None:
    """Merge ``metadata`` into the agent's (Mephisto's tips and feedback arrive this way) while the agent
    is still working: once the unit is submitted, what was reviewed and exported stays as it was."""
    run = served.run()
    with transaction(served.runtime.sessions) as session:
        agent = claims.load_agent(session, run, agent_id)
        merged = merge_metadata(agent.task_metadata, metadata, lambda: str(uuid.uuid4()))
        # Compare-and-set on the status: a submit committing meanwhile wins, and this is refused.
        still_working = update(Agent).where(Agent.id == agent.id,
                                            Agent.status.in_([status.value for status in AGENT_SUBMITTING]))
        changed = session.connection().execute(still_working.values(task_metadata=merged)).rowcount
        if not changed:
            status = session.scalar(select(Agent.status).where(Agent.id == agent.id))
            raise RequestError(f"this agent's metadata can no longer change (status: {status})", 409)


def _store_files(served: Served, agent_id: str, outputs: dict[str, Any],
                 files: Sequence[UploadedFile]) -> UploadBatch:
    run = served.run()
    with transaction(served.runtime.sessions) as session:
        claims.load_agent(session, run, agent_id)  # refuse a stranger before writing their files
    batch = served.uploads.new_batch(run.run_id, agent_id)
    stored = [served.uploads.save(batch, f.field, f.filename, f.content_type, f.data) for f in files]
    _attach_files(outputs, stored)
    return batch


def _record(served: Served, agent_id: str, outputs: dict[str, Any], *,
            split: bool = False, tried_alone: bool = False) -> Submission | AfterCommit[Submission]:
    run = served.run()
    provider = served.providers.get(run)
    ctx = LaunchContext.of(served.runtime, provider)
    if not tried_alone and served.runtime.engine.dialect.name == "postgresql" and isinstance(agent_id, str) \
            and agent_id and not runner_for(run.run_config.blueprint.blueprint_type).wants_unit_submitted(run.hooks):
        recorded = _record_alone(served, run, ctx, agent_id, outputs, split=split)
        if recorded is not None:
            return recorded
    handover: UnitLaunch | None = None
    pools: list[PoolLimit] = []
    message: int | None = None
    with transaction(served.runtime.sessions) as session:
        submission = claims.submit_task(session, run, agent_id, outputs, now=now())
        pools = pools_for(ctx, run.run_id, submission.run_cap)
        if submission.first and runner_for(run.run_config.blueprint.blueprint_type).wants_unit_submitted(run.hooks):
            # The TaskRunner's event (the task's hook: screening verdicts, gold scores), written with the
            # answer and sent after the commit; beat re-sends it until it is carried out.
            message = outbox.add(session, outbox.UNIT_SUBMITTED, str(submission.unit_id), run_id=run.run_id,
                                 payload={"unit_id": submission.unit_id}, now=now())
        if submission.first and submission.run_open and provider.publishes_instantly and pools:
            # The slot this unit frees goes to the next unit, bound here and handed over after the
            # commit, with no launcher in between (see launches.hand_over).
            handover = bind_next_launch(session, ctx, run.run_id, now=now())
        if submission.first and handover is None and message is None and not submission.run_has_more:
            # A run with a unit just bound to a launch is not done: no need to look. Nor is one whose
            # event was just written (its handler closes it once it ran), nor one with another unit or
            # event still open when the submission's statement looked (it said so: no statement to ask).
            mark_completed_if_done(session, run.run_id, now=now())

    return _after_commit(served, run, ctx, submission, handover, pools, message, split=split)


def _record_alone(served: Served, run: RunContext, ctx: LaunchContext, agent_id: str, outputs: dict[str, Any], *,
                  split: bool) -> Submission | AfterCommit[Submission] | None:
    """PostgreSQL, a run whose submissions write no TaskRunner event: the answer, the unit and the next
    launch's intent in one statement, atomic by itself (``transitions.complete_submission_alone``), with
    no BEGIN and COMMIT round trips; then what :func:`_record` does after its commit. ``None`` when the
    statement wrote nothing (a repeat, a stranger, a closed agent): :func:`_record` takes it again in a
    transaction and says why."""
    at = now()
    bind = _next_launch(ctx, at)
    with single_statement(served.runtime.sessions) as connection:
        done = complete_submission_alone(connection, agent_id, run.run_id, outputs=outputs, now=at, bind=bind)
    if done is None:
        return None
    return _after_alone(served, run, ctx, agent_id, bind, done, split=split, close_here=True)


async def submit_task_on_loop(served: Served, statements: AsyncStatements, run: RunContext, agent_id: str,
                              outputs: dict[str, Any]) -> Submission | AfterCommit[Submission] | None:
    """PostgreSQL, a run whose submissions write no TaskRunner event (``Served.commits_alone``): the
    one-statement submission (:func:`_record_alone`) on the web's event loop, what follows its commit
    handed back when it may wait, as ``submit_task(split=True)`` does. None when it wrote nothing:
    :func:`submit_task` (``tried_alone``) takes it in a transaction and says why."""
    if not isinstance(agent_id, str) or not agent_id:
        return None
    ctx = LaunchContext.of(served.runtime, served.providers.get(run))
    at = now()
    bind = _next_launch(ctx, at)
    statement, params = complete_submission_alone_statement(agent_id, run.run_id, outputs=outputs, now=at, bind=bind)
    done = completed_alone((await statements.run(statement, params)).first())
    if done is None:
        return None
    return _after_alone(served, run, ctx, agent_id, bind, done, split=True, close_here=False)


def _next_launch(ctx: LaunchContext, at: datetime) -> NextLaunch | None:
    """The launch a one-statement submission binds the run's next unit to, where publishing is free."""
    return NextLaunch(new_launch_id(), at + ctx.stale_after, bool(ctx.global_cap)) \
        if ctx.provider.publishes_instantly else None


def _after_alone(served: Served, run: RunContext, ctx: LaunchContext, agent_id: str, bind: NextLaunch | None,
                 done: CompletedAlone, *, split: bool, close_here: bool) -> Submission | AfterCommit[Submission]:
    """What follows a one-statement submission: the run closed if that was its last unit (its own
    transaction: beat's sweep closes the run if the process dies first; handed back unless
    ``close_here``), then :func:`_after_commit`."""
    submission = claims.submitted(done.unit_id, agent_id, done.worker_id, done.unit)
    handover = None if bind is None or done.bound_unit_id is None else \
        UnitLaunch(run.run_id, done.bound_unit_id, bind.launch_id)
    pools = pools_for(ctx, run.run_id, submission.run_cap)
    if handover is not None or submission.run_has_more:
        return _after_commit(served, run, ctx, submission, handover, pools, None, split=split)

    def closed(split_after: bool) -> Submission | AfterCommit[Submission]:
        with transaction(served.runtime.sessions) as session:
            mark_completed_if_done(session, run.run_id, now=now())
        return _after_commit(served, run, ctx, submission, handover, pools, None, split=split_after)

    if split and not close_here:
        return AfterCommit(lambda: finished(closed(False)))
    return closed(split)


def _after_commit(served: Served, run: RunContext, ctx: LaunchContext, submission: Submission,
                  handover: UnitLaunch | None, pools: list[PoolLimit], message: int | None, *,
                  split: bool) -> Submission | AfterCommit[Submission]:
    """What follows a submission's commit: its TaskRunner event sent, its slots given back or handed over
    (:func:`_after_submit`). Done here, or with ``split`` handed back when it may wait."""

    def finish(taken: Acquired | ServiceError | None = None) -> Submission:
        if message is not None:
            send_outbox(served.runtime.queue, [message])
        if submission.first:
            try:
                _after_submit(served, run, ctx, submission, handover, pools, taken=taken)
            except ServiceError as error:
                # The answer is committed: the worker hears success. The slot comes back with beat's
                # repair (it removes the tokens of done units), the refill with its next sweep (the
                # intent bound above is cleared when Redis fails; a process dying before that leaves it
                # for beat to re-send once its retry time passes).
                _warn_after(submission, error)
        return submission

    if not split or not (message is not None or (submission.first and not _given_back_later(run, handover, pools))):
        return finish()
    if handover is None or message is not None:
        return AfterCommit(finish)
    launch = handover

    async def launched_on_loop(statements: AsyncStatements) -> Submission | AfterCommit[Submission]:
        # finish(taken) for a swap that took the slot, where that is the launch's record alone: no worker
        # slot to free, no deployment-wide cap to reconcile, no allow-list to read before publishing.
        try:
            left = await send_launch_on_loop(statements, served.runtime.sessions, ctx, submission.server_url,
                                             run.launch_args, launch, now=now())
        except ServiceError as error:  # as finish: the answer is committed; beat re-sends the launch
            _warn_after(submission, error)
            return submission
        if left is None:
            return submission
        return AfterCommit(lambda: _left_over(left, submission))

    on_loop = not (run.allowed_concurrent or served.runtime.settings.max_concurrent_units
                   or (ctx.provider.is_study_based and run.launch_args.get("qualifications")))
    return AfterCommit(finish, HandOver(
        token_holder(submission.unit_id, submission.launch_id), token_holder(launch.unit_id, launch.launch_id),
        pools, finish, launched_on_loop if on_loop else None))


def _left_over(work: Callable[[], object], submission: Submission) -> Submission:
    """What a hand-over on the event loop left to a thread, done; a failure logged, as ``finish`` does."""
    try:
        work()
    except ServiceError as error:
        _warn_after(submission, error)
    return submission


def _warn_after(submission: Submission, error: ServiceError) -> None:
    """A failure after a submission's commit: logged; the worker hears success, beat repairs the rest."""
    log.warning("after the submission of unit %s: %s", submission.unit_id, error)


def _after_submit(served: Served, run: RunContext, ctx: LaunchContext, submission: Submission,
                  handover: UnitLaunch | None, pools: list[PoolLimit], *,
                  taken: Acquired | ServiceError | None = None) -> None:
    """After the commit: free the unit's slots and refill them at once: handed straight to the unit
    bound in the submitting transaction where publishing is free, else by a Celery launch task
    enqueued now."""
    runtime = served.runtime
    tokens = UnitTokens(run.run_id, submission.unit_id, submission.launch_id, UnitStatus.COMPLETED,
                        submission.worker_id, run.task_name)
    if handover is not None:
        freed = 1  # the unit counted in its capped run: it held a slot, now the next unit's
        handed = hand_over(runtime.sessions, ctx, token_holder(submission.unit_id, submission.launch_id), handover,
                           pools, submission.server_url,
                           run.launch_args, now=now(), taken=taken)
        # None: a pool was lost (Redis restarted); launching rebuilds it from the database first.
        launched = launch_units(runtime.sessions, ctx, run.run_id, now=now()) if handed is None else handed
        # After the hand-over: when Redis fails, the hand-over is the step that must clear the launch bound
        # in the submitting transaction (else its slot waits out a lease before beat re-sends it); the
        # worker's token then runs out with its lease, or beat's repair removes it. The run-wide tokens
        # went with the hand-over; a submit frees only the worker's assigned slot (allowed_concurrent), so
        # a run without that limit makes no second Redis call here.
        if run.allowed_concurrent:
            release_unit_tokens(runtime.limiter, [tokens], run_wide=False)
    elif _given_back_later(run, handover, pools):
        # No cap to refill against (an uncapped run launched all of its units at once; a cap removed
        # meanwhile launched what it held back) and no worker slot their next request needs: no one waits
        # for these tokens (a token found is beat's recount of the deployment pool, which no cap limits).
        # They are given back in a batch, moments later, off this request (limiter.deferred).
        served.releases.add([tokens])
        freed = launched = 0
    else:
        freed = release_unit_tokens(runtime.limiter, [tokens])
        launched = 0
        if not pools:
            freed = 0  # as above: nothing to refill; only the worker's slot had to be free at once
        elif freed and ctx.provider.publishes_instantly:
            launched = launch_units(runtime.sessions, ctx, run.run_id, now=now())
        elif freed:
            runtime.queue.enqueue(LAUNCH_UNITS, run.run_id)
    if freed and runtime.settings.max_concurrent_units and not launched:
        # The deployment-wide slot this unit freed may belong to another run's waiting units.
        runtime.queue.enqueue(RECONCILE_RUNS)


def _given_back_later(run: RunContext, handover: UnitLaunch | None, pools: list[PoolLimit]) -> bool:
    """Whether all a first submission's commit leaves to do is give its tokens back in a later batch (no
    slot to hand over or refill, no worker slot to free now): nothing that waits."""
    return handover is None and not pools and not run.allowed_concurrent


def _attach_files(fields: dict[str, Any], stored: list[StoredFile]) -> None:
    by_field: dict[str, list[dict[str, Any]]] = {}
    for item in stored:
        by_field.setdefault(item.field, []).append(item.record())
    for name, records in by_field.items():
        fields[name] = records[0] if len(records) == 1 else records
