"""The metrics listener: this machine's recorded metrics summed over its processes, and the deployment's
figures read from the database and Redis when Prometheus scrapes (the ones ``status`` prints)."""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from mephisto_dist.db.engine import read_transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.errors import ConfigError, ServiceError
from mephisto_dist.limiter import Limiter
from mephisto_dist.runs.launches import GLOBAL_POOL, run_pool
from mephisto_dist.runs.task_runs import unit_counts
from mephisto_dist.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolFigure:
    pool: str
    run_id: int | None
    held: int
    cap: int


def pool_figure(limiter: Limiter, pool: str, run_id: int | None, configured_cap: int) -> PoolFigure:
    """Tokens held and the cap in force, as ``status`` reads them: a stored cap overrides the run's."""
    stored = limiter.get_cap(pool)
    return PoolFigure(pool, run_id, limiter.held(pool), configured_cap if stored is None else stored)


class DeploymentCollector:
    """Figures read from the database and Redis when Prometheus scrapes, never on the hot path."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        units = GaugeMetricFamily("mephisto_dist_units", "Units per status of each open run", labels=["run", "status"])
        held = GaugeMetricFamily("mephisto_dist_tokens_held", "Concurrency tokens held", labels=["pool", "run"])
        cap = GaugeMetricFamily("mephisto_dist_token_cap", "Cap of each concurrency pool (0 = none)",
                                labels=["pool", "run"])
        rt = self._runtime
        try:
            with read_transaction(rt.sessions) as session:
                runs = session.execute(select(TaskRun.id, TaskRun.max_concurrent_units)
                                       .where(TaskRun.is_completed.is_(False))).all()
                counts = {run_id: unit_counts(session, run_id) for run_id, _ in runs}
            figures = [pool_figure(rt.limiter, run_pool(run_id), run_id, configured) for run_id, configured in runs]
            figures.append(pool_figure(rt.limiter, GLOBAL_POOL, None, rt.settings.max_concurrent_units))
        except ServiceError as error:
            log.warning("metrics: cannot read the deployment's figures: %s", error)
            return
        for run_id, by_status in counts.items():
            for status, count in by_status.items():
                units.add_metric([str(run_id), status.value], count)
        for figure in figures:
            run_label = "" if figure.run_id is None else str(figure.run_id)
            held.add_metric([figure.pool, run_label], figure.held)
            cap.add_metric([figure.pool, run_label], figure.cap)
        yield units
        yield held
        yield cap


def registry(runtime: Runtime) -> Any:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    collected = CollectorRegistry()
    MultiProcessCollector(collected, path=str(runtime.settings.metrics_dir))  # type: ignore[no-untyped-call]
    collected.register(DeploymentCollector(runtime))
    return collected


STANDBY_EVERY_S = 2.0
PROMETHEUS_TYPE = "text/plain; version="  # what prometheus-client's listener answers (0.0.4, 1.0.0)


def serve(runtime: Runtime, host: str, port: int, *, worker_port: int | None = None,
          public_port: int | None = None, standby_every_s: float | None = STANDBY_EVERY_S) -> bool:
    """Serve this machine's metrics on ``host:port`` in a background thread; False when another process
    of the machine already serves them there (several web processes share one listener). A process that
    found the listener taken stands by: it tries the port again every ``standby_every_s`` and takes the
    listener over when the process that held it died, so the machine's metrics outlive any one process
    (``standby_every_s=None``: no standing by)."""
    if port in (worker_port, public_port):
        raise ConfigError(f"the metrics port {port} is the worker-facing port: give metrics a port of their own")
    collected = registry(runtime)
    if _listen(collected, host, port):
        return True
    if not _serves_metrics(host, port):
        if _listen(collected, host, port):  # the holder just went away
            return True
        raise ConfigError(f"cannot serve metrics on {host}:{port}: another program (not a metrics listener) "
                          "uses that port")
    if standby_every_s is None:
        return False
    log.info("metrics: %s:%d is served by another process of this machine; standing by", host, port)
    threading.Thread(target=_stand_by, args=(collected, host, port, standby_every_s), name="metrics-standby",
                     daemon=True).start()
    return False


def _serves_metrics(host: str, port: int) -> bool:
    """Whether what listens on ``host:port`` answers as a Prometheus metrics listener (another process's
    of this machine), rather than some other program."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as answer:
            return str(answer.headers.get("Content-Type", "")).startswith(PROMETHEUS_TYPE)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _listen(collected: Any, host: str, port: int) -> bool:
    """Start the listener; False when the port is taken, one-line ConfigError for any other failure."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=collected)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {error.strerror}") from None
        return False
    return True


def _stand_by(collected: Any, host: str, port: int, every_s: float) -> None:
    while True:
        time.sleep(every_s)
        try:
            if _listen(collected, host, port):
                log.info("metrics: took over %s:%d (the process serving it is gone)", host, port)
                return
        except ConfigError as error:
            log.warning("metrics: %s", error)
