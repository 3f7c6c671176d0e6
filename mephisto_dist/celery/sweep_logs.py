"""Beat's sweeps in the logs at INFO only when they did something.

Beat fires its sweeps every few seconds (the live sweep every 2 s), and Celery logs each round at INFO
three times: beat's "Sending due task", the worker's "received" and its "succeeded". A deployment that
logs at INFO (the shipped units do) would read those lines forever while nothing happens. This filter
moves them to DEBUG, except the "succeeded" line of a round that did something: one whose return value
counts anything (a count that is not zero, a dict with such a count). What a sweep changed is also
logged by the sweep itself.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Collection
from typing import Any

# The loggers, and the messages, Celery (5.x) and celery-redbeat log a task's round with.
SENT_BY = ("celery.beat", "redbeat.schedulers")
SENT = "Scheduler: Sending due task %s (%s)"
RECEIVED_BY = "celery.worker.strategy"
RECEIVED = "Task %(name)s[%(id)s] received"
SUCCEEDED_BY = "celery.app.trace"
SUCCEEDED = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"


class SweepLogFilter(logging.Filter):
    """On Celery's loggers: a sweep's routine lines become DEBUG records (dropped when the logger does
    not log DEBUG); every other record passes as it is."""

    def __init__(self, sweeps: Collection[str]) -> None:
        super().__init__()
        self.sweeps = frozenset(sweeps)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.routine(record):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True

    def routine(self, record: logging.LogRecord) -> bool:
        """Whether this is a sweep's sending, receipt, or success with nothing done."""
        args: Any = record.args
        if record.msg == SENT and isinstance(args, tuple) and len(args) == 2:
            return args[1] in self.sweeps
        if not isinstance(args, dict) or args.get("name") not in self.sweeps:
            return False
        if record.msg == RECEIVED:
            return True
        return record.msg == SUCCEEDED and idle(str(args.get("return_value")))


def idle(return_repr: str) -> bool:
    """Whether a sweep's return value (as Celery logs it: its repr) says it did nothing: ``None``, zero,
    or a collection of such values. Anything else, or what cannot be read back, did something."""
    try:
        value = ast.literal_eval(return_repr)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False
    return _nothing(value)


def _nothing(value: object) -> bool:
    if isinstance(value, dict):
        return all(_nothing(item) for item in value.values())
    if isinstance(value, (list, tuple, set)):
        return all(_nothing(item) for item in value)
    return value is None or (isinstance(value, (int, float)) and value == 0)


def quiet_idle_sweeps(sweeps: Collection[str]) -> None:
    """Install the filter on the loggers that log the sweeps' rounds, in place of one installed before
    (the prefork pool's children inherit it)."""
    for name in (*SENT_BY, RECEIVED_BY, SUCCEEDED_BY):
        logger = logging.getLogger(name)
        for installed in [f for f in logger.filters if isinstance(f, SweepLogFilter)]:
            logger.removeFilter(installed)
        logger.addFilter(SweepLogFilter(sweeps))
