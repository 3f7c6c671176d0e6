"""Reading request bodies: a size limit enforced while the body streams in (a chunked body has no
Content-Length to check first), JSON objects, forms (multipart or URL-encoded)."""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any
from urllib.parse import unquote_plus

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from mephisto_dist.domain.worker_input import MAX_JSON_DEPTH, check_depth, check_name
from mephisto_dist.errors import RequestError

MAX_AGENT_ID_CHARS = 64  # the agent id column
MAX_FORM_FIELDS = 1000  # Starlette's limit for a multipart form, kept for a URL-encoded one
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"


def limited(request: Request, max_bytes: int) -> Request:
    """The same request, refusing its body (413) once more than ``max_bytes`` have arrived: a declared
    Content-Length is judged before reading, a chunked body as soon as it passes the limit."""
    check_declared_length(request.headers.get("content-length"), max_bytes)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise RequestError(f"the request is over the limit of {max_bytes} bytes", 413)
        return message

    return Request(request.scope, receive)


def check_declared_length(declared: str | None, max_bytes: int) -> None:
    """Refuse a Content-Length that is not a number (400) or over ``max_bytes`` (413)."""
    if declared is not None:
        if not declared.isdigit():
            raise RequestError("Content-Length is not a number")
        if int(declared) > max_bytes:
            raise RequestError(f"the request is {int(declared)} bytes, over the limit of {max_bytes} bytes", 413)


async def read_body(receive: Receive, declared_length: str | None, max_bytes: int) -> bytes:
    """The whole body, as :func:`limited` and Starlette's ``Request.body`` read it (the same refusals, and
    ``ClientDisconnect`` when the client went away), without a ``Request`` made for it."""
    check_declared_length(declared_length, max_bytes)
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > max_bytes:
                raise RequestError(f"the request is over the limit of {max_bytes} bytes", 413)
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


async def json_body(request: Request, max_bytes: int) -> dict[str, Any]:
    return json_object_body(await read_body(request.receive, request.headers.get("content-length"), max_bytes))


def json_object_body(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (an empty body is ``{}``)."""
    body = parse_json(raw or b"{}", "the request body")
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


class _StrictMultiPartParser(MultiPartParser):
    """Starlette's parser, except that a text field that is not valid UTF-8 is refused: Starlette would
    decode it as Latin-1 and the answer would be stored garbled."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise MultiPartException(f"the form field {part.field_name!r} is not valid UTF-8") from None
        super().on_part_end()


async def form_body(request: Request, max_bytes: int) -> FormData:
    """A form body (multipart or URL-encoded, see :func:`form_kind`), read through :func:`limited`, with
    every text field valid UTF-8."""
    body = limited(request, max_bytes)
    if form_kind(request) == URLENCODED:
        return _urlencoded(await body.body())
    try:
        async with aclosing(body.stream()) as stream:
            return await _StrictMultiPartParser(body.headers, stream, max_part_size=max_bytes).parse()
    except MultiPartException as error:
        raise RequestError(error.message) from None


def _urlencoded(raw: bytes) -> FormData:
    """An ``application/x-www-form-urlencoded`` body as a form. Starlette's own parser reads bytes as
    Latin-1 and replaces bad escapes, so an answer would be stored garbled: here a field whose text
    (raw or %-escaped) is not UTF-8 is refused with the multipart parser's words."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the request body is not valid UTF-8") from None
    pairs = [pair for pair in text.split("&") if pair]
    if len(pairs) > MAX_FORM_FIELDS:
        raise RequestError(f"Too many fields. Maximum number of fields is {MAX_FORM_FIELDS}.")
    items: list[tuple[str, str | UploadFile]] = []
    for pair in pairs:
        name, _, value = pair.partition("=")
        name = _unescaped(name, name)
        items.append((name, _unescaped(value, name)))
    return FormData(items)


def _unescaped(text: str, field_name: str) -> str:
    try:
        return unquote_plus(text, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise RequestError(f"the form field {field_name!r} is not valid UTF-8") from None


def parse_json(raw: bytes | str, what: str) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise RequestError(f"{what} is not valid UTF-8") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise RequestError(f"{what} is not valid JSON") from None
    except RecursionError:
        raise RequestError(f"{what} is JSON nested too deeply") from None
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH:  # else it cannot nest deeper: no walk
        check_depth(value)
    return value


def form_kind(request: Request) -> str | None:
    """``MULTIPART`` or ``URLENCODED`` when the body is a form (an HTML form posted as it is), else None."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type if media_type in (MULTIPART, URLENCODED) else None


def agent_id_of(body: dict[str, Any] | FormData) -> str:
    value = body.get("USED_AGENT_ID")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise RequestError("USED_AGENT_ID is missing")
    return check_name(value, "USED_AGENT_ID", max_chars=MAX_AGENT_ID_CHARS)


def json_object(body: dict[str, Any], key: str, request_kind: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise RequestError(f"{request_kind} needs a '{key}' object")
    return value
