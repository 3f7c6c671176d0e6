"""A real ``mephisto-dist prolific-local`` process for tests, and a simulated participant at it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from tests.conftest import wait_for
from tests.system import ROOT, free_port

FAKE_TOKEN = "prolific-local-test-token-never-printed"


@contextmanager
def prolific_local(db: Path, log: Path, *, processing_s: float = 0.2, port: int | None = None,
                   slow_pay_s: float = 0.0, api_key: str | None = None) -> Iterator[str]:
    """Start the service (on ``port``, else a free one, so that it can come back where a requester expects
    it; accepting only ``api_key`` when given, passed in its environment); yields its URL."""
    port = port or free_port()
    env = {**os.environ, "PROLIFIC_LOCAL_API_KEY": api_key} if api_key else None
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mephisto_dist.cli.app", "prolific-local", "--port", str(port), "--db", str(db),
             "--processing-s", str(processing_s), "--slow-pay-s", str(slow_pay_s)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url) or process.poll() is not None, 20, message="prolific-local to start")
        if process.poll() is not None:
            raise AssertionError(f"prolific-local exited: {log.read_text()}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # a slow answer (--slow-pay-s) still under way holds uvicorn up
            process.kill()
            process.wait(5)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/local/stats", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def params_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def take_part(prolific: str, study_id: str, participant: str, timeout_s: float = 10) -> dict[str, Any]:
    """A participant takes a place in the study (waiting out PROCESSING): the submission and the study URL
    Prolific opens for them."""
    def started() -> dict[str, Any] | None:
        answer = httpx.post(f"{prolific}/local/studies/{study_id}/start", json={"participant_id": participant})
        return dict(answer.json()) if answer.status_code == 200 else None

    found: dict[str, Any] = wait_for(started, timeout_s, 0.05, message=f"a place in study {study_id}")
    return found


def come_back(complete_url: str, participant: str) -> dict[str, Any]:
    """The participant reaches Prolific's completion page with the code (as the task page redirects)."""
    done = httpx.get(f"{complete_url}&PROLIFIC_PID={quote(participant)}", headers={"accept": "application/json"})
    assert done.status_code == 200, done.text
    return dict(done.json())
