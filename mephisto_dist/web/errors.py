"""Our exceptions as HTTP answers: a JSON ``{"error": ...}`` with the status the error calls for."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mephisto_dist.errors import NotFoundError, RequestError, ServiceError


async def error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RequestError):
        return JSONResponse({"error": str(exc)}, exc.status_code)
    if isinstance(exc, NotFoundError):
        return JSONResponse({"error": str(exc)}, 404)
    if isinstance(exc, ServiceError):
        return JSONResponse({"error": str(exc)}, 503)
    return JSONResponse({"error": str(exc)}, 500)
