"""Shared fixtures: a real Redis server per test session, real SQLite and PostgreSQL databases.

A missing service fails the run; nothing here skips. PostgreSQL comes from
``MEPHISTO_DIST_TEST_PG_URL`` (default: the local server's ``test`` database, trust auth).
"""

from __future__ import annotations

import multiprocessing.process
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from mephisto_dist.db.engine import make_engine
from mephisto_dist.db.migrate import upgrade

# -- the fast tier ---------------------------------------------------------------------------------------
# ``pytest -m "not system"`` runs the tests that start no process. The mark is kept true: a test that starts
# a process (a web server, a Celery worker, a CLI, a browser, a multiprocessing child; the session's test
# Redis aside) without ``@pytest.mark.system`` fails, saying so. With MEPHISTO_DIST_LIST_SPAWNING=FILE such
# tests are listed in FILE instead (to mark them in bulk).

_started: list[int] = [0]
_popen_init = subprocess.Popen.__init__
_process_start = multiprocessing.process.BaseProcess.start


def _counting_popen_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    program = args[0] if isinstance(args, list | tuple) and args else args
    if not str(program).endswith("redis-server"):
        _started[0] += 1
    _popen_init(self, args, *rest, **kwargs)


def _counting_start(self: multiprocessing.process.BaseProcess) -> None:
    _started[0] += 1
    _process_start(self)


subprocess.Popen.__init__ = _counting_popen_init  # type: ignore[method-assign]
multiprocessing.process.BaseProcess.start = _counting_start  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "teardown" and item.get_closest_marker("system") is None:
        started = _started[0] - item.stash.get(_STARTED_BEFORE, _started[0])
        listing = os.environ.get("MEPHISTO_DIST_LIST_SPAWNING")
        if started and listing:
            with open(listing, "a") as out:
                out.write(item.nodeid + "\n")
        elif started and report.passed:
            report.outcome = "failed"
            report.longrepr = (f"{item.nodeid} started {started} process(es) but is not marked "
                               "@pytest.mark.system: mark it, so that the fast tier (-m 'not system') stays fast")
    return report


_STARTED_BEFORE = pytest.StashKey[int]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    item.stash[_STARTED_BEFORE] = _started[0]
    return (yield)


PG_URL = os.environ.get("MEPHISTO_DIST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def wait_for(condition, timeout_s: float = 10.0, interval_s: float = 0.02, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a unix socket; yields its ``unix://`` URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH: install Debian's redis-server (see .ci/run)")
    directory = tmp_path_factory.mktemp("redis")
    socket = directory / "redis.sock"
    process = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"unix://{socket}"
    client = redis.Redis.from_url(url)
    try:
        wait_for(lambda: socket.exists() and _pings(client), message="redis-server to start")
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    yield redis_server


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema per test (dropped afterwards), on the configured server."""
    admin = make_engine(PG_URL)
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as error:  # noqa: BLE001  (a missing server must fail loudly, not skip)
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable: {error}")
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Run a test once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Any]:
    """A Runtime on the test's database (migrated) and Redis, its data in ``tmp_path / "data"``; a test
    module that needs other settings defines its own."""
    from tests.system import make_runtime

    rt = make_runtime(tmp_path / "data", database_url, redis_url)
    yield rt
    rt.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (never ``playwright install``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 in server mode: a separate process reached over HTTP, as MinIO or AWS would be."""
    import sys

    import httpx

    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"moto server exited with {process.returncode}; see {log.name}")
        try:
            return httpx.get(url + "/moto-api/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, timeout_s=30, interval_s=0.1, message="moto server to start")
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


S3_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


EC2_REGION = "us-east-2"


@pytest.fixture
def ec2(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's server (the session's, which serves every AWS API) as this process's and its children's
    EC2 endpoint, the standard way; instances left running are terminated afterwards."""
    import boto3

    for name, value in {**S3_TEST_ENV, "AWS_ENDPOINT_URL_EC2": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("ec2", region_name=EC2_REGION)
    yield client
    ours = client.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    ids = [i["InstanceId"] for r in ours["Reservations"] for i in r["Instances"]]
    if ids:
        client.terminate_instances(InstanceIds=ids)


@pytest.fixture
def s3_storage_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the moto server; the environment points boto3 at it the standard way
    (``AWS_ENDPOINT_URL_S3``), so this process and its children reach it like any S3 store."""
    import boto3

    for name, value in {**S3_TEST_ENV, "AWS_ENDPOINT_URL_S3": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    bucket = "b-" + uuid.uuid4().hex[:12]
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/deploy"
