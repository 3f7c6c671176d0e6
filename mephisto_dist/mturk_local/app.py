"""The HTTP face of mturk-local: ``POST /`` with ``X-Amz-Target`` is the requester API (JSON 1.1, as
boto3 sends it); the rest is the worker side, as pages and as a JSON API under ``/api``."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mephisto_dist.mturk_local import hits, pages, payments, qualifications, worker
from mephisto_dist.mturk_local.faults import RequestFault, ServiceFault, Throttled, TurkFault
from mephisto_dist.mturk_local.store import Store
from mephisto_dist.mturk_local.validation import check_shape, operation

TARGET_PREFIX = "MTurkRequesterServiceV20170117."
Operation = Callable[[sqlite3.Connection, dict[str, Any], float], dict[str, Any]]
OPERATIONS: dict[str, Operation] = {
    "CreateHITType": hits.create_hit_type,
    "CreateHITWithHITType": hits.create_hit_with_hit_type,
    "CreateHIT": hits.create_hit,
    "GetHIT": hits.get_hit,
    "ListHITs": hits.list_hits,
    "ListReviewableHITs": hits.list_reviewable_hits,
    "UpdateHITReviewStatus": hits.update_hit_review_status,
    "UpdateExpirationForHIT": hits.update_expiration,
    "DeleteHIT": hits.delete_hit,
    "ListAssignmentsForHIT": hits.list_assignments_for_hit,
    "GetAssignment": hits.get_assignment,
    "ApproveAssignment": payments.approve_assignment,
    "RejectAssignment": payments.reject_assignment,
    "SendBonus": payments.send_bonus,
    "ListBonusPayments": payments.list_bonus_payments,
    "GetAccountBalance": payments.get_account_balance,
    "CreateQualificationType": qualifications.create_qualification_type,
    "GetQualificationType": qualifications.get_qualification_type,
    "ListQualificationTypes": qualifications.list_qualification_types,
    "DeleteQualificationType": qualifications.delete_qualification_type,
    "AssociateQualificationWithWorker": qualifications.associate,
    "DisassociateQualificationFromWorker": qualifications.disassociate,
    "ListWorkersWithQualificationType": qualifications.list_workers_with_qualification_type,
    "CreateWorkerBlock": qualifications.create_worker_block,
    "DeleteWorkerBlock": qualifications.delete_worker_block,
    "ListWorkerBlocks": qualifications.list_worker_blocks,
    "NotifyWorkers": qualifications.notify_workers,
}
AMZ_JSON = "application/x-amz-json-1.1"


class RateBucket:
    """MTurk throttles a requester calling too fast: ``rate_per_s`` calls a second with a burst of as many
    (0 turns throttling off)."""

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._capacity = max(1.0, rate_per_s)
        self._tokens = self._capacity
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        if self.rate_per_s <= 0:
            return True
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class Service:
    def __init__(self, store: Store, rate_per_s: float, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.bucket = RateBucket(rate_per_s)
        self.clock = clock

    def call(self, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            if not target.startswith(TARGET_PREFIX):
                raise RequestFault("AWS.MechanicalTurk.UnknownOperation", f"Unknown target {target!r}.")
            name = target[len(TARGET_PREFIX):]
            handler = OPERATIONS.get(name)
            if handler is None:
                operation(name)  # a real MTurk operation mturk-local does not serve is said so below
                raise RequestFault("AWS.MechanicalTurk.UnsupportedOperation", f"mturk-local does not serve {name}.")
            if not self.bucket.take():
                raise Throttled()
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                raise RequestFault("AWS.MechanicalTurk.ParameterValidationError", "The body is not JSON.") from None
            check_shape(operation(name), params)
            with self.store.transaction() as db:
                now = self.clock()
                hits.sweep(db, now)
                db.execute("INSERT INTO call_count (operation, calls) VALUES (?, 1)"
                           " ON CONFLICT (operation) DO UPDATE SET calls = calls + 1", (name,))
                return 200, handler(db, params, now)
        except TurkFault as fault:
            return fault.http_status, fault.body()
        except Exception as error:  # noqa: BLE001 - any bug of ours reaches the caller as MTurk's ServiceFault
            internal = ServiceFault("AWS.MechanicalTurk.InternalError", f"{type(error).__name__}: {error}")
            return internal.http_status, internal.body()

    def worker_call(self, action: Callable[[sqlite3.Connection, float], Any]) -> Any:
        with self.store.transaction() as db:
            now = self.clock()
            hits.sweep(db, now)
            return action(db, now)


def create_app(service: Service) -> Starlette:
    async def root_post(request: Request) -> Response:
        status, body = service.call(request.headers.get("x-amz-target", ""), await request.body())
        return Response(json.dumps(body), status, media_type=AMZ_JSON,
                        headers={"x-amzn-RequestId": f"mturk-local-{time.time_ns()}"})

    return Starlette(routes=[Route("/", root_post, methods=["POST"]), *worker_routes(service)])


def _submit_to(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def worker_routes(service: Service) -> list[Route]:
    """The worker side. JSON routes answer refusals with ``{"error": ...}``; pages with a short page."""

    def json_route(path: str, action: Callable[[Request, dict[str, Any]], Any], methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            body = await request.json() if request.method == "POST" and await request.body() else {}
            try:
                return JSONResponse(action(request, body))
            except worker.WorkerRefusal as refusal:
                return JSONResponse({"error": str(refusal)}, refusal.status)
        return Route(path, endpoint, methods=methods)

    def api_hits(request: Request, body: dict[str, Any]) -> Any:
        who = request.query_params.get("workerId")
        return {"HITs": service.worker_call(lambda db, now: worker.available_hits(db, who, now))}

    def api_preview(request: Request, body: dict[str, Any]) -> Any:
        hit_id, who = request.path_params["hit_id"], request.query_params.get("workerId")
        return service.worker_call(lambda db, now: worker.preview(db, hit_id, who, _submit_to(request)))

    def api_accept(request: Request, body: dict[str, Any]) -> Any:
        hit_id, who = request.path_params["hit_id"], worker.check_worker_id(body.get("workerId"))
        return service.worker_call(lambda db, now: worker.accept(db, hit_id, who, now, _submit_to(request)))

    def api_return(request: Request, body: dict[str, Any]) -> Any:
        aid = request.path_params["assignment_id"]
        service.worker_call(lambda db, now: worker.return_assignment(db, aid, body.get("workerId")))
        return {"AssignmentId": aid, "Status": "Returned"}

    def api_assignments(request: Request, body: dict[str, Any]) -> Any:
        who = request.path_params["worker_id"]
        return {"Assignments": service.worker_call(lambda db, now: worker.worker_assignments(db, who))}

    def api_messages(request: Request, body: dict[str, Any]) -> Any:
        who = request.path_params["worker_id"]
        return service.worker_call(lambda db, now: worker.worker_messages(db, who))

    def api_stats(request: Request, body: dict[str, Any]) -> Any:
        def read(db: sqlite3.Connection, now: float) -> Any:
            calls = {r[0]: r[1] for r in db.execute("SELECT operation, calls FROM call_count")}
            counted = {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                       for table in ("hit", "assignment", "bonus", "hit_type", "qualification_type")}
            return {"Calls": calls, "Rows": counted}
        return service.worker_call(read)

    return [
        json_route("/api/hits", api_hits, ["GET"]),
        json_route("/api/hits/{hit_id}/preview", api_preview, ["GET"]),
        json_route("/api/hits/{hit_id}/accept", api_accept, ["POST"]),
        json_route("/api/assignments/{assignment_id}/return", api_return, ["POST"]),
        json_route("/api/workers/{worker_id}/assignments", api_assignments, ["GET"]),
        json_route("/api/workers/{worker_id}/messages", api_messages, ["GET"]),
        json_route("/api/stats", api_stats, ["GET"]),
        *submit_routes(service),
        *page_routes(service),
    ]


def submit_routes(service: Service) -> list[Route]:
    """``/mturk/externalSubmit`` (a form, as the task page posts it) and its JSON twin."""

    async def external_submit(request: Request) -> Response:
        fields = {k: str(val) for k, val in (await request.form()).items()} if request.method == "POST" \
            else dict(request.query_params)
        aid = fields.get("assignmentId", "")
        try:
            done = service.worker_call(lambda db, now: worker.submit(db, aid, fields, now))
        except worker.WorkerRefusal as refusal:
            return HTMLResponse(pages.refusal(str(refusal)), refusal.status)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(done)
        return HTMLResponse(pages.submitted(done["WorkerId"], aid))

    async def api_submit(request: Request) -> Response:
        body = await request.json()
        aid = request.path_params["assignment_id"]
        fields = {k: str(val) for k, val in body.items()}
        try:
            return JSONResponse(service.worker_call(lambda db, now: worker.submit(db, aid, fields, now)))
        except worker.WorkerRefusal as refusal:
            return JSONResponse({"error": str(refusal)}, refusal.status)

    return [
        Route("/mturk/externalSubmit", external_submit, methods=["GET", "POST"]),
        Route("/api/assignments/{assignment_id}/submit", api_submit, methods=["POST"]),
    ]


def page_routes(service: Service) -> list[Route]:
    async def hit_list(request: Request) -> Response:
        who = request.query_params.get("workerId") or None
        listed = service.worker_call(lambda db, now: worker.available_hits(db, who, now))
        submitted = request.query_params.get("submitted")
        notice = f"Assignment {submitted} submitted." if submitted else None
        return HTMLResponse(pages.hit_list(listed, who, notice))

    async def hit_preview(request: Request) -> Response:
        hit_id, who = request.path_params["hit_id"], request.query_params.get("workerId") or None
        try:
            view = service.worker_call(lambda db, now: worker.preview(db, hit_id, who, _submit_to(request)))
        except worker.WorkerRefusal as refusal:
            return HTMLResponse(pages.refusal(str(refusal)), refusal.status)
        return HTMLResponse(pages.preview(view, who))

    async def hit_accept(request: Request) -> Response:
        hit_id, who = request.path_params["hit_id"], str((await request.form()).get("workerId") or "")
        try:
            worker.check_worker_id(who)
            view = service.worker_call(lambda db, now: worker.accept(db, hit_id, who, now, _submit_to(request)))
        except worker.WorkerRefusal as refusal:
            return HTMLResponse(pages.refusal(str(refusal)), refusal.status)
        return RedirectResponse(f"/assignments/{view['AssignmentId']}?workerId={who}", 303)

    async def assignment_page(request: Request) -> Response:
        aid = request.path_params["assignment_id"]

        def load(db: sqlite3.Connection, now: float) -> dict[str, Any]:
            row = db.execute("SELECT * FROM assignment WHERE id = ? AND status = 'Accepted'", (aid,)).fetchone()
            if row is None:
                raise worker.WorkerRefusal(f"assignment {aid} is not held by anyone", 404)
            hit = hits.load_hit(db, row["hit_id"])
            params = {"assignmentId": aid, "hitId": row["hit_id"], "workerId": row["worker_id"],
                      "turkSubmitTo": _submit_to(request)}
            return {"AssignmentId": aid, "WorkerId": row["worker_id"], **worker.frame(hit["question"], params)}
        try:
            view = service.worker_call(load)
        except worker.WorkerRefusal as refusal:
            return HTMLResponse(pages.refusal(str(refusal)), refusal.status)
        return HTMLResponse(pages.work(view, view["WorkerId"]))

    async def assignment_return(request: Request) -> Response:
        aid, who = request.path_params["assignment_id"], str((await request.form()).get("workerId") or "")
        try:
            service.worker_call(lambda db, now: worker.return_assignment(db, aid, who))
        except worker.WorkerRefusal as refusal:
            return HTMLResponse(pages.refusal(str(refusal)), refusal.status)
        return RedirectResponse(f"/?workerId={who}", 303)

    return [
        Route("/", hit_list, methods=["GET"]),
        Route("/projects/{hit_id}", hit_preview, methods=["GET"]),
        Route("/projects/{hit_id}/accept", hit_accept, methods=["POST"]),
        Route("/assignments/{assignment_id}", assignment_page, methods=["GET"]),
        Route("/assignments/{assignment_id}/return", assignment_return, methods=["POST"]),
    ]
