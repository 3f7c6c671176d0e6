"""Test-only stand-in for joblib's ``Parallel`` and ``delayed`` (the threading backend Mephisto's
parlai_chat_task_demo uses to shut its agents down), put on a test process's ``PYTHONPATH`` only when the
real joblib is not installed (it is not in requirements.lock; ``pip install -e ".[parlai]"`` brings it)."""

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def delayed(function: Callable[..., Any]) -> Callable[..., tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]:
    def capture(*args: Any, **kwargs: Any) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        return function, args, kwargs

    return capture


class Parallel:
    def __init__(self, n_jobs: int | None = None, backend: str | None = None, **_: Any) -> None:
        self.n_jobs = max(1, n_jobs or 1)

    def __call__(self, calls: Iterable[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        with ThreadPoolExecutor(max_workers=self.n_jobs) as pool:
            futures = [pool.submit(function, *args, **kwargs) for function, args, kwargs in calls]
            return [future.result() for future in futures]
