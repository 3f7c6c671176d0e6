"""A Celery app for tests of the worker process itself: the product's app (``make_celery``, so the
product's worker settings) with two tasks of the test's own, a slow one to be running when the broker
goes away and one that leaves a file to show the worker still consumes."""

from __future__ import annotations

import time
from pathlib import Path

from mephisto_dist.celery.app import make_celery
from mephisto_dist.settings import load_settings

app = make_celery(load_settings(), record_metrics=False)


@app.task(name="tests.sleep")
def sleep(seconds: float) -> None:
    time.sleep(seconds)


@app.task(name="tests.touch")
def touch(path: str) -> None:
    Path(path).write_text("done")
