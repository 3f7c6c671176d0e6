"""The HTTP face of prolific-local: Prolific's researcher API under ``/api/v1/`` (a token in
``Authorization``), the participant's pages, and a JSON API for simulated participants under ``/local``."""

from __future__ import annotations

import asyncio
import html
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mephisto_dist.prolific_local import accounts, eligibility, studies
from mephisto_dist.prolific_local.faults import ProlificFault
from mephisto_dist.prolific_local.store import Store

API = "/api/v1"
PARTICIPANT_COOKIE = "prolific_local_pid"
DEFAULT_PAGE_SIZE = 100  # items per page of a listing when the caller asks for none (``page_size``)
MAX_PAGE_SIZE = 500
Handler = Callable[[sqlite3.Connection, Request, dict[str, Any], float], Any]


class Service:
    def __init__(self, store: Store, *, api_key: str | None = None, processing_s: float = 0.5,
                 slow_pay_s: float = 0.0, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.store = store
        self.page_size = page_size
        self.api_key = api_key
        self.processing_s = processing_s
        self.slow_pay_s = slow_pay_s
        self.lock = threading.Lock()  # one request at a time on the file: SQLite serialises writers anyway

    def count(self, db: sqlite3.Connection, endpoint: str) -> None:
        db.execute("INSERT INTO call_count VALUES (?, 1) ON CONFLICT (endpoint) DO UPDATE SET calls = calls + 1",
                   (endpoint,))


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ProlificFault(400, "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ProlificFault(400, "The request body must be a JSON object.")
    return data


def api(method: str, path: str, handler: Handler, status: int = 200, *, slow: bool = False) -> Route:
    """A researcher API endpoint: the token checked, the handler run in one transaction, errors answered
    as Prolific's. ``slow``: answered ``--slow-pay-s`` after the transaction committed."""
    endpoint = f"{method} {path}"

    async def serve(request: Request) -> Response:
        service: Service = request.app.state.service
        try:
            token = request.headers.get("authorization", "")
            scheme, _, key = token.partition(" ")
            if scheme != "Token" or not key.strip() or (service.api_key is not None and key != service.api_key):
                raise ProlificFault(401, "Invalid token.", "Authentication failed")
            data = await _body(request)
            with service.lock, service.store.transaction() as db:
                service.count(db, endpoint)
                result = handler(db, request, data, time.time())
                if method == "GET" and isinstance(result, dict) and "results" in result and "_links" not in result:
                    result = _paged_listing(request, result)
        except ProlificFault as fault:
            return JSONResponse(fault.body(), status_code=fault.status)
        if slow and service.slow_pay_s:
            await asyncio.sleep(service.slow_pay_s)
        if result is None:
            return Response(status_code=204)
        return JSONResponse(result, status_code=status)

    return Route(API + path, serve, methods=[method])


def _p(request: Request, name: str) -> str:
    return str(request.path_params[name])


# -- paging -----------------------------------------------------------------------------------------------


def _whole(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ProlificFault(400, {name: ["A valid integer is required."]}) from None
    if not low <= value <= high:
        raise ProlificFault(404, "Invalid page.", "Not found") if name == "page" else \
            ProlificFault(400, {name: [f"Ensure this value is between {low} and {high}."]})
    return value


def page_of(request: Request) -> tuple[int, int]:
    """The page asked for (``page``, from 1) and its size (``page_size``, else the service's)."""
    service: Service = request.app.state.service
    return (_whole(request, "page", 1, 1, 1 << 31),
            _whole(request, "page_size", service.page_size, 1, max(MAX_PAGE_SIZE, service.page_size)))


def paged(request: Request, results: list[Any], count: int) -> dict[str, Any]:
    """One page of a listing as Prolific answers it: ``results``, ``_links`` (``self``, ``next``,
    ``previous`` and ``last``, each ``{"href", "title"}``; ``next`` and ``previous`` null at the ends) and
    ``meta.count`` (the items over every page). A page past the last is Prolific's 404 but the first, which
    is always there (empty)."""
    page, size = page_of(request)
    last = max(1, -(-count // size))
    if page > last:
        raise ProlificFault(404, "Invalid page.", "Not found")

    def link(number: int, title: str) -> dict[str, str]:
        return {"href": str(request.url.include_query_params(page=number, page_size=size)), "title": title}

    return {"results": results, "_links": {
        "self": link(page, "Current"), "next": link(page + 1, "Next") if page < last else None,
        "previous": link(page - 1, "Previous") if page > 1 else None, "last": link(last, "Last")},
        "meta": {"count": count}}


def _paged_listing(request: Request, listing: dict[str, Any]) -> dict[str, Any]:
    """A small listing read whole, paged afterwards."""
    items = list(listing["results"])
    page, size = page_of(request)
    return {**listing, **paged(request, items[(page - 1) * size:page * size], len(items))}


def _all_studies(db: sqlite3.Connection, project_id: str | None, now: float) -> list[dict[str, Any]]:
    query, params = "SELECT * FROM study", tuple[str, ...]()
    if project_id:
        query, params = query + " WHERE project_id = ?", (project_id,)
    rows = db.execute(query + " ORDER BY seq", params).fetchall()
    return [studies.public_study(studies.study_view(db, r, now)) for r in rows]


def _sql_page(db: sqlite3.Connection, request: Request, table: str, where: str,
              params: tuple[str, ...]) -> tuple[list[sqlite3.Row], int]:
    """One page of a table's rows (in the order they were made), and how many there are in all."""
    page, size = page_of(request)
    count = int(db.execute(f"SELECT COUNT(*) FROM {table}{where}", params).fetchone()[0])
    rows = db.execute(f"SELECT * FROM {table}{where} ORDER BY seq LIMIT ? OFFSET ?",
                      (*params, size, (page - 1) * size)).fetchall()
    return rows, count


def _list_studies(db: sqlite3.Connection, request: Request, project_id: str | None, now: float) -> dict[str, Any]:
    rows, count = _sql_page(db, request, "study", " WHERE project_id = ?" if project_id else "",
                            (project_id,) if project_id else ())
    return paged(request, [studies.public_study(studies.study_view(db, r, now)) for r in rows], count)


def _list_submissions(db: sqlite3.Connection, request: Request, now: float) -> dict[str, Any]:
    study_id = request.query_params.get("study")
    if study_id:
        studies.study_row(db, study_id)
    rows, count = _sql_page(db, request, "submission", " WHERE study_id = ?" if study_id else "",
                            (study_id,) if study_id else ())
    return paged(request, [studies.submission_view(r, now) for r in rows], count)


def _study(db: sqlite3.Connection, study_id: str, now: float) -> dict[str, Any]:
    return studies.public_study(studies.study_view(db, studies.study_row(db, study_id), now))


def _routes(processing_s: Callable[[Request], float]) -> list[Route]:
    return [
        api("GET", "/users/me/", lambda db, r, d, now: accounts.me()),
        api("GET", "/workspaces/", lambda db, r, d, now: accounts.list_workspaces(db)),
        api("POST", "/workspaces/", lambda db, r, d, now: accounts.create_workspace(db, d, now), 201),
        api("GET", "/workspaces/{id}/", lambda db, r, d, now: accounts.workspace(db, _p(r, "id"))),
        api("PATCH", "/workspaces/{id}/", lambda db, r, d, now: accounts.update_workspace(db, _p(r, "id"), d)),
        api("GET", "/workspaces/{id}/balance/", lambda db, r, d, now: accounts.balance(db, _p(r, "id"))),
        api("GET", "/workspaces/{id}/projects/", lambda db, r, d, now: accounts.list_projects(db, _p(r, "id"))),
        api("POST", "/workspaces/{id}/projects/",
            lambda db, r, d, now: accounts.create_project(db, _p(r, "id"), d, now), 201),
        api("GET", "/workspaces/{id}/projects/{project}/",
            lambda db, r, d, now: accounts.project(db, _p(r, "id"), _p(r, "project"))),
        api("GET", "/projects/{id}/studies/", lambda db, r, d, now: _list_studies(db, r, _p(r, "id"), now)),
        api("GET", "/studies/", lambda db, r, d, now: _list_studies(db, r, None, now)),
        api("POST", "/studies/",
            lambda db, r, d, now: studies.public_study(studies.create_study(db, d, now)), 201),
        api("GET", "/studies/{id}/", lambda db, r, d, now: _study(db, _p(r, "id"), now)),
        api("POST", "/study-cost-calculator/", lambda db, r, d, now: studies.study_cost(d)),
        api("GET", "/eligibility-requirements/", lambda db, r, d, now: eligibility.listing()),
        api("POST", "/eligibility-count/", lambda db, r, d, now: eligibility.count(db, d)),
        api("PATCH", "/studies/{id}/",
            lambda db, r, d, now: studies.public_study(studies.update_study(db, _p(r, "id"), d, now))),
        api("DELETE", "/studies/{id}/", lambda db, r, d, now: studies.delete_study(db, _p(r, "id"))),
        api("POST", "/studies/{id}/transition/", lambda db, r, d, now: studies.public_study(
            studies.transition_study(db, _p(r, "id"), str(d.get("action")), now, processing_s(r)))),
        api("GET", "/submissions/", lambda db, r, d, now: _list_submissions(db, r, now)),
        api("GET", "/submissions/{id}/",
            lambda db, r, d, now: studies.submission_view(studies.submission_row(db, _p(r, "id")), now)),
        api("POST", "/submissions/{id}/transition/",
            lambda db, r, d, now: studies.transition_submission(db, _p(r, "id"), d, now, processing_s(r))),
        api("POST", "/submissions/bonus-payments/", lambda db, r, d, now: accounts.set_up_bonuses(db, d), 201),
        api("POST", "/bulk-bonus-payments/{id}/pay/",
            lambda db, r, d, now: accounts.pay_bonuses(db, _p(r, "id"), now), 202, slow=True),
        api("POST", "/invitations/", lambda db, r, d, now: accounts.invite(db, d, now), 201),
        api("GET", "/participant-groups/",
            lambda db, r, d, now: accounts.list_groups(db, r.query_params.get("project_id"))),
        api("POST", "/participant-groups/", lambda db, r, d, now: accounts.create_group(db, d, now), 201),
        api("GET", "/participant-groups/{id}/", lambda db, r, d, now: accounts.group(db, _p(r, "id"))),
        api("DELETE", "/participant-groups/{id}/", lambda db, r, d, now: accounts.delete_group(db, _p(r, "id"))),
        api("GET", "/participant-groups/{id}/participants/",
            lambda db, r, d, now: accounts.members(db, _p(r, "id"))),
        api("POST", "/participant-groups/{id}/participants/",
            lambda db, r, d, now: accounts.change_members(db, _p(r, "id"), d, now, add=True)),
        api("DELETE", "/participant-groups/{id}/participants/",
            lambda db, r, d, now: accounts.change_members(db, _p(r, "id"), d, now, add=False)),
        api("POST", "/messages/", lambda db, r, d, now: accounts.send_message(db, d, now), 201),
        api("GET", "/messages/", lambda db, r, d, now: accounts.list_messages(
            db, r.query_params.get("user_id"), r.query_params.get("created_after"))),
        api("GET", "/messages/unread/", lambda db, r, d, now: accounts.unread_messages()),
    ]


# -- the participant's side -------------------------------------------------------------------------------


def _participant(run: Callable[[sqlite3.Connection, float], Any]) -> Callable[[Request], Awaitable[Any]]:
    async def call(request: Request) -> Any:
        service: Service = request.app.state.service
        with service.lock, service.store.transaction() as db:
            return run(db, time.time())
    return call


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>", status_code=status)


async def home(request: Request) -> Response:
    def listed(db: sqlite3.Connection, now: float) -> list[dict[str, Any]]:
        return [v for v in _all_studies(db, None, now) if v["status"] == studies.ACTIVE]

    found = await _participant(listed)(request)
    items = "".join(
        f"<li><form method='get' action='/studies/{s['id']}/start'>{html.escape(s['name'])} "
        f"({s['total_available_places'] - s['places_taken']} places) <input name='participant_id' "
        f"placeholder='participant id' required> <button>Take part</button></form></li>" for s in found)
    return _page("prolific-local studies", f"<ul id='studies'>{items}</ul>" if items else
                 "<p id='studies'>No study is open.</p>")


async def start_page(request: Request) -> Response:
    participant = request.query_params.get("participant_id") or request.cookies.get(PARTICIPANT_COOKIE) or ""
    if not participant.strip():
        return _page("Who are you?", "<p>A participant id is needed (participant_id=...).</p>", 400)
    try:
        url = await _participant(lambda db, now: _start(db, _p(request, "id"), participant, now)["url"])(request)
    except ProlificFault as fault:
        return _page("Not available", f"<p id='reason'>{html.escape(str(fault.detail))}</p>", fault.status)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(PARTICIPANT_COOKIE, participant, samesite="lax")
    return response


def _start(db: sqlite3.Connection, study_id: str, participant: str, now: float) -> dict[str, Any]:
    submission = studies.start_submission(db, study_id, participant, now)
    return {"submission_id": submission["id"], "study_id": study_id, "participant_id": participant,
            "url": studies.study_url(studies.study_row(db, study_id), submission)}


async def complete_page(request: Request) -> Response:
    participant = request.cookies.get(PARTICIPANT_COOKIE) or request.query_params.get("PROLIFIC_PID") or ""
    code = request.query_params.get("cc") or ""
    try:
        done = await _participant(lambda db, now: studies.submission_view(
            studies.complete(db, participant, code, now), now))(request)
    except ProlificFault as fault:
        return _page("Submission not completed", f"<p id='reason'>{html.escape(str(fault.detail))}</p>", 400)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(done)
    return _page("Study completed", f"<p id='completed' data-submission='{html.escape(done['id'])}'>Thank you: "
                 f"your submission is awaiting review (code {html.escape(code)}).</p><p><a href='/'>Studies</a></p>")


def _local(run: Callable[[sqlite3.Connection, Request, dict[str, Any], float], Any]) -> Callable[
        [Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        service: Service = request.app.state.service
        try:
            data = await _body(request)
            with service.lock, service.store.transaction() as db:
                return JSONResponse(run(db, request, data, time.time()))
        except ProlificFault as fault:
            return JSONResponse(fault.body(), status_code=fault.status)
    return serve


def _stats(db: sqlite3.Connection) -> dict[str, Any]:
    calls = {r["endpoint"]: r["calls"] for r in db.execute("SELECT * FROM call_count")}
    rows = {table: int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("workspace", "project", "study", "submission", "bulk_bonus", "participant_group", "message",
                          "invitation")}
    payments = [{"id": r["id"], "study_id": r["study_id"], "rows": json.loads(r["rows"]),
                 "amount_cents": r["amount_cents"], "paid_at": studies.iso(r["paid_at"])}
                for r in db.execute("SELECT b.*, p.paid AS paid_at FROM bonus_payment p JOIN bulk_bonus b "
                                    "ON b.id = p.bulk_id ORDER BY p.seq")]
    return {"Calls": calls, "Rows": rows, "BonusesPaid": len(payments), "BonusPayments": payments}


def _study_state(db: sqlite3.Connection, study_id: str, now: float) -> dict[str, Any]:
    """One study as the service holds it, read in one transaction (for a sampler): its status, places and
    every submission's participant and status."""
    view = studies.study_view(db, studies.study_row(db, study_id), now)
    rows = db.execute("SELECT participant_id, status FROM submission WHERE study_id = ? ORDER BY seq", (study_id,))
    return {"status": view["status"], "total_available_places": view["total_available_places"],
            "places_taken": view["places_taken"],
            "submissions": [{"participant_id": r["participant_id"], "status": r["status"]} for r in rows]}


def create_app(service: Service) -> Starlette:
    app = Starlette(routes=[
        *_routes(lambda request: service.processing_s),
        Route("/", home),
        Route("/studies/{id}/start", start_page),
        Route("/submissions/complete", complete_page),
        Route("/local/studies/{id}/start", _local(lambda db, r, d, now: _start(
            db, _p(r, "id"), str(d.get("participant_id") or ""), now)), methods=["POST"]),
        Route("/local/submissions/{id}/return", _local(
            lambda db, r, d, now: studies.return_submission(db, _p(r, "id"), now)), methods=["POST"]),
        Route("/local/submissions/{id}/time-out", _local(
            lambda db, r, d, now: studies.time_out_submission(db, _p(r, "id"), now)), methods=["POST"]),
        Route("/local/studies/{id}/state", _local(lambda db, r, d, now: _study_state(db, _p(r, "id"), now))),
        Route("/local/stats", _local(lambda db, r, d, now: _stats(db))),
    ])
    app.state.service = service
    return app

