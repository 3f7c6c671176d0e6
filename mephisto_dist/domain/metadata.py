"""An agent's metadata (Mephisto's tips and feedback, sent through ``/submit_metadata``), merged the way
Mephisto's ``Agent.handle_metadata_submit`` does: each tip (``{"tips": {"header", "text"}}``) is appended
to ``tips`` with an id and ``accepted: false``; each feedback answer (``{"feedback": {"data": [{"question",
"text"}]}}``) is appended to ``feedback`` with an id and ``reviewed: false``. Any other key is stored as
sent. Pure: ids come from the caller."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mephisto_dist.errors import RequestError

MAX_TEXT_CHARS = 10_000


def merge_metadata(existing: Mapping[str, Any] | None, incoming: Mapping[str, Any],
                   new_id: Callable[[], str]) -> dict[str, Any]:
    merged = dict(existing or {})
    for key, value in incoming.items():
        if key == "tips":
            merged["tips"] = [*merged.get("tips", []), _tip(value, new_id())]
        elif key == "feedback":
            merged["feedback"] = [*merged.get("feedback", []), *_feedback(value, new_id)]
        else:
            merged[key] = value
    return merged


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"submit_metadata: {what} must be text")
    if len(value) > MAX_TEXT_CHARS:
        raise RequestError(f"submit_metadata: {what} is over {MAX_TEXT_CHARS} characters")
    return value


def _tip(value: Any, tip_id: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise RequestError("submit_metadata: a tip must be an object with 'header' and 'text'")
    return {"id": tip_id, "header": _text(value.get("header", ""), "a tip's header"),
            "text": _text(value.get("text"), "a tip's text"), "accepted": False}


def _feedback(value: Any, new_id: Callable[[], str]) -> list[dict[str, Any]]:
    answers = value.get("data") if isinstance(value, Mapping) else None
    if not isinstance(answers, list) or not all(isinstance(a, Mapping) for a in answers):
        raise RequestError("submit_metadata: feedback must be an object whose 'data' lists "
                           "{question, text} answers")
    return [{"id": new_id(), "question": _text(answer.get("question", ""), "a feedback question"),
             "text": _text(answer.get("text"), "a feedback answer"), "reviewed": False, "toxicity": None}
            for answer in answers]
