"""Mephisto's TaskReview JSON API (the routes of Mephisto's ``review_app/server``), so that a TaskReview
client build pointed at this app keeps working: tasks and their units waiting for review, unit details,
approve / soft-reject / reject (with a bonus, and the note sent to the worker), blocks, qualifications
(list, create, rename, grant, revoke, holders), worker grants and review statistics.

Decisions go through the same services and ledger as ``mephisto-dist review`` and our own pages, and
record their reviewer (``app:<name>``): whichever face decides a unit, it is decided and paid once. A
long list of units to approve (more than :data:`BULK_UNITS`) becomes a review batch, worked by Celery.

Every route needs a signed-in session (the app's cookie). Mephisto's client sends no CSRF token, so a
request that changes something (any method but GET and HEAD) is accepted only when it

- carries the session cookie, which is ``SameSite=Strict``: a request started by another site has none;
- says ``Content-Type: application/json``: an HTML form of another site can send only urlencoded,
  multipart or plain text, and a script of another site can send JSON only after a CORS preflight,
  which this app never grants (it sends no ``Access-Control-Allow-*`` header);
- and, when the browser says where it comes from (``Origin``, ``Sec-Fetch-Site``), comes from this app.

GET routes change nothing. Bad input (an unknown id, a malformed body, an unknown key) is refused with
``{"error": "<one line naming the problem>"}`` and a 4xx status before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mephisto_dist.errors import MephistoDistError, NotFoundError
from mephisto_dist.review import batches, reviewing, taskreview, workers
from mephisto_dist.review.decisions import Decision, check_decision, parse_bonus
from mephisto_dist.review.sending import send_calls
from mephisto_dist.runtime import Runtime
from mephisto_dist.storage import MissingKey

PREFIX = "/api"
BULK_UNITS = 100
"""Approvals of more units than this are a review batch, worked by Celery; fewer are made at once."""
MAX_BODY_BYTES = 1024 * 1024
DECISION_KEYS = frozenset({"unit_ids", "review_note", "send_to_worker"})


class ApiError(MephistoDistError):
    """A refusal with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _now() -> datetime:
    return datetime.now(UTC)


def _ids(raw: str, name: str) -> list[int]:
    try:
        ids = [int(part.strip()) for part in raw.split(",")]
    except ValueError:
        raise ApiError(400, f"`{name}` must be a comma-separated list of integers, got {raw[:60]!r}") from None
    return ids


def _query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"`{name}` must be an integer, got {raw[:40]!r}") from None


def _unit_ids(body: Mapping[str, Any], *, required: bool = True) -> list[int]:
    raw = body.get("unit_ids")
    if raw is None or raw == [] or raw == "":
        if required:
            raise ApiError(400, "`unit_ids` must be given: a list of unit ids")
        return []
    if isinstance(raw, str):
        return _ids(raw, "unit_ids")
    if not isinstance(raw, list):
        raise ApiError(400, "`unit_ids` must be a list of unit ids")
    ids = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ApiError(400, f"`unit_ids` holds {item!r}, which is not a unit id")
        try:
            ids.append(int(item))
        except ValueError:
            raise ApiError(400, f"`unit_ids` holds {item!r}, which is not a unit id") from None
    return ids


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"`{name}` must be text")
    return value.strip() or None


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"`{name}` must be true or false")
    return value


def _whole(body: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(400, f"`{name}` must be an integer")
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"`{name}` must be an integer, got {value!r}") from None


def check_same_origin(request: Request) -> None:
    """The CSRF defence of the JSON API (see the module's docstring)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415 if media_type else 400,
                       "send the body as JSON with Content-Type: application/json (this API takes nothing else)")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise ApiError(403, f"a request from {origin[:80]} is refused: this API answers its own pages only")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise ApiError(403, "a request started by another site is refused: this API answers its own pages only")


async def _body(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    check_same_origin(request)
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as error:
        raise ApiError(400, f"the body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown key {unknown[0]!r}; this route takes {', '.join(sorted(allowed)) or 'none'}")
    return body


class MephistoApi:
    """The routes, over one Runtime. ``start_batch_work`` sends a new review batch to its workers (the
    app's, which works it on a thread when no Redis is configured); ``reviewer`` names the signed-in
    reviewer of a request."""

    def __init__(self, runtime: Runtime, start_batch_work: Callable[[batches.Started], None],
                 reviewer: Callable[[Request], str]) -> None:
        self.runtime = runtime
        self.start_batch_work = start_batch_work
        self.reviewer = reviewer

    @property
    def sessions(self) -> Any:
        return self.runtime.sessions

    def _sent(self, call_ids: Sequence[int]) -> dict[str, Any]:
        """Send the calls; the answer says what could not go now (the decisions are kept either way)."""
        problems = send_calls(self.runtime, call_ids)
        return {"warnings": problems} if problems else {}

    # -- tasks ---------------------------------------------------------------------------------------

    async def tasks(self, request: Request) -> Response:
        return JSONResponse({"tasks": taskreview.tasks(self.sessions)})

    async def task(self, request: Request) -> Response:
        return JSONResponse(taskreview.task(self.sessions, request.path_params["task_id"]))

    async def worker_units_ids(self, request: Request) -> Response:
        return Response(taskreview.worker_unit_ids_json(self.sessions, request.path_params["task_id"]),
                        media_type="application/json")

    async def timeline(self, request: Request) -> Response:
        return JSONResponse(taskreview.timeline(self.sessions, request.path_params["task_id"]))

    async def worker_opinions(self, request: Request) -> Response:
        return JSONResponse(taskreview.worker_opinions(self.sessions, request.path_params["task_id"]))

    async def stats_results(self, request: Request) -> Response:
        taskreview.task(self.sessions, request.path_params["task_id"])
        raise ApiError(400, "statistics of results are not supported for this task type (Mephisto computes them "
                            "for form_composer tasks only)")

    async def not_here(self, request: Request) -> Response:
        raise ApiError(404, f"{request.url.path} is not served here: export results with `mephisto-dist export`")

    # -- units ---------------------------------------------------------------------------------------

    async def units(self, request: Request) -> Response:
        task_id = _query_int(request, "task_id")
        raw = request.query_params.get("unit_ids")
        unit_ids = _ids(raw, "unit_ids") if raw else None
        if task_id is None and unit_ids is None:
            raise ApiError(400, "give `task_id` or `unit_ids` (or both)")
        return JSONResponse({"units": taskreview.units(self.sessions, task_id=task_id, unit_ids=unit_ids)})

    async def units_details(self, request: Request) -> Response:
        raw = request.query_params.get("unit_ids")
        if not raw:
            raise ApiError(400, "`unit_ids` must be given: a comma-separated list of unit ids")
        return JSONResponse({"units": taskreview.unit_details(self.sessions, _ids(raw, "unit_ids"))})

    async def approve(self, request: Request) -> Response:
        body = await _body(request, DECISION_KEYS | {"bonus"})
        unit_ids = _unit_ids(body)
        note = _text(body, "review_note")
        bonus = body.get("bonus")
        if isinstance(bonus, bool) or not isinstance(bonus, int | float | str | None):
            raise ApiError(400, "`bonus` must be an amount in dollars")
        amount = parse_bonus(str(bonus)) if bonus not in (None, "", 0) else None
        return await self._decide(request, Decision.APPROVE, unit_ids, note, amount, _flag(body, "send_to_worker"))

    async def soft_reject(self, request: Request) -> Response:
        body = await _body(request, DECISION_KEYS)
        return await self._decide(request, Decision.SOFT_REJECT, _unit_ids(body), _text(body, "review_note"), None,
                                  _flag(body, "send_to_worker"))

    async def reject(self, request: Request) -> Response:
        body = await _body(request, DECISION_KEYS)
        return await self._decide(request, Decision.REJECT, _unit_ids(body), _text(body, "review_note"), None,
                                  _flag(body, "send_to_worker"))

    async def _decide(self, request: Request, decision: Decision, unit_ids: list[int], note: str | None,
                      bonus: float | None, send_to_worker: bool) -> Response:
        check_decision(decision, note, bonus)
        by = f"app:{self.reviewer(request)}"
        answer: dict[str, Any] = {}
        if decision == Decision.APPROVE and len(unit_ids) > BULK_UNITS:
            started = batches.start_batch(self.sessions, decision, unit_ids, run_id=None, note=note, bonus=bonus,
                                          by=by, now=_now())
            self.start_batch_work(started)
            answer["batch_id"] = str(started.batch.batch_id)
            call_ids: list[int] = []
        else:
            decided = reviewing.decide_units(self.sessions, decision, unit_ids, now=_now(), note=note, bonus=bonus,
                                             by=by)
            call_ids = [c for reviewed in decided.reviewed for c in reviewed.call_ids]
        if send_to_worker and note:
            call_ids.extend(taskreview.send_feedback(self.sessions, unit_ids, note, now=_now()))
        return JSONResponse({**answer, **self._sent(call_ids)})

    async def unit_file(self, request: Request) -> Response:
        unit_id = request.path_params["unit_id"]
        fieldname = request.path_params.get("fieldname")
        key = taskreview.unit_file_key(self.sessions, unit_id, filename=request.path_params.get("filename"),
                                       fieldname=fieldname)
        try:
            chunks = self.runtime.storage.stream(key)
        except MissingKey:
            raise NotFoundError(f"the file {key!r} of unit {unit_id} is missing from storage") from None
        return StreamingResponse(chunks, media_type="application/octet-stream")

    # -- workers -------------------------------------------------------------------------------------

    async def block(self, request: Request) -> Response:
        body = await _body(request, frozenset({"review_note", "unit_ids"}))
        worker_id = request.path_params["worker_id"]
        reason = _text(body, "review_note")
        if not reason:
            raise ApiError(400, "`review_note` must be given: why the worker is blocked")
        unit_ids = _unit_ids(body, required=False)
        name, provider = taskreview.worker_name(self.sessions, worker_id)
        taskreview.check_unit_ids(self.sessions, unit_ids)
        changed = workers.block(self.sessions, name, provider, reason=reason, qualification=None, now=_now())
        return JSONResponse(self._sent(changed.call_ids))

    async def worker_qualifications(self, request: Request) -> Response:
        return JSONResponse({"granted_qualifications": taskreview.worker_qualifications(
            self.sessions, request.path_params["worker_id"])})

    # -- qualifications ------------------------------------------------------------------------------

    async def qualifications(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _body(request, frozenset({"name", "description"}))
            name = _text(body, "name")
            if not name:
                raise ApiError(400, "`name` must be given")
            return JSONResponse(taskreview.create_qualification(self.sessions, name, _text(body, "description"),
                                                                now=_now()))
        worker_id = _query_int(request, "worker_id")
        return JSONResponse({"qualifications": taskreview.qualifications(self.sessions, worker_id=worker_id)})

    async def qualification(self, request: Request) -> Response:
        qualification_id = request.path_params["qualification_id"]
        if request.method == "PATCH":
            body = await _body(request, frozenset({"name", "description"}))
            name = _text(body, "name")
            if not name:
                raise ApiError(400, "`name` must be given")
            return JSONResponse(taskreview.rename_qualification(self.sessions, qualification_id, name,
                                                                _text(body, "description")))
        if request.method == "DELETE":
            check_same_origin(request)
            raise ApiError(405, "deleting a qualification is not supported here: revoke it from its holders "
                                "(`mephisto-dist qualifications revoke`)")
        return JSONResponse(taskreview.qualification(self.sessions, qualification_id))

    async def qualification_details(self, request: Request) -> Response:
        return JSONResponse(taskreview.qualification_details(self.sessions, request.path_params["qualification_id"]))

    async def qualification_workers(self, request: Request) -> Response:
        return JSONResponse({"workers": taskreview.qualification_workers(
            self.sessions, request.path_params["qualification_id"], task_id=_query_int(request, "task_id"))})

    async def grant(self, request: Request) -> Response:
        qualification_id = request.path_params["qualification_id"]
        worker_id = request.path_params["worker_id"]
        if request.method == "PATCH":
            body = await _body(request, frozenset({"value"}))
            value = _whole(body, "value", None)
            if value is None:
                raise ApiError(400, "`value` must be given")
            unit_ids: list[int] = []
        else:
            body = await _body(request, frozenset({"unit_ids", "value"}))
            unit_ids = _unit_ids(body)
            value = _whole(body, "value", 1)
        call_ids = taskreview.grant_to(self.sessions, qualification_id, worker_id,
                                       1 if value is None else value, unit_ids=unit_ids, now=_now())
        return JSONResponse(self._sent(call_ids))

    async def revoke(self, request: Request) -> Response:
        body = await _body(request, frozenset({"unit_ids", "value"}))
        unit_ids = _unit_ids(body, required=request.method == "POST")
        call_ids = taskreview.revoke_from(self.sessions, request.path_params["qualification_id"],
                                          request.path_params["worker_id"], unit_ids=unit_ids)
        return JSONResponse(self._sent(call_ids))

    async def granted_qualifications(self, request: Request) -> Response:
        return JSONResponse({"granted_qualifications": taskreview.granted_qualifications(
            self.sessions, qualification_id=_query_int(request, "qualification_id"))})

    async def review_stats(self, request: Request) -> Response:
        since = None
        raw = request.query_params.get("since")
        if raw:
            try:
                since = datetime.fromisoformat(raw)
            except ValueError:
                raise ApiError(400, f"`since` must be a date or time (ISO 8601), got {raw[:40]!r}") from None
            since = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        limit = _query_int(request, "limit")
        return JSONResponse({"stats": taskreview.review_stats(
            self.sessions, worker_id=_query_int(request, "worker_id"), task_id=_query_int(request, "task_id"),
            since=since, limit=limit)})

    async def unknown(self, request: Request) -> Response:
        raise ApiError(404, f"no API route {request.method} {request.url.path}")

    def routes(self) -> list[Route]:
        def at(path: str, endpoint: Callable[[Request], Awaitable[Response]], *methods: str) -> Route:
            return Route(PREFIX + path, endpoint, methods=list(methods or ("GET",)))

        return [
            at("/tasks", self.tasks),
            at("/tasks/{task_id:int}", self.task),
            at("/tasks/{task_id:int}/worker-units-ids", self.worker_units_ids),
            at("/tasks/{task_id:int}/timeline", self.timeline),
            at("/tasks/{task_id:int}/worker-opinions", self.worker_opinions),
            at("/tasks/{task_id:int}/stats-results", self.stats_results),
            at("/tasks/{task_id:int}/export-results", self.not_here),
            at("/tasks/{task_id:int}/{n_units:int}/export-results.json", self.not_here),
            at("/units", self.units),
            at("/units/details", self.units_details),
            at("/units/approve", self.approve, "POST"),
            at("/units/soft-reject", self.soft_reject, "POST"),
            at("/units/reject", self.reject, "POST"),
            at("/units/{unit_id:int}/static/fieldname/{fieldname:path}", self.unit_file),
            at("/units/{unit_id:int}/static/{filename:path}", self.unit_file),
            at("/workers/{worker_id:int}/block", self.block, "POST"),
            at("/workers/{worker_id:int}/qualifications", self.worker_qualifications),
            at("/qualifications", self.qualifications, "GET", "POST"),
            at("/qualifications/{qualification_id:int}", self.qualification, "GET", "PATCH", "DELETE"),
            at("/qualifications/{qualification_id:int}/details", self.qualification_details),
            at("/qualifications/{qualification_id:int}/workers", self.qualification_workers),
            at("/qualifications/{qualification_id:int}/workers/{worker_id:int}/grant", self.grant, "POST", "PATCH"),
            at("/qualifications/{qualification_id:int}/workers/{worker_id:int}/revoke", self.revoke, "POST",
               "PATCH"),
            at("/granted-qualifications", self.granted_qualifications),
            at("/review-stats", self.review_stats),
            at("/{path:path}", self.unknown, "GET", "POST", "PUT", "PATCH", "DELETE"),
        ]
