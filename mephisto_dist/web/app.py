"""The ASGI application. Handlers parse HTTP, call ``mephisto_dist.agents`` in a thread (the database
work is blocking), and enqueue the TaskRunner's events after the commit."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from mephisto_dist import agents, onboarding
from mephisto_dist.agents import Registration, RunContext, WorkerGate
from mephisto_dist.blueprints import static_task
from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, Task, TaskRun
from mephisto_dist.domain.status import AgentStatus
from mephisto_dist.errors import MephistoDistError, NotFoundError, RequestError, ServiceError
from mephisto_dist.limiter import keys
from mephisto_dist.providers import CrowdProvider, make_provider
from mephisto_dist.queue import RECONCILE_RUNS, UNIT_ASSIGNED, UNIT_SUBMITTED
from mephisto_dist.runs import (
    GLOBAL_POOL,
    LaunchContext,
    launch_units,
    mark_completed_if_done,
    run_pool,
    unit_holder,
)
from mephisto_dist.runtime import Runtime
from mephisto_dist.uploads import StoredFile, UploadStore
from mephisto_dist.web.frontend import frontend_config

log = logging.getLogger(__name__)
T = TypeVar("T")
STATIC_DIR = Path(__file__).with_name("static")
RESOLVE_CACHE_S = 2.0


def _now() -> datetime:
    return datetime.now(UTC)


class RunResolver:
    """Which run this server serves: a fixed one, or the newest open run of the local architect on our
    port (the Procfile's ``web`` process serves whatever run is launched on its port)."""

    def __init__(self, runtime: Runtime, run_id: int | None, port: int | None) -> None:
        self._runtime = runtime
        self._run_id = run_id
        self._port = port
        self._cached: RunContext | None = None
        self._cached_at = 0.0

    def current(self) -> RunContext:
        if self._cached is not None and (self._run_id is not None or
                                         time.monotonic() - self._cached_at < RESOLVE_CACHE_S):
            return self._cached
        with transaction(self._runtime.sessions) as session:
            run = session.get(TaskRun, self._run_id) if self._run_id is not None else self._by_port(session)
            if run is None:
                raise RequestError("no task run is being served here", 404)
            task_name = session.scalar(select(Task.task_name).where(Task.id == run.task_id)) or ""
            self._cached = RunContext.from_config(run.id, run.task_id, task_name, run.provider_type,
                                                  run.build_dir, run.config)
        self._cached_at = time.monotonic()
        return self._cached

    def _by_port(self, session: Session) -> TaskRun | None:
        runs = session.scalars(
            select(TaskRun).where(TaskRun.is_completed.is_(False), TaskRun.architect_type == "local")
            .order_by(TaskRun.id.desc()).limit(20)
        )
        for run in runs:
            if self._port is None or int(run.config.get("architect", {}).get("port", 0)) == self._port:
                return run
        return None


class ProviderCache:
    """One provider object per run served (providers hold no per-request state)."""

    def __init__(self) -> None:
        self._by_run: dict[int, CrowdProvider] = {}

    def get(self, run: RunContext) -> CrowdProvider:
        provider = self._by_run.get(run.run_id)
        if provider is None:
            provider = self._by_run[run.run_id] = make_provider(run.provider_type, run.config.get("provider", {}))
        return provider


def create_app(runtime: Runtime, *, run_id: int | None = None, port: int | None = None) -> Starlette:
    resolver = RunResolver(runtime, run_id, port)
    providers = ProviderCache()
    # SQLite takes one writer at a time, so threads would only queue for it and fight over the GIL:
    # there the hot path's database work runs on the event loop. PostgreSQL writes concurrently.
    in_loop = runtime.engine.dialect.name == "sqlite"

    async def blocking(work: Callable[[], T]) -> T:
        return work() if in_loop else await run_in_threadpool(work)
    gate = WorkerGate(runtime.limiter, runtime.settings.lease_ttl_s)
    uploads = UploadStore(runtime.settings.uploads_dir)
    max_bytes = runtime.settings.max_upload_bytes

    async def shell(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "shell.html", headers={"Cache-Control": "no-store"})

    async def shell_asset(request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC_DIR / name
        if name not in {"shell.js", "shell.css"}:
            raise HTTPException(404)
        return FileResponse(path)

    async def task_config(request: Request) -> Response:
        run = await run_in_threadpool(resolver.current)
        return JSONResponse(frontend_config(run.config))

    async def request_agent(request: Request) -> Response:
        body = await _json_body(request, max_bytes)
        reg = Registration.from_request(body)

        def work() -> agents.AgentDetails:
            run = resolver.current()
            with transaction(runtime.sessions) as session:
                details = agents.register_agent(session, run, reg, now=_now(), gate=gate)
            if details.created and static_task.HAS_ON_ASSIGNED_HOOK:
                runtime.queue.enqueue(UNIT_ASSIGNED, details.agent_id)
            return details

        details = await blocking(work)
        return JSONResponse(details.packet())

    async def submit_task(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            return await _submit_multipart(request)
        body = await _json_body(request, max_bytes)
        agent_id = body.get("USED_AGENT_ID")
        final_data = body.get("final_data")
        if not isinstance(final_data, dict):
            raise RequestError("submit_task needs a 'final_data' object")
        return await _record_submission(str(agent_id or ""), final_data, None)

    async def _submit_multipart(request: Request) -> Response:
        _check_length(request, max_bytes, required=True)
        form = await request.form(max_part_size=max_bytes)
        try:
            agent_id = str(form.get("USED_AGENT_ID") or "")
            raw = form.get("final_string_data") or "{}"
            try:
                fields = json.loads(raw) if isinstance(raw, str) else None
            except json.JSONDecodeError:
                fields = None
            if not isinstance(fields, dict):
                raise RequestError("final_string_data is not a JSON object")
            files = [(key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)]
            if not files:
                return await _record_submission(agent_id, fields, None)
            run = await run_in_threadpool(resolver.current)
            await run_in_threadpool(_check_agent, agent_id)
            batch = await run_in_threadpool(uploads.new_batch, run.run_id, agent_id)
            stored: list[StoredFile] = []
            for key, upload in files:
                if not upload.filename:
                    continue  # an empty file input
                stored.append(await run_in_threadpool(
                    uploads.save, batch, key, upload.filename, upload.content_type, upload.file))
            _attach_files(fields, stored)
            return await _record_submission(agent_id, fields, batch)
        finally:
            await form.close()

    def _check_agent(agent_id: str) -> None:
        run = resolver.current()
        with transaction(runtime.sessions) as session:
            agents.load_agent(session, run, agent_id)

    async def _record_submission(agent_id: str, outputs: dict[str, Any], batch: Path | None) -> Response:
        def work() -> agents.Submission:
            run = resolver.current()
            with transaction(runtime.sessions) as session:
                submission = agents.submit_task(session, run, agent_id, outputs, now=_now())
                if submission.first and run.hooks.on_unit_submitted is None:
                    # With a hook, UNIT_SUBMITTED closes the run after running it: a closed run's
                    # services stop, and the last unit's hook would be lost.
                    mark_completed_if_done(session, run.run_id, now=_now())
            if submission.first:
                _after_submit(run, submission)
            return submission

        try:
            submission = await blocking(work)
        except BaseException:
            if batch is not None:
                uploads.discard(batch)
            raise
        if not submission.first and batch is not None:
            uploads.discard(batch)  # a repeated submit keeps the first answer and its files
        return JSONResponse({"status": "Submitted!" if submission.first else "Already submitted",
                             "unit_id": str(submission.unit_id)})

    def _after_submit(run: RunContext, submission: agents.Submission) -> None:
        """After the commit: free the unit's slots and refill them at once where publishing is free;
        the worker's TaskRunner hook (and publishing on a real marketplace) runs on Celery."""
        holder = unit_holder(submission.unit_id)
        # Units of an uncapped run hold no tokens, and all of it was launched at once: nothing to refill.
        freed = runtime.limiter.release(holder, [run_pool(run.run_id), GLOBAL_POOL])
        if run.allowed_concurrent:
            runtime.limiter.release(holder, [keys.worker_assigned_pool(run.run_id, submission.worker_id)])
        provider = providers.get(run)
        launched = 0
        if freed and provider.publishes_instantly:
            launched = launch_units(runtime.sessions, LaunchContext(
                runtime.limiter, provider, runtime.settings.lease_ttl_s, runtime.settings.max_concurrent_units),
                run.run_id, now=_now())
        if freed and runtime.settings.max_concurrent_units and not launched:
            # The deployment-wide slot this unit freed may belong to another run's waiting units.
            runtime.queue.enqueue(RECONCILE_RUNS)
        if static_task.has_on_submitted_hook(run.hooks) or not provider.publishes_instantly:
            # Otherwise the event has no work: the slot is refilled above, and beat closes the run.
            runtime.queue.enqueue(UNIT_SUBMITTED, submission.unit_id)

    async def submit_onboarding(request: Request) -> Response:
        body = await _json_body(request, max_bytes)
        agent_id = str(body.get("USED_AGENT_ID") or "")
        data = body.get("onboarding_data")
        if not isinstance(data, dict):
            raise RequestError("submit_onboarding needs an 'onboarding_data' object")

        def load() -> tuple[RunContext, onboarding.OnboardingAgentRow]:
            run = resolver.current()
            if not run.onboarding_qualification:
                raise RequestError("this task run has no onboarding", 400)
            with transaction(runtime.sessions) as session:
                return run, onboarding.load(session, run.run_id, agent_id)

        run, agent = await blocking(load)
        if agent.status == AgentStatus.ONBOARDING:
            # The task's own code, which may be slow: off the event loop, outside any transaction.
            passed = await run_in_threadpool(_validate_onboarding, run, data)
        else:
            passed = agent.status == AgentStatus.APPROVED  # a repeat: the first verdict stands

        def record() -> agents.AgentDetails:
            with transaction(runtime.sessions) as session:
                details = agents.submit_onboarding(session, run, agent_id, data, passed=passed, now=_now(),
                                                   gate=gate)
            if details.created and static_task.HAS_ON_ASSIGNED_HOOK:
                runtime.queue.enqueue(UNIT_ASSIGNED, details.agent_id)
            return details

        details = await blocking(record)
        return JSONResponse(details.packet())

    async def submit_metadata(request: Request) -> Response:
        body = await _json_body(request, max_bytes)
        agent_id = str(body.get("USED_AGENT_ID") or "")
        metadata = body.get("metadata")
        if not isinstance(metadata, dict):
            raise RequestError("submit_metadata needs a 'metadata' object")

        def work() -> None:
            run = resolver.current()
            with transaction(runtime.sessions) as session:
                agent = agents.load_agent(session, run, agent_id)
                merged = dict(agent.task_metadata or {})
                merged.update(metadata)
                session.execute(update(Agent).where(Agent.id == agent.id).values(task_metadata=merged))

        await run_in_threadpool(work)
        return JSONResponse({"status": "Metadata received"})

    async def log_error(request: Request) -> Response:
        body = await _json_body(request, max_bytes)
        log.warning("front-end error from agent %s: %s", body.get("USED_AGENT_ID"),
                    str(body.get("final_data") or body.get("error_data") or body)[:2000])
        return JSONResponse({"status": "Error logged"})

    async def run_file(request: Request) -> Response:
        run = await run_in_threadpool(resolver.current)
        root = Path(run.build_dir).resolve()
        path = (root / request.path_params["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise HTTPException(404)
        return FileResponse(path)

    async def on_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, RequestError):
            return JSONResponse({"error": str(exc)}, exc.status_code)
        if isinstance(exc, NotFoundError):
            return JSONResponse({"error": str(exc)}, 404)
        if isinstance(exc, ServiceError):
            return JSONResponse({"error": str(exc)}, 503)
        return JSONResponse({"error": str(exc)}, 500)

    routes = [
        Route("/", shell),
        Route("/_mephisto_dist/{name}", shell_asset),
        Route("/task_config.json", task_config),
        Route("/request_agent", request_agent, methods=["POST"]),
        Route("/submit_task", submit_task, methods=["POST"]),
        Route("/submit_onboarding", submit_onboarding, methods=["POST"]),
        Route("/submit_metadata", submit_metadata, methods=["POST"]),
        Route("/log_error", log_error, methods=["POST"]),
        Route("/{path:path}", run_file),
    ]
    return Starlette(routes=routes, exception_handlers={MephistoDistError: on_error})


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


def _check_length(request: Request, max_bytes: int, *, required: bool) -> None:
    raw = request.headers.get("content-length")
    if raw is None:
        if required:
            raise RequestError("a submission must say its Content-Length", 411)
        return
    if not raw.isdigit():
        raise RequestError("Content-Length is not a number")
    if int(raw) > max_bytes:
        raise RequestError(
            f"the submission is {int(raw)} bytes, over the limit of {max_bytes} bytes", 413)


async def _json_body(request: Request, max_bytes: int) -> dict[str, Any]:
    _check_length(request, max_bytes, required=False)
    raw = await request.body()
    if len(raw) > max_bytes:
        raise RequestError(f"the request is {len(raw)} bytes, over the limit of {max_bytes} bytes", 413)
    try:
        body = json.loads(raw or b"{}")
    except json.JSONDecodeError:
        raise RequestError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def _attach_files(fields: dict[str, Any], stored: list[StoredFile]) -> None:
    by_field: dict[str, list[dict[str, Any]]] = {}
    for item in stored:
        by_field.setdefault(item.field, []).append(item.record())
    for name, records in by_field.items():
        fields[name] = records[0] if len(records) == 1 else records
