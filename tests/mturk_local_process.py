"""A real ``mephisto-dist mturk-local`` process for tests, and boto3 clients pointed at it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from tests.conftest import wait_for
from tests.system import ROOT, free_port

FAKE_KEY_ID = "AKIDMTURKLOCALTEST00"
FAKE_SECRET = "mturk-local-test-secret-never-printed"


@contextmanager
def mturk_local(db: Path, log: Path, *, rate: float = 0.0, balance: str = "10000.00") -> Iterator[str]:
    """Start the service on a free port; yields its URL. ``rate`` 0 turns throttling off."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mephisto_dist.cli.app", "mturk-local", "--port", str(port), "--db", str(db),
             "--rate", str(rate), "--balance", balance],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url) or process.poll() is not None, 20, message="mturk-local to start")
        if process.poll() is not None:
            raise AssertionError(f"mturk-local exited: {log.read_text()}")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/api/stats", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def client(url: str, *, retries: int = 0) -> Any:
    return boto3.client("mturk", endpoint_url=url, region_name="us-east-1", aws_access_key_id=FAKE_KEY_ID,
                        aws_secret_access_key=FAKE_SECRET,
                        config=Config(retries={"total_max_attempts": retries + 1, "mode": "standard"}))


def external_question(url: str, height: int = 600) -> str:
    return ('<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/'
            f'2006-07-14/ExternalQuestion.xsd"><ExternalURL>{url}</ExternalURL>'
            f'<FrameHeight>{height}</FrameHeight></ExternalQuestion>')
