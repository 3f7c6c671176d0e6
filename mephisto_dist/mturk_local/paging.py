"""ListX paging as MTurk does it: ``MaxResults`` (1 to 100, default 10) and an opaque ``NextToken``
naming the last row shown, so rows added or removed between pages neither repeat nor vanish."""

from __future__ import annotations

import base64
import binascii
import sqlite3
from typing import Any

from mephisto_dist.mturk_local.faults import invalid

DEFAULT_PAGE = 10


def page_args(p: dict[str, Any]) -> tuple[int, int]:
    """The position after which a page starts (an opaque NextToken naming the last row shown) and its size."""
    limit = int(p.get("MaxResults") or DEFAULT_PAGE)
    if not 1 <= limit <= 100:
        raise invalid("MaxResults", limit, "It must be between 1 and 100.")
    token = p.get("NextToken")
    if not token:
        return 0, limit
    try:
        after = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("after:"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid("NextToken", token, "It is not a token this service handed out.") from None
    return after, limit


def next_token(seq: int) -> str:
    """The token of the page that starts after row ``seq``."""
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode()


def page_result(key: str, items: list[dict[str, Any]], rows: list[sqlite3.Row], limit: int) -> dict[str, Any]:
    result: dict[str, Any] = {key: items, "NumResults": len(items)}
    if len(rows) > limit:
        result["NextToken"] = next_token(int(rows[limit - 1]["seq"]))
    return result
