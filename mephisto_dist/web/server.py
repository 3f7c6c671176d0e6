"""Running the worker-facing app under uvicorn, with our access log on stderr (the process's log); the
server is recorded and beats on its record while it runs (``architects.local``)."""

from __future__ import annotations

import logging

from mephisto_dist.runtime import Runtime


def serve(runtime: Runtime, *, run_id: int | None, host: str, port: int, public_port: int | None = None,
          metrics_port: int | None = None, metrics_host: str | None = None, server_id: int | None = None) -> None:
    """Serve the app; with a metrics port, also this machine's metrics there, unless another process of
    the machine already does (several web processes share one listener)."""
    from mephisto_dist import metrics
    from mephisto_dist.architects.local import serve_recorded

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # A log record per request (the access log): skip what the format never shows, the caller's frame
    # (a walk up the stack), the thread's and the process's names (the logging HOWTO's optimizations).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    metrics.enable(runtime.settings)
    metrics_port = metrics_port or runtime.settings.metrics_port
    if metrics_port:
        from mephisto_dist.metrics.listener import serve as serve_metrics

        serve_metrics(runtime, metrics_host or host, metrics_port, worker_port=port)
    serve_recorded(runtime, run_id=run_id, host=host, port=port, public_port=public_port, server_id=server_id)
