"""ListX paging as MTurk does it: ``MaxResults`` (1 to 100, default 10) and an opaque ``NextToken``.

MTurk hands out a NextToken with every page that holds results, without knowing whether more follow; the
page after the last row is empty and carries none. Callers written against MTurk depend on it: Mephisto's
``get_outstanding_hits`` reads ``NextToken`` from every non-empty ListHITs page and stops on an empty one.
The token names the listing and the position of the last row shown, so rows added or removed between pages
neither repeat nor vanish, and a token of one listing is refused by another.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from mephisto_dist.mturk_local.faults import invalid

DEFAULT_PAGE = 10
MAX_PAGE = 100
Position = tuple[int, ...]


@dataclass(frozen=True)
class Page:
    """One requested page: its listing (the operation), where it starts and how many rows it holds."""

    listing: str
    after: Position | None  # the position of the last row of the previous page; None for the first page
    size: int

    @property
    def after_seq(self) -> int:
        """For listings ordered by ``seq`` alone: the first row's ``seq`` must be above this."""
        return self.after[0] if self.after else 0


def page_of(listing: str, p: dict[str, Any], *, width: int = 1) -> Page:
    """The page a request asks for; ``width`` is how many numbers a position of this listing holds."""
    size = p.get("MaxResults", DEFAULT_PAGE)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PAGE:
        raise invalid("MaxResults", size, f"It must be between 1 and {MAX_PAGE}.")
    token = p.get("NextToken")
    if token is None:
        return Page(listing, None, size)
    return Page(listing, _read_token(listing, token, width), size)


def _read_token(listing: str, token: object, width: int) -> Position:
    refused = invalid("NextToken", token, "It is not a pagination token this operation handed out.")
    if not isinstance(token, str):
        raise refused
    try:
        named, _, numbers = base64.urlsafe_b64decode(token.encode()).decode().rpartition(":")
        position = tuple(int(n) for n in numbers.split("."))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise refused from None
    if named != listing or len(position) != width:
        raise refused
    return position


def next_token(listing: str, last: Position) -> str:
    """The token of the page that starts after the row at ``last``."""
    return base64.urlsafe_b64encode(f"{listing}:{'.'.join(str(n) for n in last)}".encode()).decode()


def page_result(page: Page, key: str, items: list[dict[str, Any]], last: Position | None) -> dict[str, Any]:
    """A page's answer; ``last`` is the position of the last row shown (None when none is)."""
    result: dict[str, Any] = {key: items, "NumResults": len(items)}
    if items and last is not None:
        result["NextToken"] = next_token(page.listing, last)
    return result


def seq_result(page: Page, key: str, items: list[dict[str, Any]], rows: list[Any]) -> dict[str, Any]:
    """A page of a listing ordered by ``seq``, ``rows`` being the rows shown."""
    return page_result(page, key, items, (int(rows[-1]["seq"]),) if rows else None)
