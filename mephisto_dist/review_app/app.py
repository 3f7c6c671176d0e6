"""The review app's routes: sign-in, the runs, one run (live), reviewing its completed units by worker,
bulk approval with a preview (a review batch, worked by Celery, whose page shows its progress), blocking,
workers' histories and the submitted files; Mephisto's TaskReview JSON API under ``/api/``
(:mod:`.mephisto_api`) and, when given, a build of its client (:mod:`.mephisto_client`). Every page needs a
signed session; every form sends the session's CSRF token back. Decisions go through the same services
and ledger as ``mephisto-dist review`` and record their reviewer (``app:<name>``)."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio.to_thread
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import Unit, Worker
from mephisto_dist.domain.diagnosis import ago
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.errors import MephistoDistError, NotAllowed, NotFoundError, ServiceError
from mephisto_dist.queue import send_outbox
from mephisto_dist.reconcile.records import recent_findings
from mephisto_dist.review import batches, reviewing, tips, workers
from mephisto_dist.review.decisions import (
    AlreadyDecided,
    Decision,
    NotReviewable,
    check_decision,
    failed_call_summary,
    parse_bonus,
)
from mephisto_dist.review.export import unit_records
from mephisto_dist.review.sending import send_calls
from mephisto_dist.review_app import mephisto_api, pages
from mephisto_dist.review_app.history import HistoryCache
from mephisto_dist.review_app.mephisto_client import MephistoClient, file_under
from mephisto_dist.review_app.sessions import COOKIE, SESSION_MAX_AGE_S, Session, SessionCodec, check_login
from mephisto_dist.runs.bundles import run_review_bundle
from mephisto_dist.runs.failed_launches import resend_failed_launches
from mephisto_dist.runs.status import list_runs, processes, run_diagnosis, run_status
from mephisto_dist.runs.task_runs import unit_counts
from mephisto_dist.runtime import Runtime
from mephisto_dist.storage import MissingKey
from mephisto_dist.work.uploads import stored_keys

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
UNITS_PER_PAGE = 100
BATCH_FINISH_WAIT_S = 10.0
"""How long a stopping app waits for the batch chunk its own thread is working (no Redis configured)."""
DECISIONS = {"approve": Decision.APPROVE, "soft_reject": Decision.SOFT_REJECT, "reject": Decision.REJECT}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
REVIEW_FRAME_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                    "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-eval'; frame-ancestors 'self'; "
                    "form-action 'none'")
"""A review bundle's frame: framed by this app's pages (and the TaskReview client's); its bundle may be a
webpack development build (``eval``) that injects its styles, as Mephisto's ``build:review`` makes it."""


def _now() -> datetime:
    return datetime.now(UTC)


class ReviewApp:
    """The routes, over one Runtime; reviewers and the session key as configured."""

    def __init__(self, runtime: Runtime, reviewers: dict[str, str], secret: str, *, secure_cookie: bool) -> None:
        self.runtime = runtime
        self.reviewers = reviewers
        self.codec = SessionCodec(secret)
        self.secure_cookie = secure_cookie
        self.histories = HistoryCache(runtime)

    # -- signing in --------------------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        return self.codec.load(request.cookies.get(COOKIE), now=time.time())

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(pages.login_page(next_url=_local(request.query_params.get("next"))))
        form = await request.form()
        name, password = str(form.get("reviewer") or ""), str(form.get("password") or "")
        next_url = _local(str(form.get("next") or "/"))
        if not check_login(self.reviewers, name, password):
            log.warning("review app: a failed sign-in as %r from %s", name[:64], request.client)
            return HTMLResponse(pages.login_page(error="unknown reviewer or wrong password", next_url=next_url),
                                status_code=401)
        response = RedirectResponse(next_url, status_code=303)
        response.set_cookie(COOKIE, self.codec.dump(self.codec.new(name, now=time.time())),
                            max_age=SESSION_MAX_AGE_S, httponly=True, samesite="strict", secure=self.secure_cookie)
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    # -- watching ----------------------------------------------------------------------------------

    def index(self, request: Request) -> Response:
        session = _session(request)
        return HTMLResponse(pages.runs_page(list_runs(self.runtime), reviewer=session.reviewer, csrf=session.csrf))

    def run(self, request: Request) -> Response:
        session = _session(request)
        run_id = _int(request.path_params["run_id"])
        return HTMLResponse(pages.run_page(run_id, self._live(run_id), reviewer=session.reviewer,
                                           csrf=session.csrf, said=request.query_params.get("said", "")))

    def live(self, request: Request) -> Response:
        return HTMLResponse(self._live(_int(request.path_params["run_id"])))

    def _live(self, run_id: int) -> str:
        now = _now()
        status = run_status(self.runtime, run_id, now=now)
        seen = processes(self.runtime)
        embedded = self.runtime.settings.embedded_redis
        calls_failed, call_error = failed_call_summary(self.runtime.sessions, run_id)
        if seen.facts.worker_ages_s is None:
            lines = ["Redis, Celery workers and beat: not running (the embedded default runs them inside an "
                     "attached mephisto-dist run)" if embedded else "Redis does not answer: workers and beat unknown"]
        else:
            lines = [f"Celery worker {w.name}, last seen {ago(w.age_s)} ago" for w in seen.workers[:5]] or [
                "no Celery worker seen"]
            lines += [f"beat {b.name}, last seen {ago(b.age_s)} ago" for b in seen.beats[:1]] or ["beat never seen"]
        findings = [f"{r.created_at:%H:%M:%S} {r.reconciler}: {r.subject}: {r.found} -> {r.action}"
                    for r in recent_findings(self.runtime.sessions, task_run_id=run_id, limit=5)]
        return pages.run_live(status, run_diagnosis(status, seen.facts, now=now, embedded=embedded),
                              calls_failed=calls_failed, call_error=call_error, processes=lines, findings=findings,
                              now=now, review_batches=batches.recent_batches(self.runtime.sessions, run_id),
                              history=self.histories.history(run_id, now=now))

    async def resend(self, request: Request) -> Response:
        await _checked_form(request)
        run_id = _int(request.path_params["run_id"])
        again = reviewing.calls_and_events_to_resend(self.runtime.sessions, run_id, now=_now())
        launches = resend_failed_launches(self.runtime, [run_id])
        problems = send_calls(self.runtime, again.call_ids)
        send_outbox(self.runtime.queue, list(again.message_ids))
        said = (f"{len(again.call_ids)} provider call(s), {launches} launch(es) and {len(again.message_ids)} "
                f"TaskRunner event(s) sent again" + (f"; {' '.join(problems)}" if problems else ""))
        return _back(f"/runs/{run_id}", said)

    # -- reviewing ---------------------------------------------------------------------------------

    def review(self, request: Request) -> Response:
        session = _session(request)
        run_id = _int(request.path_params["run_id"])
        after = _int(request.query_params.get("after") or 0)
        with read_transaction(self.runtime.sessions) as db:
            total = unit_counts(db, run_id).get(UnitStatus.COMPLETED, 0)
            # One page of units: a run of 10,000 completed units is not read whole to show 100.
            records = list(unit_records(db, [run_id], status=UnitStatus.COMPLETED.value, limit=UNITS_PER_PAGE + 1,
                                        after_id=after))
        more = len(records) > UNITS_PER_PAGE
        records = records[:UNITS_PER_PAGE]
        groups: dict[str, tuple[str, int, list[dict[str, Any]]]] = {}
        for record in records:
            name = str(record["worker_name"])
            groups.setdefault(name, (name, int(record["worker_id"]), []))[2].append(record)
        return HTMLResponse(pages.review_page(run_id, sorted(groups.values()), reviewer=session.reviewer,
                                              csrf=session.csrf, said=request.query_params.get("said", ""),
                                              shown=len(records), total=total,
                                              review_bundle=self._has_review_bundle(run_id),
                                              next_after=int(records[-1]["unit_id"]) if more else None))

    async def decide(self, request: Request) -> Response:
        form = await _checked_form(request)
        session = _session(request)
        decision = DECISIONS.get(str(form.get("decision")))
        if decision is None:
            raise _BadRequest("choose approve, soft_reject or reject")
        unit_ids = [_int(value) for value in form.getlist("unit_id")]
        if not unit_ids:
            raise _BadRequest("no unit was named")
        note = str(form.get("reason") or "").strip() or None
        bonus = parse_bonus(str(form["bonus"])) if str(form.get("bonus") or "").strip() else None
        check_decision(decision, note, bonus)
        decided = reviewing.decide_units(self.runtime.sessions, decision, unit_ids, now=_now(), note=note,
                                         bonus=bonus, by=f"app:{session.reviewer}")
        problems = send_calls(self.runtime, [c for r in decided.reviewed for c in r.call_ids])
        said = f"{decision.value}: unit(s) {', '.join(map(str, unit_ids))}" + (
            f"; {' '.join(problems)}" if problems else "")
        return _back(_local(str(form.get("next") or "/")), said)

    async def approve_worker(self, request: Request) -> Response:
        """Every completed unit of one worker in the run, after a preview: a batch (``approve_all``)."""
        run_id = _int(request.path_params["run_id"])
        worker_id = _int(request.path_params["worker_id"])
        with read_transaction(self.runtime.sessions) as db:
            worker_name = db.scalar(select(Worker.worker_name).where(Worker.id == worker_id))
        if worker_name is None:
            raise NotFoundError(f"worker {worker_id} does not exist")
        return await self._approve_all(request, run_id, worker_id, f"{worker_name}'s")

    async def approve_run(self, request: Request) -> Response:
        return await self._approve_all(request, _int(request.path_params["run_id"]), None, "the run's")

    async def _approve_all(self, request: Request, run_id: int, worker_id: int | None, whose: str) -> Response:
        """GET: how many units and how much in rewards; POST: a review batch, worked by Celery (or, with no
        Redis configured, by this process), so that a thousand units return at once; its page shows
        the progress."""
        session = _session(request)
        waiting = batches.completed_waiting(self.runtime.sessions, run_id, worker_id=worker_id)
        if request.method == "GET":
            return HTMLResponse(pages.approve_preview(run_id, whose, len(waiting.unit_ids), waiting.reward,
                                                      reviewer=session.reviewer, csrf=session.csrf))
        form = await _checked_form(request)
        note = str(form.get("reason") or "").strip() or None
        bonus = parse_bonus(str(form["bonus"])) if str(form.get("bonus") or "").strip() else None
        if not waiting.unit_ids:
            return _back(f"/runs/{run_id}/review", f"no completed unit of {whose[:-2]} waits for a decision")
        started = batches.start_batch(self.runtime.sessions, Decision.APPROVE, waiting.unit_ids, run_id=run_id,
                                      note=note, bonus=bonus, by=f"app:{session.reviewer}", now=_now())
        self.start_batch_work(started)
        return RedirectResponse(f"/batches/{started.batch.batch_id}", status_code=303)

    def start_batch_work(self, started: batches.Started) -> None:
        """Send the batch to the workers; with no Redis configured, work it on a thread of this process."""
        if self.runtime.settings.embedded_redis:
            threading.Thread(target=batches.start_work, args=(self.runtime, started), daemon=True,
                             name=f"review-batch-{started.batch.batch_id}").start()
        else:
            batches.start_work(self.runtime, started)

    def batch(self, request: Request) -> Response:
        session = _session(request)
        progress = batches.batch_progress(self.runtime.sessions, _int(request.path_params["batch_id"]))
        return HTMLResponse(pages.batch_page(progress, reviewer=session.reviewer, csrf=session.csrf))

    def batch_live(self, request: Request) -> Response:
        progress = batches.batch_progress(self.runtime.sessions, _int(request.path_params["batch_id"]))
        return HTMLResponse(pages.batch_live(progress))

    async def block(self, request: Request) -> Response:
        form = await _checked_form(request)
        worker_id = _int(request.path_params["worker_id"])
        reason = str(form.get("reason") or "").strip()
        if not reason:
            raise _BadRequest("say why the worker is blocked")
        with read_transaction(self.runtime.sessions) as db:
            row = db.execute(select(Worker.worker_name, Worker.provider_type).where(Worker.id == worker_id)).first()
        if row is None:
            raise NotFoundError(f"worker {worker_id} does not exist")
        changed = workers.block(self.runtime.sessions, row[0], row[1], reason=reason, qualification=None, now=_now())
        problems = send_calls(self.runtime, changed.call_ids)
        said = (f"blocked {row[0]}" if changed.changed else f"{row[0]} was already blocked") + (
            f"; {' '.join(problems)}" if problems else "")
        return _back(_local(str(form.get("next") or "/workers")), said)

    def tips_list(self, request: Request) -> Response:
        """Tips and feedback answers no reviewer has decided yet (``review.tips``), a run's with ``?run=N``."""
        session = _session(request)
        run = request.query_params.get("run")
        notes = tips.pending(self.runtime.sessions, run_id=_int(run) if run else None)
        return HTMLResponse(pages.tips_page(notes, reviewer=session.reviewer, csrf=session.csrf,
                                            said=request.query_params.get("said", "")))

    async def tips_decide(self, request: Request) -> Response:
        form = await _checked_form(request)
        session = _session(request)
        unit_id, note_id = _int(str(form.get("unit_id") or "")), str(form.get("note_id") or "")
        action = str(form.get("action") or "")
        by = f"app:{session.reviewer}"
        if action in ("accept", "reject"):
            changed = tips.decide_tip(self.runtime.sessions, unit_id, note_id, accept=action == "accept",
                                      reviewer=by, now=_now())
            said = (f"tip of unit {unit_id} {action}ed" + (" and added to the tips file" if action == "accept" else "")
                    if changed else f"that tip of unit {unit_id} was already decided")
        elif action == "reviewed":
            changed = tips.mark_feedback_reviewed(self.runtime.sessions, unit_id, note_id, reviewer=by, now=_now())
            said = (f"feedback of unit {unit_id} marked reviewed" if changed
                    else f"that feedback of unit {unit_id} was already reviewed")
        else:
            raise _BadRequest("choose accept, reject or reviewed")
        return _back(_local(str(form.get("next") or "/tips")), said)

    def worker(self, request: Request) -> Response:
        """One worker: approval rate, median time per unit, units per run, their newest units."""
        session = _session(request)
        detail = workers.worker_detail(self.runtime.sessions, _int(request.path_params["worker_id"]))
        return HTMLResponse(pages.worker_page(detail, reviewer=session.reviewer, csrf=session.csrf,
                                              said=request.query_params.get("said", "")))

    async def worker_qualification(self, request: Request) -> Response:
        """Grant (creating it when new) or revoke a qualification of one worker, from the worker's page."""
        form = await _checked_form(request)
        worker_id = _int(request.path_params["worker_id"])
        name = str(form.get("name") or "").strip()
        action = str(form.get("action") or "")
        if action == "grant":
            raw = str(form.get("value") or "1").strip()
            try:
                value = int(raw)
            except ValueError:
                raise _BadRequest(f"a qualification's value is a whole number, got {raw!r}") from None
            call_ids = workers.grant_by_id(self.runtime.sessions, worker_id, name, value, now=_now())
            said = f"granted {name} = {value}"
        elif action == "revoke":
            call_ids = workers.revoke_by_id(self.runtime.sessions, worker_id, name)
            said = f"revoked {name}"
        else:
            raise _BadRequest("choose grant or revoke")
        problems = send_calls(self.runtime, list(call_ids))
        return _back(f"/workers/{worker_id}", said + (f"; {' '.join(problems)}" if problems else ""))

    def workers_list(self, request: Request) -> Response:
        session = _session(request)
        histories = workers.worker_records(self.runtime.sessions).histories
        return HTMLResponse(pages.workers_page(histories, reviewer=session.reviewer, csrf=session.csrf))

    def unit(self, request: Request) -> Response:
        """One unit: its submission (rendered by the run's review bundle when it has one) and decisions."""
        session = _session(request)
        record = self._record(_int(request.path_params["unit_id"]))
        return HTMLResponse(pages.unit_page(record, reviewer=session.reviewer, csrf=session.csrf,
                                            said=request.query_params.get("said", ""),
                                            review_bundle=self._has_review_bundle(int(record["task_run_id"]))))

    def _record(self, unit_id: int) -> dict[str, Any]:
        with read_transaction(self.runtime.sessions) as db:
            records = list(unit_records(db, _run_of(db, unit_id), include_unsubmitted=True, unit_ids=[unit_id]))
        if not records:
            raise NotFoundError(f"unit {unit_id} does not exist")
        return records[0]

    def _has_review_bundle(self, run_id: int) -> bool:
        with read_transaction(self.runtime.sessions) as db:
            return run_review_bundle(self.runtime.bundles, db, run_id) is not None

    def review_html(self, request: Request) -> Response:
        """Mephisto's ``/api/units/<id>/review.html``: the frame a review bundle renders a submission in;
        the page holding it sends the unit's data in a message (see ``pages._unit``)."""
        unit_id = _int(request.path_params["unit_id"])
        with read_transaction(self.runtime.sessions) as db:
            _run_of(db, unit_id)
        return HTMLResponse(pages.review_frame(f"/units/{unit_id}/bundle.js"),
                            headers={"Content-Security-Policy": REVIEW_FRAME_CSP, "Cache-Control": "no-cache"})

    def review_bundle(self, request: Request) -> Response:
        """Mephisto's ``/units/<id>/bundle.js``: the review bundle of the unit's run (from its run bundle)."""
        unit_id = _int(request.path_params["unit_id"])
        with read_transaction(self.runtime.sessions) as db:
            path = run_review_bundle(self.runtime.bundles, db, _run_of(db, unit_id)[0])
        if path is None:
            raise NotFoundError(f"the run of unit {unit_id} has no review bundle (mephisto.blueprint."
                                "task_source_review not set, or not built when the run was created)")
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    def unit_file(self, request: Request) -> Response:
        """A file a worker uploaded, only through the unit whose outputs name it (a forged key is a 404)."""
        unit_id = _int(request.path_params["unit_id"])
        key = request.path_params["key"]
        with read_transaction(self.runtime.sessions) as db:
            records = list(unit_records(db, _run_of(db, unit_id), include_unsubmitted=True, unit_ids=[unit_id]))
        outputs = (records[0].get("data") or {}).get("outputs") if records else None
        if key not in stored_keys(outputs):
            raise NotFoundError(f"unit {unit_id} has no file {key!r}")
        try:
            chunks = self.runtime.storage.stream(key)
        except MissingKey:
            raise NotFoundError(f"the file {key!r} of unit {unit_id} is missing from storage") from None
        return StreamingResponse(chunks, media_type="application/octet-stream",
                                 headers={"Content-Disposition": f"inline; filename*=UTF-8''{quote(key.rsplit('/', 1)[-1])}"})


def _run_of(db: Any, unit_id: int) -> list[int]:
    run_id = db.scalar(select(Unit.task_run_id).where(Unit.id == unit_id))
    if run_id is None:
        raise NotFoundError(f"unit {unit_id} does not exist")
    return [int(run_id)]


class _BadRequest(Exception):
    pass


class _Forbidden(Exception):
    pass


def _int(raw: object) -> int:
    try:
        return int(str(raw))
    except ValueError:
        raise _BadRequest(f"{str(raw)[:40]!r} is not a number") from None


def _local(url: str | None) -> str:
    """Only a path of this app: a redirect target from a form must not send a reviewer elsewhere."""
    if not url or not url.startswith("/") or url.startswith("//") or urlsplit(url).netloc:
        return "/"
    return url


def _back(url: str, said: str) -> Response:
    separator = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{separator}said={quote(said[:500])}", status_code=303)


def _session(request: Request) -> Session:
    session = request.state.session
    assert isinstance(session, Session)
    return session


async def _checked_form(request: Request) -> FormData:
    form = await request.form()
    if str(form.get("csrf") or "") != _session(request).csrf:
        raise _Forbidden("this form is stale or was not made by this app (CSRF check failed): reload the page")
    return form


class _Gate(BaseHTTPMiddleware):
    """Every page but sign-in needs a session; errors become a page with one line (a JSON ``{"error"}``
    under ``/api/``); headers that keep the pages from being framed, sniffed or loaded with other sites'
    scripts."""

    def __init__(self, app: Any, review: ReviewApp) -> None:
        super().__init__(app)
        self.review = review

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        api = path.startswith(mephisto_api.PREFIX + "/")
        public = path in ("/login",) or path.startswith("/static/")
        session = self.review.session_of(request)
        if session is None and not public:
            if api:
                return _error(401, "sign in first (/login): this API needs the review app's session", api=True)
            if request.method != "GET":
                return _error(401, "sign in first")
            return RedirectResponse(f"/login?next={quote(path)}", status_code=303)
        request.state.session = session
        try:
            response = await call_next(request)
        except mephisto_api.ApiError as error:
            response = _error(error.status, str(error), api=api)
        except _BadRequest as error:
            response = _error(400, str(error), api=api)
        except _Forbidden as error:
            response = _error(403, str(error), api=api)
        except NotFoundError as error:
            response = _error(404, str(error), api=api)
        except ServiceError as error:
            response = _error(503, str(error), api=api)
        except (NotReviewable, AlreadyDecided, NotAllowed) as error:  # the unit moved on, or the state refuses
            response = _error(409, str(error), api=api)
        except MephistoDistError as error:  # a decision that cannot be made as asked: no reason, a bad bonus
            response = _error(400, str(error), api=api)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _warm_queue(runtime: Runtime) -> None:
    try:
        runtime.queue.waiting()  # imports Celery and the broker's transport, and connects: sends nothing
    except Exception:  # Redis away: the first batch says so when it is sent
        log.info("review app: the task queue did not answer at start", exc_info=True)


def _error(status: int, message: str, *, api: bool = False) -> Response:
    if api:
        return JSONResponse({"error": message.splitlines()[0] if message else "error"}, status_code=status)
    return HTMLResponse(pages.error_page(status, message), status_code=status)


def make_app(runtime: Runtime, reviewers: dict[str, str], secret: str, *, secure_cookie: bool = False,
             mephisto_client: Path | None = None) -> Starlette:
    """The app; with ``mephisto_client`` (a TaskReview client build), that client's pages beside ours,
    both over Mephisto's JSON API (``/api/...``)."""
    review = ReviewApp(runtime, reviewers, secret, secure_cookie=secure_cookie)
    client = MephistoClient(mephisto_client) if mephisto_client is not None else None
    api = mephisto_api.MephistoApi(runtime, review.start_batch_work, lambda request: _session(request).reviewer)

    def static(request: Request) -> Response:
        relative = request.path_params["path"]
        found = file_under(STATIC_DIR, relative) or (client.static(relative) if client is not None else None)
        if found is None:
            raise NotFoundError(f"/static/{relative} does not exist")
        return FileResponse(found)

    routes = [
        Route("/login", review.login, methods=["GET", "POST"]),
        Route("/logout", review.logout, methods=["POST"]),
        Route("/", review.index),
        Route("/runs/{run_id}", review.run),
        Route("/runs/{run_id}/live", review.live),
        Route("/runs/{run_id}/resend", review.resend, methods=["POST"]),
        Route("/runs/{run_id}/review", review.review),
        Route("/runs/{run_id}/approve", review.approve_run, methods=["GET", "POST"]),
        Route("/runs/{run_id}/workers/{worker_id}/approve", review.approve_worker, methods=["GET", "POST"]),
        Route("/batches/{batch_id}", review.batch),
        Route("/batches/{batch_id}/live", review.batch_live),
        Route("/units/decide", review.decide, methods=["POST"]),
        Route("/units/{unit_id:int}", review.unit),
        Route("/units/{unit_id:int}/bundle.js", review.review_bundle),
        Route(f"{mephisto_api.PREFIX}/units/{{unit_id:int}}/review.html", review.review_html),
        Route("/units/{unit_id}/files/{key:path}", review.unit_file),
        Route("/tips", review.tips_list),
        Route("/tips/decide", review.tips_decide, methods=["POST"]),
        Route("/workers", review.workers_list),
        Route("/workers/{worker_id:int}", review.worker),
        Route("/workers/{worker_id:int}/qualifications", review.worker_qualification, methods=["POST"]),
        Route("/workers/{worker_id}/block", review.block, methods=["POST"]),
        Route("/static/{path:path}", static),
        *api.routes(),
    ]
    if client is not None:
        routes.append(Route("/{path:path}", client.root_file))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        finishing = None
        if runtime.settings.embedded_redis:  # no Celery worker to finish what a stopped app left
            finishing = threading.Thread(target=batches.finish_here, args=(runtime,), daemon=True,
                                         name="review-batches")
            finishing.start()
        else:  # the first bulk approval would otherwise wait for Celery's and the broker's set-up (~0.2-1.5 s)
            threading.Thread(target=_warm_queue, args=(runtime,), daemon=True, name="queue-warm-up").start()
        # What startup made (modules, the app, SQLAlchemy's caches) lives as long as the process: kept out
        # of the collector, a full collection during a page walks only what serving made since.
        gc.collect()
        gc.freeze()
        yield
        if finishing is not None:  # a chunk under way commits (or not) as a whole; not cut half-way
            await anyio.to_thread.run_sync(finishing.join, BATCH_FINISH_WAIT_S)

    return Starlette(routes=routes, middleware=[Middleware(_Gate, review=review)], lifespan=lifespan)
