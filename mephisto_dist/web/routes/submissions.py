"""``/submit_task`` (JSON, a multipart form with files, or a URL-encoded form), ``/submit_metadata`` and
``/log_error``."""

from __future__ import annotations

import logging
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mephisto_dist.errors import RequestError
from mephisto_dist.metrics import record_submission
from mephisto_dist.web.bodies import agent_id_of, form_body, form_kind, json_body, json_object, parse_json
from mephisto_dist.web.context import WebContext, context_of
from mephisto_dist.work import submissions as service
from mephisto_dist.work.claims import Submission
from mephisto_dist.work.served import Served
from mephisto_dist.work.submissions import UploadedFile

log = logging.getLogger(__name__)


async def submit_task(request: Request) -> Response:
    context = context_of(request)
    if form_kind(request) is not None:
        return await _submit_form(request)
    return JSONResponse(await submitted(context, await json_body(request, context.max_body_bytes)))


async def submitted(context: WebContext, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to a ``/submit_task`` JSON body (``web.hot_routes`` serves it without a ``Request``)."""
    final_data = json_object(body, "final_data", "submit_task")
    return _answer(await _submit(context, agent_id_of(body), final_data))


async def _submit(context: WebContext, agent_id: str, fields: dict[str, Any]) -> Submission:
    """A submission without files: its statement on the event loop where it can be (``call_first``)."""
    served = context.served
    return await context.call_first(
        lambda statements, run: service.submit_task_on_loop(served, statements, run, agent_id, fields),
        service.submit_task, served, agent_id, fields, split=True)


async def _submit_form(request: Request) -> Response:
    """A form, multipart (the static task's page, with its files) or URL-encoded (an HTML form posted as
    it is): the same fields, the same limits, the same refusals."""
    context = context_of(request)
    form = await form_body(request, context.max_body_bytes)
    try:
        agent_id = agent_id_of(form)
        fields = _final_string_data(form)
        files = [UploadedFile(key, value.filename, value.content_type, value.file)
                 for key, value in form.multi_items() if isinstance(value, UploadFile) and value.filename]
        if not files:
            submission = await _submit(context, agent_id, fields)
        else:
            submission = await context.call_in_thread(_submit_with_files, context.served, agent_id, fields, files)
        return _submitted(submission)
    finally:
        await form.close()


def _submit_with_files(served: Served, agent_id: str, fields: dict[str, Any],
                       files: list[UploadedFile]) -> Submission:
    """``submit_task`` with the files read from their start, and the answers as sent: a call made again
    after an outage reads them afresh (the failed one read the files and attached their records)."""
    for file in files:
        file.data.seek(0)
    return service.submit_task(served, agent_id, dict(fields), files)


def _final_string_data(form: FormData) -> dict[str, Any]:
    """The answers, as JSON text in the form's ``final_string_data`` field (Mephisto's static task
    always sends it, and Mephisto's router reads a form of either kind this way: a form without it did
    not come from a task page, and must not close the unit)."""
    raw = form.get("final_string_data")
    if not isinstance(raw, str):
        raise RequestError("submit_task needs a 'final_string_data' field (the answers as JSON text)")
    fields = parse_json(raw, "final_string_data")
    if not isinstance(fields, dict):
        raise RequestError("final_string_data is not a JSON object")
    return fields


def _submitted(submission: Submission) -> Response:
    return JSONResponse(_answer(submission))


def _answer(submission: Submission) -> dict[str, Any]:
    record_submission(submission.first)
    return {"status": "Submitted!" if submission.first else "Already submitted", "unit_id": str(submission.unit_id)}


async def submit_metadata(request: Request) -> Response:
    context = context_of(request)
    body = await json_body(request, context.max_body_bytes)
    metadata = json_object(body, "metadata", "submit_metadata")
    await context.call_once_in_thread(service.submit_metadata, context.served, agent_id_of(body), metadata)
    return JSONResponse({"status": "Submitted Metadata!"})


async def log_error(request: Request) -> Response:
    body = await json_body(request, context_of(request).max_body_bytes)
    log.warning("front-end error from agent %s: %s", body.get("USED_AGENT_ID"),
                str(body.get("final_data") or body.get("error_data") or body)[:2000])
    return JSONResponse({"status": "Error log sent!"})


ROUTES = [
    Route("/submit_task", submit_task, methods=["POST"]),
    Route("/submit_metadata", submit_metadata, methods=["POST"]),
    Route("/log_error", log_error, methods=["POST"]),
]
