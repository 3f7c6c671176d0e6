"""What a hostile or broken client sends to the worker-facing server: every bad body is a 400 or 413 with
a short reason and nothing stored, on SQLite and PostgreSQL. The real app on the real databases and
Redis, called in-process (an ASGI client reads a streamed body lazily, so a test can see how much of it
the server read before refusing it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Agent, Unit, Worker
from mephisto_dist.runtime import Runtime
from mephisto_dist.web.app import create_app
from mephisto_dist.work.claims import RunContext
from tests.factories import make_run
from tests.system import make_runtime

LIMIT_BYTES = 64 * 1024
CHUNK_BYTES = 16 * 1024


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "data", database_url, redis_url, MAX_UPLOAD_BYTES=str(LIMIT_BYTES))
    yield rt
    rt.close()


@pytest.fixture
def run(runtime: Runtime) -> RunContext:
    return make_run(runtime.sessions, assignments=2)


def call(runtime: Runtime, run: RunContext, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        app = create_app(runtime, run_id=run.run_id)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.request(method, path, **kwargs)
    return asyncio.run(go())


def registration(worker: str, assignment: str = "a1") -> dict[str, Any]:
    return {"provider_data": {"worker_name": worker, "assignment_id": assignment,
                              "agent_registration_id": f"{assignment}-{worker}", "provider_type": "mock"}}


def register(runtime: Runtime, run: RunContext, worker: str = "alice") -> str:
    response = call(runtime, run, "POST", "/request_agent", json=registration(worker))
    assert response.status_code == 200, response.text
    agent_id = response.json()["data"]["agent_id"]
    assert isinstance(agent_id, str)
    return agent_id


def stored(runtime: Runtime) -> tuple[int, int]:
    """(workers, agents) in the database."""
    with transaction(runtime.sessions) as session:
        return (session.scalar(select(func.count()).select_from(Worker)) or 0,
                session.scalar(select(func.count()).select_from(Agent)) or 0)


def unit_status(runtime: Runtime, agent_id: str) -> str:
    with transaction(runtime.sessions) as session:
        agent = session.get(Agent, agent_id)
        assert agent is not None
        unit = session.get(Unit, agent.unit_id)
        assert unit is not None
        return unit.status


@pytest.mark.parametrize("name, reason", [
    ("x" * 1_000_000, "over the limit of 255"),
    ("x" * 256, "over the limit of 255"),
    ("ali\x00ce", "control character (U+0000)"),
    ("ali\x07ce", "control character (U+0007)"),
    ("ali\ud800ce", "control character (U+D800)"),
], ids=["1MB", "256", "NUL", "BEL", "surrogate"])
def test_a_bad_worker_name_is_refused_and_nothing_stored(runtime: Runtime, run: RunContext, name: str,
                                                         reason: str) -> None:
    body = json.dumps(registration(name)).encode()  # a lone surrogate stays escaped: valid JSON text
    response = call(runtime, run, "POST", "/request_agent", content=body,
                    headers={"content-type": "application/json"})
    assert response.status_code in (400, 413), response.text
    if response.status_code == 400:
        assert "worker_name" in response.json()["error"] and reason in response.json()["error"]
    assert stored(runtime) == (0, 0)


def test_a_name_of_255_characters_is_taken(runtime: Runtime, run: RunContext) -> None:
    name = "é" * 250
    response = call(runtime, run, "POST", "/request_agent", json=registration(name, assignment="h"))
    assert response.status_code == 200, response.text
    with transaction(runtime.sessions) as session:
        assert session.scalars(select(Worker.worker_name)).all() == [name]


def test_a_registration_id_too_long_for_its_column_is_refused(runtime: Runtime, run: RunContext) -> None:
    body = registration("alice", assignment="h" * 300)
    response = call(runtime, run, "POST", "/request_agent", json=body)
    assert response.status_code == 400 and "agent_registration_id" in response.json()["error"]
    assert stored(runtime) == (0, 0)


def test_invalid_utf8_and_deep_json_are_refused(runtime: Runtime, run: RunContext) -> None:
    raw = json.dumps(registration("alice")).encode().replace(b"alice", b"ali\xffce")
    bad = call(runtime, run, "POST", "/request_agent", content=raw, headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"] == "the request body is not valid UTF-8"
    for depth in (65, 30_000):  # the second is past the interpreter's recursion limit
        text = json.dumps(registration("alice"))[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"
        answer = call(runtime, run, "POST", "/request_agent", content=text,
                      headers={"content-type": "application/json"})
        assert answer.status_code == 400 and "nested" in answer.json()["error"], answer.text
    assert stored(runtime) == (0, 0)
    agent = register(runtime, run)
    nested = {"USED_AGENT_ID": agent, "final_data": {"a": json.loads("[" * 70 + "]" * 70)}}
    refused = call(runtime, run, "POST", "/submit_task", json=nested)
    assert refused.status_code == 400 and unit_status(runtime, agent) == "assigned"
    # 64 levels in all (the body, final_data, then 62 lists) is within the limit.
    shallow = {"USED_AGENT_ID": agent, "final_data": {"a": json.loads("[" * 62 + "]" * 62)}}
    assert call(runtime, run, "POST", "/submit_task", json=shallow).status_code == 200


class Body:
    """A chunked request body that counts what the server pulled from it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.sent += 1
            yield chunk


def test_a_chunked_json_body_is_refused_once_it_passes_the_limit(runtime: Runtime, run: RunContext) -> None:
    agent = register(runtime, run)
    text = json.dumps({"USED_AGENT_ID": agent, "final_data": {"essay": "x" * (100 * LIMIT_BYTES)}}).encode()
    body = Body([text[i:i + CHUNK_BYTES] for i in range(0, len(text), CHUNK_BYTES)])
    response = call(runtime, run, "POST", "/submit_task", content=body,
                    headers={"content-type": "application/json"})
    assert response.status_code == 413 and "over the limit" in response.json()["error"]
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert body.sent <= LIMIT_BYTES // CHUNK_BYTES + 1 < len(body.chunks)  # stopped right past the limit
    assert unit_status(runtime, agent) == "assigned"


def multipart(fields: dict[str, str], files: dict[str, bytes], boundary: str = "b0undary") -> bytes:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts += [(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}.bin"\r\n'
               f"Content-Type: application/octet-stream\r\n\r\n").encode() + v + b"\r\n" for k, v in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


FORM = {"content-type": "multipart/form-data; boundary=b0undary"}


def test_a_chunked_multipart_body_is_refused_once_it_passes_the_limit(runtime: Runtime, run: RunContext) -> None:
    agent = register(runtime, run)
    raw = multipart({"USED_AGENT_ID": agent, "final_string_data": "{}"}, {"evidence": b"x" * (100 * LIMIT_BYTES)})
    body = Body([raw[i:i + CHUNK_BYTES] for i in range(0, len(raw), CHUNK_BYTES)])
    response = call(runtime, run, "POST", "/submit_task", content=body, headers=FORM)
    assert response.status_code == 413 and "over the limit" in response.json()["error"]
    assert body.sent <= LIMIT_BYTES // CHUNK_BYTES + 1 < len(body.chunks)
    assert unit_status(runtime, agent) == "assigned"
    assert not list(runtime.settings.data_dir.glob("**/evidence.bin"))
    # Under the limit, a chunked multipart submission is taken.
    small = multipart({"USED_AGENT_ID": agent, "final_string_data": '{"rating": "4"}'}, {"evidence": b"abc"})
    taken = call(runtime, run, "POST", "/submit_task", content=Body([small[:50], small[50:]]), headers=FORM)
    assert taken.status_code == 200, taken.text
    with transaction(runtime.sessions) as session:
        outputs = session.get(Agent, agent).outputs  # type: ignore[union-attr]
    assert outputs is not None and outputs["rating"] == "4" and outputs["evidence"]["size"] == 3


def test_a_multipart_submit_without_final_string_data_keeps_the_unit_open(runtime: Runtime,
                                                                          run: RunContext) -> None:
    agent = register(runtime, run)
    response = call(runtime, run, "POST", "/submit_task", data={"USED_AGENT_ID": agent},
                    files={"evidence": ("e.txt", b"hello", "text/plain")})
    assert response.status_code == 400 and "final_string_data" in response.json()["error"]
    assert unit_status(runtime, agent) == "assigned"
    assert not list(runtime.settings.data_dir.glob("**/e.txt"))
    ok = call(runtime, run, "POST", "/submit_task", data={"USED_AGENT_ID": agent, "final_string_data": '{"a": "1"}'},
              files={"evidence": ("e.txt", b"hello", "text/plain")})
    assert ok.status_code == 200 and unit_status(runtime, agent) == "completed"


def test_a_multipart_field_that_is_not_utf8_is_refused(runtime: Runtime, run: RunContext) -> None:
    agent = register(runtime, run)
    raw = multipart({"USED_AGENT_ID": agent, "final_string_data": '{"comment": "caf#"}'}, {"evidence": b"abc"})
    raw = raw.replace(b"caf#", b"caf\xe9")  # Latin-1, not UTF-8
    response = call(runtime, run, "POST", "/submit_task", content=raw, headers=FORM)
    assert response.status_code == 400
    assert response.json()["error"] == "the form field 'final_string_data' is not valid UTF-8"
    assert unit_status(runtime, agent) == "assigned"
    good = multipart({"USED_AGENT_ID": agent, "final_string_data": '{"comment": "café"}'}, {"evidence": b"abc"})
    assert call(runtime, run, "POST", "/submit_task", content=good, headers=FORM).status_code == 200
    with transaction(runtime.sessions) as session:
        assert session.get(Agent, agent).outputs["comment"] == "café"  # type: ignore[union-attr,index]


URLENCODED = {"content-type": "application/x-www-form-urlencoded"}


def test_a_url_encoded_submit_is_taken_as_a_multipart_one_is(runtime: Runtime, run: RunContext) -> None:
    """An HTML form posted as it is: its fields are the submission's, with a multipart form's limits and
    refusals (and its UTF-8 decoded as UTF-8, raw or %-escaped, never as Latin-1)."""
    agent = register(runtime, run)
    without = call(runtime, run, "POST", "/submit_task", content=urlencode({"USED_AGENT_ID": agent, "rating": "4"}),
                   headers=URLENCODED)
    assert without.status_code == 400 and "final_string_data" in without.json()["error"], without.text
    latin1 = f"USED_AGENT_ID={agent}&final_string_data=%7B%22comment%22%3A%22caf%E9%22%7D"
    refused = call(runtime, run, "POST", "/submit_task", content=latin1, headers=URLENCODED)
    assert refused.json() == {"error": "the form field 'final_string_data' is not valid UTF-8"}, refused.text
    big = urlencode({"USED_AGENT_ID": agent, "final_string_data": json.dumps({"essay": "x" * LIMIT_BYTES})})
    too_big = call(runtime, run, "POST", "/submit_task", content=big, headers=URLENCODED)
    assert too_big.status_code == 413 and "over the limit" in too_big.json()["error"]
    assert unit_status(runtime, agent) == "assigned"
    answers = {"comment": "café \U0001f600", "rating": "4"}
    body = urlencode({"USED_AGENT_ID": agent, "final_string_data": json.dumps(answers, ensure_ascii=False)})
    taken = call(runtime, run, "POST", "/submit_task", content=body,
                 headers={"content-type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert taken.status_code == 200 and taken.json()["status"] == "Submitted!", taken.text
    assert unit_status(runtime, agent) == "completed"
    with transaction(runtime.sessions) as session:
        assert session.get(Agent, agent).outputs == answers  # type: ignore[union-attr]
    again = call(runtime, run, "POST", "/submit_task", data={"USED_AGENT_ID": agent, "final_string_data": "{}"})
    assert again.status_code == 200 and again.json()["status"] == "Already submitted", again.text


def test_a_page_on_another_mephisto_task_version_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """The page sends the version its mephisto-task reports: the one served (what the 2.0.4 release on npm
    reports) is quiet; another is logged for the operator, once, as Mephisto's router does."""
    from mephisto_dist.web.frontend import RenderedFrontend

    frontend = RenderedFrontend()
    for version in (None, "2.0.3", "1.0.9", "1.0.9"):
        frontend.check_client_version(version)
    told = [r.getMessage() for r in caplog.records if "mephisto-task" in r.getMessage()]
    assert len(told) == 1 and "mephisto-task '1.0.9', but this server speaks for 2.0.3" in told[0], told


def test_metadata_is_taken_while_working_and_refused_after_submission(runtime: Runtime, run: RunContext) -> None:
    """Tips and feedback in the shapes Mephisto's add-ons send, kept as Mephisto's agent state keeps them."""
    agent = register(runtime, run)
    tip = {"USED_AGENT_ID": agent, "metadata": {"tips": {"type": "tips", "header": "h", "text": "a"}}}
    tips = call(runtime, run, "POST", "/submit_metadata", json=tip)
    assert tips.status_code == 200 and tips.json() == {"status": "Submitted Metadata!"}
    feedback = {"USED_AGENT_ID": agent, "metadata": {"feedback": {"data": [{"question": "q", "text": "nice"}]}}}
    assert call(runtime, run, "POST", "/submit_metadata", json=feedback).status_code == 200
    bad = call(runtime, run, "POST", "/submit_metadata", json={"USED_AGENT_ID": agent, "metadata": {"tips": ["a"]}})
    assert bad.status_code == 400 and "a tip must be an object" in bad.json()["error"]
    assert call(runtime, run, "POST", "/submit_task",
                json={"USED_AGENT_ID": agent, "final_data": {"a": "1"}}).status_code == 200
    late = call(runtime, run, "POST", "/submit_metadata", json=feedback)
    assert late.status_code == 409 and "completed" in late.json()["error"]
    with transaction(runtime.sessions) as session:
        stored = session.get(Agent, agent).task_metadata  # type: ignore[union-attr]
    assert [(t["header"], t["text"], t["accepted"]) for t in stored["tips"]] == [("h", "a", False)]
    assert [(f["question"], f["text"], f["reviewed"]) for f in stored["feedback"]] == [("q", "nice", False)]
    assert stored["tips"][0]["id"] != stored["feedback"][0]["id"]


def test_a_bad_agent_id_is_a_400_not_a_driver_error(runtime: Runtime, run: RunContext) -> None:
    for agent_id, reason in (("ab\x00cd", "control character"), ("a" * 65, "over the limit of 64"),
                             (None, "USED_AGENT_ID is missing")):
        response = call(runtime, run, "POST", "/submit_task", json={"USED_AGENT_ID": agent_id, "final_data": {}})
        assert response.status_code == 400 and reason in response.json()["error"], response.text


def test_a_database_outage_is_a_503_the_worker_can_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sqlalchemy.engine import make_url

    from mephisto_dist.settings import load_settings
    from mephisto_dist.web.errors import BACKEND_DOWN
    from tests.conftest import PG_URL

    down = make_url(PG_URL).set(port=1, password="s3cret-pw").render_as_string(hide_password=False)
    runtime = Runtime(load_settings({"MEPHISTO_DIST_DATA_DIR": str(tmp_path), "MEPHISTO_DIST_DATABASE_URL": down,
                                     "MEPHISTO_DIST_REDIS_URL": "redis://127.0.0.1:1/0",
                                     "MEPHISTO_DIST_OUTAGE_WAIT_S": "0.5"}))
    try:
        for method, path, body in (("GET", "/task_config.json", None),
                                   ("POST", "/request_agent", registration("alice"))):
            response = call(runtime, RunContext(1, 1, "t", "mock", "/nonexistent", {}), method, path, json=body)
            assert response.status_code == 503 and response.json() == {"error": BACKEND_DOWN}
    finally:
        runtime.close()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "cannot reach the database at postgresql://" in logged and ":***@" in logged
    # Waited out first (a restart or a failover is over in seconds), then answered.
    assert "waiting up to 0.5 s for it to come back" in logged and "outlasted" in logged, logged
    assert "s3cret-pw" not in logged


def test_answers_with_nul_and_lone_surrogates_are_stored_as_sent(runtime: Runtime, run: RunContext) -> None:
    agent = register(runtime, run)
    answer = {"nul": "a\x00b", "surrogate": "x\ud800y", "emoji": "ok \U0001f600"}
    body = json.dumps({"USED_AGENT_ID": agent, "final_data": answer})  # escaped: valid JSON text
    response = call(runtime, run, "POST", "/submit_task", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    with transaction(runtime.sessions) as session:
        assert session.get(Agent, agent).outputs == answer  # type: ignore[union-attr]
