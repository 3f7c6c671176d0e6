"""A Redis that accepts connections and never answers (a network partition) costs a bounded wait and
then an error naming Redis, in the running system's clients: the limiter and the task queue."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mephisto_dist.errors import ServiceError
from tests.system import make_runtime

pytestmark = pytest.mark.system


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A TCP server that accepts every connection and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    listener.close()


def returns_within(work: object, deadline_s: float) -> BaseException | None:
    """Run ``work`` in a thread; fail the test if it is still hanging at the deadline."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            work()  # type: ignore[operator]
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 (the test looks at it)
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(deadline_s)
    assert outcome, f"still hanging after {deadline_s} s"
    return outcome[0]


def test_the_limiter_and_the_queue_give_up_on_a_silent_redis(tmp_path: Path, sqlite_url: str,
                                                              silent_redis: str) -> None:
    rt = make_runtime(tmp_path / "data", sqlite_url, silent_redis, REDIS_TIMEOUT_S="0.5")
    try:
        error = returns_within(lambda: rt.limiter.held("run:1:units"), 30)
        assert isinstance(error, ServiceError) and "not answering" in str(error), error
        error = returns_within(lambda: rt.queue.enqueue("mephisto_dist.launch_units", 1), 60)
        assert isinstance(error, ServiceError) and "not answering" in str(error), error
    finally:
        rt.close()
