"""The Runtime a command works with: built from the environment, on a database whose schema matches
this code (only ``migrate`` and an embedded run change it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mephisto_dist.db.migrate import check_schema
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import load_settings


def open_runtime() -> Runtime:
    """The caller closes it (``runtime.close()``); prefer :func:`opened_runtime`. A schema behind is
    refused with "run mephisto-dist migrate" (a fresh embedded SQLite database is created: that is the
    embedded default's first use)."""
    runtime = Runtime(load_settings())
    try:
        check_schema(runtime.engine, create_embedded=runtime.engine.dialect.name == "sqlite")
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
