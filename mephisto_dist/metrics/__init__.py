"""Prometheus metrics: what every process records, and the listener that serves a machine's figures.

Recording is cheap and always on. Every web, worker and beat process of a machine writes its counters
and histograms into one folder (``<data dir>/metrics``, prometheus-client's multiprocess mode), so
several processes per machine add up. A listener (``web.metrics_listener``: ``web --metrics-port``, or ``mephisto-dist metrics``)
serves their sum on its own port, never the worker-facing one, plus figures computed when scraped from
the database and Redis (units per status per open run, tokens held against each cap): the hot path
pays nothing for those, and they are the very figures ``mephisto-dist status`` prints.

Recorded:
- ``mephisto_dist_request_seconds{endpoint}``: worker-facing request latency (histogram).
- ``mephisto_dist_refusals_total{reason}``: request_agent answers without an agent, by reason.
- ``mephisto_dist_submissions_total{outcome}``: submit_task answers, ``first`` or ``repeat``.
- ``mephisto_dist_provider_calls_total{provider,call,outcome}``: crowd-provider calls.
- ``mephisto_dist_reconciler_actions_total{action}``: what beat's reconcilers did.
- ``mephisto_dist_celery_tasks_total{task,outcome}``: Celery task outcomes.
Computed on scrape:
- ``mephisto_dist_units{run,status}``, ``mephisto_dist_tokens_held{pool,run}``, ``mephisto_dist_token_cap{pool,run}``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from mephisto_dist.settings import Settings

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_S: Final = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ENDPOINTS: Final = frozenset({"/request_agent", "/submit_task", "/submit_onboarding", "/submit_metadata",
                              "/log_error", "/task_config.json", "/"})


def enable(settings: Settings) -> None:
    """Point prometheus-client at this machine's metrics folder (and the processes this one starts).

    Call it before anything records: the library picks its multiprocess mode from the environment
    when it is imported. Once this process has made its metrics, the folder they write to stays.
    """
    if instruments.cache_info().currsize:
        return
    settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(settings.metrics_dir)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # imported before this call (by a library): choose the mode again
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Instruments:
    request_seconds: Any
    refusals: Any
    submissions: Any
    provider_calls: Any
    reconciler_actions: Any
    celery_tasks: Any


@lru_cache(maxsize=1)
def instruments() -> Instruments:
    from prometheus_client import Counter, Histogram

    return Instruments(
        request_seconds=Histogram("mephisto_dist_request_seconds", "Worker-facing request latency",
                                  ["endpoint"], buckets=LATENCY_BUCKETS_S),
        refusals=Counter("mephisto_dist_refusals", "request_agent answers without an agent", ["reason"]),
        submissions=Counter("mephisto_dist_submissions", "submit_task answers", ["outcome"]),
        provider_calls=Counter("mephisto_dist_provider_calls", "Crowd-provider calls",
                               ["provider", "call", "outcome"]),
        reconciler_actions=Counter("mephisto_dist_reconciler_actions", "What the reconcilers did", ["action"]),
        celery_tasks=Counter("mephisto_dist_celery_tasks", "Celery task outcomes", ["task", "outcome"]),
    )


def endpoint_of(path: str) -> str:
    """A bounded label for a request path: the protocol's endpoints by name, the run's files as one."""
    return path if path in ENDPOINTS else "static"


# Refusal texts (mephisto_dist.work.claims) by a stable label; formatted ones are matched by their start.
_REFUSALS: Final = (
    ("There is no unit available", "no_unit_available"),
    ("You are not qualified", "not_qualified"),
    ("You did not pass the qualification", "onboarding_failed"),
    ("You have already submitted", "already_submitted"),
    ("The time allowed for this unit ran out", "timed_out"),
    ("You are already working on", "too_many_at_once"),
    ("You have reached the maximum", "maximum_reached"),
    ("This unit is no longer assigned", "no_longer_yours"),
    ("This task was closed", "task_closed"),
)


def refusal_reason(failure_reason: str) -> str:
    return next((label for start, label in _REFUSALS if failure_reason.startswith(start)), "other")


def record_agent_answer(failure_reason: str | None, agent_id: str | None) -> None:
    if agent_id is None:
        instruments().refusals.labels(refusal_reason(failure_reason or "")).inc()


def record_submission(first: bool) -> None:
    instruments().submissions.labels("first" if first else "repeat").inc()


def record_provider_call(provider: str, call: str, outcome: str, count: int = 1) -> None:
    if count:
        instruments().provider_calls.labels(provider, call, outcome).inc(count)


def record_reconciler_action(action: str, count: int = 1) -> None:
    if count:
        instruments().reconciler_actions.labels(action).inc(count)


def record_celery_task(task: str, outcome: str) -> None:
    instruments().celery_tasks.labels(task, outcome.lower()).inc()
