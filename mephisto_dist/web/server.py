"""Running the worker-facing app under uvicorn, with our access log on stderr (the process's log); the
server is recorded and beats on its record while it runs (``web.recorded_server``)."""

from __future__ import annotations

import logging
import time

from mephisto_dist.runtime import Runtime

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class LogFormatter(logging.Formatter):
    """logging's own lines, with the date and time written once a second rather than for every record
    (the access log makes one per request): the text of a second depends on nothing but the second."""

    _second: tuple[int, str] = (-1, "")  # replaced whole: a thread reads one second's pair or another's

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None or self.default_msec_format is None:
            return super().formatTime(record, datefmt)
        return self._stamp(int(record.created), record.msecs)

    def stamp(self, created: float) -> str:
        """What ``formatTime`` writes for a record made at ``created`` (the access log's own lines)."""
        second = int(created)
        return self._stamp(second, int((created - second) * 1000))

    def _stamp(self, second: int, msecs: float) -> str:
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime(self.default_time_format, self.converter(second)))
        return self.default_msec_format % (cached[1], msecs)  # type: ignore[operator]


def serve(runtime: Runtime, *, run_id: int | None, host: str, port: int, public_port: int | None = None,
          metrics_port: int | None = None, metrics_host: str | None = None, server_id: int | None = None) -> None:
    """Serve the app; with a metrics port, also this machine's metrics there, unless another process of
    the machine already does (several web processes share one listener)."""
    from mephisto_dist import metrics
    from mephisto_dist.web import request_log
    from mephisto_dist.web.recorded_server import serve_recorded

    handler = logging.StreamHandler()
    formatter = LogFormatter(LOG_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # A log record per request (the access log): skip what the format never shows, the caller's frame
    # (a walk up the stack), the thread's and the process's names (the logging HOWTO's optimizations).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # The access log's lines, formatted as the handler's formatter would, written in batches (request_log).
    request_log.write_lines_to(handler.stream, formatter.stamp)
    metrics.enable(runtime.settings)
    metrics_port = metrics_port or runtime.settings.metrics_port
    if metrics_port:
        from mephisto_dist.web.metrics_listener import serve as serve_metrics

        serve_metrics(runtime, metrics_host or host, metrics_port, worker_port=port, public_port=public_port)
    serve_recorded(runtime, run_id=run_id, host=host, port=port, public_port=public_port, server_id=server_id)
