"""Where a unit's CPU goes, as a markdown table: cProfile files (``hot_path.py --profile``, or a web
process's threads from ``web_profile/sitecustomize.py``) summed by part of the stack, each function's own
time (``tottime``) counted once (a builtin's, such as ``dict.get``, with the part that called it), divided
by the units the profiled loop served.

    python benchmarks/profile_table.py --units 2950 --before before.prof --after after.prof
    python benchmarks/profile_table.py --units 3000 --before /tmp/web-before.* --after /tmp/web-after.*

Profiled time is about twice the unprofiled time (cProfile's own cost falls on every call): read the
shares, and take totals from /proc.
"""

from __future__ import annotations

import argparse
import pstats
from collections import Counter

# (category, substrings of the function's file or name), first match wins.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("database driver (sqlite3, psycopg, libpq waits)", ("sqlite3", "psycopg", "select.poll", "epoll", "poll'")),
    ("SQLAlchemy ORM Session (begin, commit, close)", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core execution (compile cache, params, results, pool)", ("sqlalchemy/",)),
    ("Redis client (redis-py, sockets)", ("redis/", "_socket", "socket.py")),
    ("our web layer (mephisto_dist/web)", ("mephisto_dist/web/",)),
    ("our service code (work, db, runs, limiter, ...)", ("mephisto_dist/",)),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("Starlette (middleware, routing, Request, Response)", ("starlette/",)),
    ("thread hand-off and event loop (anyio, asyncio, threading, queue)",
     ("anyio/", "asyncio/", "threading.py", "queue.py", "sniffio", "concurrent/", "_thread", "uvloop")),
    ("access log (logging)", ("logging/",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("JSON", ("json/", "_json")),
]
OTHER = "other (builtins, dataclasses, datetime, ...)"


def category(function: tuple[str, int, str]) -> str:
    filename, _, name = function
    where = f"{filename}:{name}"
    for label, needles in CATEGORIES:
        if any(needle in where for needle in needles):
            return label
    return OTHER


def by_category(files: list[str]) -> Counter[str]:
    stats = pstats.Stats(files[0])
    for extra in files[1:]:
        stats.add(extra)
    totals: Counter[str] = Counter()
    for function, (_, _, tottime, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        label = category(function)
        if label != OTHER or function[0] != "~" or not callers:
            totals[label] += tottime
            continue
        # A builtin (dict.get, isinstance, ...) not named above: its time goes to its callers' parts, in
        # proportion to the time each call site spent in it.
        spent = {caller: entry[2] for caller, entry in callers.items()}
        whole = sum(spent.values()) or 1.0
        for caller, part in spent.items():
            totals[category(caller)] += tottime * part / whole
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, required=True, help="units the profiled loop or run served")
    parser.add_argument("--before", nargs="+", required=True)
    parser.add_argument("--after", nargs="+", required=True)
    args = parser.parse_args()
    before, after = by_category(args.before), by_category(args.after)
    total_before, total_after = sum(before.values()), sum(after.values())
    print("| part of the stack | before, ms/unit | share | after, ms/unit | share |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label in [label for label, _ in CATEGORIES] + [OTHER]:
        b, a = before[label], after[label]
        if b or a:
            print(f"| {label} | {1000 * b / args.units:.3f} | {100 * b / total_before:.0f}% "
                  f"| {1000 * a / args.units:.3f} | {100 * a / total_after:.0f}% |")
    print(f"| **total (profiled)** | **{1000 * total_before / args.units:.3f}** | | "
          f"**{1000 * total_after / args.units:.3f}** | |")


if __name__ == "__main__":
    main()
