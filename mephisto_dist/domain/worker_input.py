"""What a worker's browser may send: limits on the text and JSON that reach the database.

Names and ids end up in indexed ``VARCHAR`` columns: PostgreSQL refuses NUL and lone surrogates with a
driver error, and SQLite stores anything, so both are refused here, before any write, with the same
reason on every database.
"""

from __future__ import annotations

import re
from typing import Any

from mephisto_dist.errors import RequestError

# Deeper than any answer a form produces; far below the interpreter's recursion limit.
MAX_JSON_DEPTH = 64
# The width of the worker_name and registration_id columns.
MAX_NAME_CHARS = 255
# Unicode's control characters (category Cc) and surrogates (Cs): fixed ranges, one search per name.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_name(value: str, what: str, *, max_chars: int = MAX_NAME_CHARS) -> str:
    """``value`` if it fits a name column: at most ``max_chars`` characters, no control characters."""
    if len(value) > max_chars:
        raise RequestError(f"{what} is {len(value)} characters long, over the limit of {max_chars}")
    found = _CONTROL.search(value)
    if found is not None:
        raise RequestError(f"{what} contains a control character ({_codepoint(found.group())})")
    return value


def check_depth(value: Any, *, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise RequestError(f"the request's JSON is nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)


def _codepoint(char: str) -> str:
    return f"U+{ord(char):04X}"
