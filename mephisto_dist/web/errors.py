"""Our exceptions as HTTP answers: a JSON ``{"error": ...}`` with the status the error calls for.

What a worker reads never carries an internal path, URL or driver message: a backing service's failure
(``ServiceError``) or a bug is told in plain words, and its detail goes to the server's log.
"""

from __future__ import annotations

import logging

import kombu.exceptions
import redis.exceptions
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mephisto_dist.errors import NotFoundError, RequestError, ServiceError, Unreachable
from mephisto_dist.errors.drivers import translate
from mephisto_dist.web.context import context_of

log = logging.getLogger(__name__)

DRIVER_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, redis.exceptions.RedisError,
                                               kombu.exceptions.KombuError)
"""Errors of the database, Redis and broker clients that reach a handler untranslated."""
BACKEND_DOWN = ("The task's server cannot reach a service it needs right now, so nothing was recorded. "
                "Please try again in a minute.")

SERVICE_TROUBLE = "The task server cannot do this right now. Please try again in a moment."
INTERNAL_TROUBLE = "Something went wrong on the task server. Please try again in a moment."


async def error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RequestError):
        return JSONResponse({"error": str(exc)}, exc.status_code)
    if isinstance(exc, NotFoundError):
        return JSONResponse({"error": str(exc)}, 404)
    if isinstance(exc, ServiceError) and isinstance(exc.__cause__, SQLAlchemyError):
        return await driver_error_response(request, exc.__cause__)  # translated by the db adapter
    if isinstance(exc, ServiceError):
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": SERVICE_TROUBLE}, 503)
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": INTERNAL_TROUBLE}, 500)


async def driver_error_response(request: Request, exc: Exception) -> Response:
    """An outage is a 503 the worker can read (the operator's line, URL masked, goes to the log); any
    other driver error is a bug, answered 500 without its SQL."""
    translated = translate(exc, context_of(request).served.runtime.settings)
    # Raised in a websocket handler too (the live channel), which has no method.
    log.error("%s %s: %s", getattr(request, "method", "WEBSOCKET"), request.url.path, translated or repr(exc))
    if isinstance(translated, Unreachable):
        return JSONResponse({"error": BACKEND_DOWN}, 503)
    return JSONResponse({"error": "internal error"}, 500)
