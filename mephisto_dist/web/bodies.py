"""Reading request bodies: size limits, JSON objects, multipart forms."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from mephisto_dist.errors import RequestError


def check_length(request: Request, max_bytes: int, *, required: bool) -> None:
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


async def json_body(request: Request, max_bytes: int) -> dict[str, Any]:
    check_length(request, max_bytes, required=False)
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


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


def agent_id_of(body: dict[str, Any]) -> str:
    return str(body.get("USED_AGENT_ID") or "")


def json_object(body: dict[str, Any], key: str, request_kind: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise RequestError(f"{request_kind} needs a '{key}' object")
    return value
