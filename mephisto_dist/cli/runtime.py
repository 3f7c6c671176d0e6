"""The Runtime a command works with: built from the environment, with the database schema up to date."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mephisto_dist.db.migrate import upgrade
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import load_settings


def open_runtime() -> Runtime:
    """The caller closes it (``runtime.close()``); prefer :func:`opened_runtime`."""
    runtime = Runtime(load_settings())
    try:
        upgrade(runtime.engine)
    except BaseException:
        runtime.close()
        raise
    return runtime


@contextmanager
def opened_runtime() -> Iterator[Runtime]:
    runtime = open_runtime()
    try:
        yield runtime
    finally:
        runtime.close()
