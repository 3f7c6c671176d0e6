"""Running the worker-facing app under uvicorn, with our access log on stderr (the process's log)."""

from __future__ import annotations

import logging

from mephisto_dist.runtime import Runtime


def serve(runtime: Runtime, *, run_id: int | None, host: str, port: int, public_port: int | None = None,
          metrics_port: int | None = None, metrics_host: str | None = None) -> None:
    """Serve the app; with a metrics port, also this machine's metrics there, unless another process of
    the machine already does (several web processes share one listener)."""
    import uvicorn

    from mephisto_dist import metrics
    from mephisto_dist.web.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    metrics.enable(runtime.settings)
    metrics_port = metrics_port or runtime.settings.metrics_port
    if metrics_port:
        from mephisto_dist.metrics.listener import serve as serve_metrics

        serve_metrics(runtime, metrics_host or host, metrics_port, worker_port=port)
    # uvicorn's own access log would repeat ours, without the time taken.
    uvicorn.run(create_app(runtime, run_id=run_id, port=public_port or port), host=host, port=port, log_level="warning",
                access_log=False, log_config=None)
