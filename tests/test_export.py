"""Export: every unit that ended (submitted or expired, expired optional), its status and metadata, in
all three formats, on SQLite and PostgreSQL; the partial work of agents that ended without submitting,
marked; and the command's flags."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Agent, AgentMessage, Unit
from mephisto_dist.db.transitions import move_agent, move_onboarding_agent, move_unit, move_units
from mephisto_dist.domain.status import AgentStatus, UnitStatus
from mephisto_dist.review.decisions import Decision, NotReviewable
from mephisto_dist.review.export import (
    download_files,
    ended_attempt_records,
    export_results,
    onboarding_records,
    unit_records,
    write_records,
)
from mephisto_dist.review.reviewing import decide_units
from mephisto_dist.storage import StorageError, open_storage
from mephisto_dist.work import claims, onboarding
from mephisto_dist.work.claims import Registration, RunContext
from tests.factories import make_run, now
from tests.system import make_runtime


def build(factory: Any) -> RunContext:
    """Four units: two submitted (one with tips and feedback), one expired, one still launched."""
    run = make_run(factory, assignments=4)
    for worker, answer in (("ann", "yes"), ("bob", "no, ça va")):
        reg = Registration.from_request({"provider_data": {"worker_name": worker, "assignment_id": worker}})
        with transaction(factory) as session:
            details = claims.register_agent(session, run, reg, now=now())
            assert details.agent_id
            if worker == "ann":
                session.execute(update(Agent).where(Agent.id == details.agent_id).values(
                    task_metadata={"feedback": "clear task", "tips": [{"text": "read twice"}]}))
            claims.submit_task(session, run, details.agent_id, {"answer": answer}, now=now())
    with transaction(factory) as session:
        launched = list(session.scalars(select(Unit.id).where(Unit.status == UnitStatus.LAUNCHED.value)
                                        .order_by(Unit.id)))
        move_units(session, launched[:1], UnitStatus.LAUNCHED, UnitStatus.EXPIRED, now=now())
    return run


def export(factory: Any, run: RunContext, fmt: str, **flags: bool) -> tuple[int, str]:
    out = io.StringIO()
    with transaction(factory) as session:
        count = write_records(unit_records(session, [run.run_id], **flags), out, fmt)
    return count, out.getvalue()


def test_every_ended_unit_with_status_and_metadata_in_jsonl_json_and_csv(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = build(factory)

    count, text = export(factory, run, "jsonl")
    records = [json.loads(line) for line in text.splitlines()]
    assert count == 3 and [r["status"] for r in records] == ["completed", "completed", "expired"]
    ann, bob, lost = records
    assert ann["worker_name"] == "ann" and ann["data"]["outputs"] == {"answer": "yes"}
    assert ann["metadata"] == {"feedback": "clear task", "tips": [{"text": "read twice"}]}
    assert bob["metadata"] == {} and bob["data"]["outputs"] == {"answer": "no, ça va"}
    assert lost["worker_name"] is None and lost["data"]["outputs"] is None and lost["metadata"] == {}
    assert lost["data"]["inputs"]["text"].startswith("item ")

    count, text = export(factory, run, "json")
    assert count == 3 and json.loads(text) == records

    count, text = export(factory, run, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert count == 3 and [r["status"] for r in rows] == ["completed", "completed", "expired"]
    assert rows[0]["metadata.feedback"] == "clear task"
    assert json.loads(rows[0]["metadata.tips"]) == [{"text": "read twice"}]
    assert rows[1]["outputs.answer"] == "no, ça va" and rows[1]["metadata.feedback"] == ""
    assert rows[2]["outputs.answer"] == "" and rows[2]["inputs.text"].startswith("item ")

    count, text = export(factory, run, "jsonl", include_expired=False)
    assert count == 2 and "expired" not in {json.loads(line)["status"] for line in text.splitlines()}
    count, text = export(factory, run, "jsonl", include_unsubmitted=True)
    assert count == 4 and [json.loads(line)["status"] for line in text.splitlines()][-1] == "launched"
    count, text = export(factory, run, "csv", include_unsubmitted=True, include_expired=False)
    assert count == 3 and [r["status"] for r in csv.DictReader(io.StringIO(text))] == [
        "completed", "completed", "launched"]


@pytest.mark.system
def test_the_export_command_writes_each_format_and_leaves_expired_out_on_request(tmp_path: Path) -> None:
    data = tmp_path / "data"
    database_url = f"sqlite:///{data / 'mephisto-dist.db'}"
    runtime = make_runtime(data, database_url, "redis://unused")
    run = build(runtime.sessions)
    runtime.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(data), "MEPHISTO_DIST_DATABASE_URL": database_url})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", "export", "--run", str(run.run_id),
                                 *args], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        return result

    assert [json.loads(line)["status"] for line in cli().stdout.splitlines()] == ["completed", "completed", "expired"]
    assert len(json.loads(cli("--format", "json").stdout)) == 3
    target = tmp_path / "out.csv"
    done = cli("--format", "csv", "--no-expired", "-o", str(target))
    assert "exported 2 unit(s) from 1 run(s)" in done.stderr
    rows = list(csv.DictReader(target.open(encoding="utf-8", newline="")))
    assert [r["status"] for r in rows] == ["completed", "completed"] and rows[0]["metadata.feedback"] == "clear task"
    assert [json.loads(line)["status"] for line in cli("--all").stdout.splitlines()][-1] == "launched"


def test_download_skips_what_storage_lost_and_leaves_no_partial_file(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "store").as_uri())
    for name in ("a", "c"):
        storage.put(f"uploads/1/{name}.txt", io.BytesIO(name.encode() * 1000))
    keys = ["uploads/1/a.txt", "uploads/1/b.txt", "uploads/1/c.txt"]
    seen: list[int] = []
    done = download_files(storage, keys, tmp_path / "out", seen.append)
    assert (done.written, done.missing, seen) == (2, ["uploads/1/b.txt"], [1, 2, 3])
    assert sorted(p.name for p in (tmp_path / "out" / "uploads" / "1").iterdir()) == ["a.txt", "c.txt"]
    assert (tmp_path / "out" / "uploads" / "1" / "c.txt").read_bytes() == b"c" * 1000


def test_a_failing_store_stops_the_download_with_no_partial_file(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "store").as_uri())
    storage.put("uploads/1/a.txt", io.BytesIO(b"a"))
    (tmp_path / "store" / "uploads" / "1" / "b.txt").mkdir()  # reading it fails: not a missing key
    with pytest.raises(StorageError, match="cannot read"):
        download_files(storage, ["uploads/1/a.txt", "uploads/1/b.txt"], tmp_path / "out")
    assert [p.name for p in (tmp_path / "out" / "uploads" / "1").iterdir()] == ["a.txt"]


def test_an_answer_holding_a_lone_surrogate_is_exported_in_every_format(engine: Engine) -> None:
    """A worker's answer is stored as sent, even half a UTF-16 character; export to a UTF-8 file still
    writes every record: JSON with that record's escapes (read back to the same value), CSV the escape."""
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=2)
    answer = {"rating": "x\ud800y", "\udfff": "1", "emoji": "\U0001f600"}
    reg = Registration.from_request({"provider_data": {"worker_name": "sue", "assignment_id": "s"}})
    with transaction(factory) as session:
        details = claims.register_agent(session, run, reg, now=now())
        assert details.agent_id
        claims.submit_task(session, run, details.agent_id, answer, now=now())
    for fmt in ("jsonl", "json", "csv"):
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding="utf-8", newline="")  # strict, as a file or stdout is
        with transaction(factory) as session:
            assert write_records(unit_records(session, [run.run_id]), out, fmt) == 1
        out.flush()
        text = raw.getvalue().decode("utf-8")
        if fmt == "csv":
            (row,) = csv.DictReader(io.StringIO(text))
            assert row["outputs.rating"] == "x\\ud800y" and row["outputs.\\udfff"] == "1"
            assert row["outputs.emoji"] == "\U0001f600"
        else:
            (record,) = [json.loads(line) for line in text.splitlines()] if fmt == "jsonl" else json.loads(text)
            assert record["data"]["outputs"] == answer


def test_agents_that_ended_without_submitting_are_exported_with_their_transcript_and_marked_partial(
        engine: Engine) -> None:
    """Three ways an agent ends without submitting: its runner was lost (``expired``, its unit back in the
    pool, then done by another worker), it disconnected (its unit expired with it), it timed out on a task
    it left nothing of. The first is an ended attempt of its own, with its messages and no review or
    payment (its unit is paid once, to who submitted it); the second is its unit's record, marked; the
    third left nothing, so nothing of it is exported beyond its unit's state."""
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=3)
    agents: dict[str, str] = {}
    for worker in ("lost", "gone", "idle"):
        reg = Registration.from_request({"provider_data": {"worker_name": worker, "assignment_id": worker}})
        with transaction(factory) as session:
            details = claims.register_agent(session, run, reg, now=now())
            assert details.agent_id
            agents[worker] = details.agent_id
    with transaction(factory) as session:
        units = {w: int(session.scalar(select(Agent.unit_id).where(Agent.id == a)) or 0) for w, a in agents.items()}
        for worker, said in (("lost", ["hello", "half a sentence"]), ("gone", ["bye"])):
            for seq, text in enumerate(said, 1):
                session.add(AgentMessage(task_run_id=run.run_id, agent_id=agents[worker], seq=seq,
                                         direction="in" if seq % 2 else "out", data={"text": text}))
        assert move_agent(session, agents["lost"], AgentStatus.IN_TASK, AgentStatus.EXPIRED, now=now())
        assert move_unit(session, units["lost"], UnitStatus.ASSIGNED, UnitStatus.LAUNCHED, now=now(),
                         agent_id=None, worker_id=None)
        assert move_agent(session, agents["gone"], AgentStatus.IN_TASK, AgentStatus.DISCONNECT, now=now())
        assert move_unit(session, units["gone"], UnitStatus.ASSIGNED, UnitStatus.EXPIRED, now=now())
        assert move_agent(session, agents["idle"], AgentStatus.IN_TASK, AgentStatus.TIMEOUT, now=now())
        assert move_unit(session, units["idle"], UnitStatus.ASSIGNED, UnitStatus.LAUNCHED, now=now(),
                         agent_id=None, worker_id=None)
    # A new worker takes the lost runner's unit (the first launched one) and submits it.
    reg = Registration.from_request({"provider_data": {"worker_name": "redo", "assignment_id": "redo"}})
    with transaction(factory) as session:
        redo = claims.register_agent(session, run, reg, now=now())
        assert redo.agent_id
        claims.submit_task(session, run, redo.agent_id, {"answer": "whole"}, now=now())
        assert session.scalar(select(Agent.unit_id).where(Agent.id == redo.agent_id)) == units["lost"]

    with transaction(factory) as session:
        attempts = list(ended_attempt_records(session, [run.run_id]))
        by_unit = {r["unit_id"]: r for r in unit_records(session, [run.run_id])}
    assert [a["agent_id"] for a in attempts] == [agents["lost"]], "the idle agent left nothing"
    lost = attempts[0]
    assert (lost["partial"], lost["agent_status"], lost["status"], lost["worker_name"]) == (
        True, "expired", "completed", "lost")
    assert [(m["direction"], m["data"]["text"]) for m in lost["data"]["messages"]] == [
        ("in", "hello"), ("out", "half a sentence")]
    assert lost["data"]["outputs"] is None and lost["review"] is None and lost["payment"] is None
    assert lost["end_time"] is not None
    done = by_unit[str(units["lost"])]
    assert (done["agent_id"], done["partial"], done["agent_status"]) == (redo.agent_id, False, "completed")
    assert done["payment"]["reward_pending"] == done["pay_amount"] > 0  # owed once, to who submitted it
    gone = by_unit[str(units["gone"])]
    assert (gone["agent_id"], gone["status"], gone["partial"], gone["agent_status"]) == (
        agents["gone"], "expired", True, "disconnect")
    assert [m["data"]["text"] for m in gone["data"]["messages"]] == ["bye"]
    assert gone["payment"]["reward_pending"] == 0.0

    written: list[str] = []

    def write(records: Any) -> int:
        out = io.StringIO()
        count = write_records(records, out, "csv")
        written.append(out.getvalue())
        return count

    exported = export_results(factory, write, task_name=None, run_id=run.run_id)
    assert (exported.count, exported.ended_count) == (2, 1)  # the completed and the expired unit, one attempt
    rows = list(csv.DictReader(io.StringIO(written[-1])))
    assert [(r["agent_status"], r["partial"]) for r in rows] == [
        ("completed", "false"), ("disconnect", "true"), ("expired", "true")]
    assert [m["data"]["text"] for m in json.loads(rows[2]["messages"])] == ["hello", "half a sentence"]
    exported = export_results(factory, write, task_name=None, run_id=run.run_id, include_expired=False)
    assert (exported.count, exported.ended_count) == (1, 0)

    # As in Mephisto, only a submission is reviewed for pay: the disconnected agent's unit is not.
    with pytest.raises(NotReviewable):
        decide_units(factory, Decision.APPROVE, [units["gone"]], now=now(), note=None, bonus=None)


def test_each_onboarding_attempt_is_exported_with_its_messages_and_outcome(engine: Engine) -> None:
    """A hosted onboarding world's transcript (passed), an onboarding page's answers (failed), an onboarding
    the worker left half-way (no outcome, partial), and one that left nothing (not exported): records of
    their own after the units, in JSON and CSV, counted apart by the export."""
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1)
    attempts: dict[str, str] = {}
    with transaction(factory) as session:
        for worker in ("talker", "answerer", "leaver", "silent"):
            worker_id = claims.create_worker(session, "mock", worker, now=now())
            attempts[worker] = onboarding.start(session, run.run_id, worker_id, f"a-{worker}",
                                                {"assignment_id": f"a-{worker}"}, now=now())
        for worker, said in (("talker", ["Welcome: what is 2 + 2?", "4"]), ("leaver", ["Welcome"])):
            for seq, text in enumerate(said, 1):
                session.add(AgentMessage(task_run_id=run.run_id, agent_id=attempts[worker], seq=seq,
                                         direction="out" if seq % 2 else "in", data={"text": text}))
    with transaction(factory) as session:
        onboarding.record_result(session, run.run_id, attempts["talker"], "chat-ok", passed=True, outputs={},
                                 now=now())
        onboarding.record_result(session, run.run_id, attempts["answerer"], "chat-ok", passed=False,
                                 outputs={"answer": "5"}, now=now())
        assert move_onboarding_agent(session, attempts["leaver"], AgentStatus.ONBOARDING, AgentStatus.DISCONNECT,
                                     now=now())
    with transaction(factory) as session:
        records = list(onboarding_records(session, [run.run_id]))
    by_worker = {r["worker_name"]: r for r in records}
    assert [r["worker_name"] for r in records] == ["talker", "answerer", "leaver"], "the silent one left nothing"
    assert {w: (r["onboarding"], r["agent_status"], r["partial"]) for w, r in by_worker.items()} == {
        "talker": ("passed", "approved", False), "answerer": ("failed", "rejected", False),
        "leaver": (None, "disconnect", True)}
    assert [(m["direction"], m["data"]["text"]) for m in by_worker["talker"]["data"]["messages"]] == [
        ("out", "Welcome: what is 2 + 2?"), ("in", "4")]
    assert by_worker["answerer"]["data"]["outputs"] == {"answer": "5"}
    assert "messages" not in by_worker["answerer"]["data"]
    assert {(r["unit_id"], r["review"], r["payment"], r["agent_id"].startswith("onboarding_")) for r in records} == {
        (None, None, None, True)}

    written: dict[str, str] = {}

    def writer(fmt: str) -> Any:
        def write(found: Any) -> int:
            out = io.StringIO()
            count = write_records(found, out, fmt)
            written[fmt] = out.getvalue()
            return count
        return write

    for fmt in ("json", "csv"):
        exported = export_results(factory, writer(fmt), task_name=None, run_id=run.run_id)
        assert (exported.count, exported.ended_count, exported.onboarding_count) == (0, 0, 3)
    assert [r["onboarding"] for r in json.loads(written["json"])] == ["passed", "failed", None]
    rows = list(csv.DictReader(io.StringIO(written["csv"])))
    assert [(r["worker_name"], r["onboarding"]) for r in rows] == [
        ("talker", "passed"), ("answerer", "failed"), ("leaver", "")]
    assert json.loads(rows[0]["messages"])[1]["data"] == {"text": "4"}
    assert rows[1]["outputs.answer"] == "5"
