"""The accounts a requester reconciles payments with: each exported unit carries its decision and reason,
what was paid (reward and bonus, paid or pending), the provider's ids; a CSV spreads uploads and calls
into columns; ``costs`` sums a run with the provider's fees. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update

from mephisto_dist.db.engine import make_engine, make_sessionmaker, transaction
from mephisto_dist.db.migrate import upgrade
from mephisto_dist.db.models import Agent, RemoteCall
from mephisto_dist.review.accounts import run_costs
from mephisto_dist.review.decisions import Decision, decide, perform_call
from mephisto_dist.review.export import unit_records, write_records
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration, RunContext
from tests.factories import make_run, now
from tests.test_cli_bad_input import assert_refused, run_cli

UPLOAD = {"name": "photo.png", "size": 3, "content_type": "image/png", "storage_key": "uploads/1/a/b/photo.png",
          "path": "/data/uploads/1/a/b/photo.png"}


def submitted(factory: Any, run: RunContext, worker: str, outputs: dict[str, Any]) -> tuple[int, str]:
    reg = Registration.from_request({"provider_data": {"worker_name": worker, "assignment_id": f"ASSIGN-{worker}"}})
    with transaction(factory) as session:
        details = claims.register_agent(session, run, reg, now=now())
        assert details.agent_id and details.unit_id
        claims.submit_task(session, run, details.agent_id, outputs, now=now())
    return details.unit_id, details.agent_id


def reviewed(factory: Any, unit_id: int, decision: Decision, note: str | None = None,
             bonus: float | None = None, *, send: bool = True) -> None:
    with transaction(factory) as session:
        done = decide(session, unit_id, decision, now=now(), note=note, bonus=bonus)
    if send:
        for call_id in done.call_ids:
            perform_call(factory, call_id)


def records(factory: Any, run: RunContext) -> list[dict[str, Any]]:
    with transaction(factory) as session:
        return list(unit_records(session, [run.run_id]))


def test_each_unit_says_what_was_decided_and_paid(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=5)
    ann, _ = submitted(factory, run, "ann", {"answer": "yes"})
    bob, _ = submitted(factory, run, "bob", {"answer": "no"})
    cat, _ = submitted(factory, run, "cat", {"answer": "maybe"})
    dan, _ = submitted(factory, run, "dan", {"answer": "later"})
    reviewed(factory, ann, Decision.APPROVE, "thorough", bonus=0.25)
    reviewed(factory, bob, Decision.REJECT, "copied the example")
    reviewed(factory, cat, Decision.SOFT_REJECT, "too short")
    reviewed(factory, dan, Decision.APPROVE, "extra effort", bonus=1.0, send=False)  # the calls are not made yet

    found = {r["worker_name"]: r for r in records(factory, run)}
    assert found["ann"]["review"]["decision"] == "accepted" and found["ann"]["review"]["reason"] == "thorough"
    assert found["ann"]["payment"] == {"reward": 0.5, "reward_paid": 0.5, "bonus_paid": 0.25, "bonus_pending": 0.0,
                                       "reward_pending": 0.0}
    assert found["bob"]["review"]["reason"] == "copied the example"
    assert found["bob"]["payment"]["reward_paid"] == 0.0 and found["bob"]["payment"]["reward_pending"] == 0.0
    assert found["cat"]["payment"]["reward_paid"] == 0.5  # a soft rejection pays, as in Mephisto
    assert found["dan"]["payment"]["reward_paid"] is None
    assert found["dan"]["payment"]["reward_pending"] == 0.5 and found["dan"]["payment"]["bonus_pending"] == 1.0
    assert found["ann"]["provider"] == {"type": "mock", "unit_id": found["ann"]["provider"]["unit_id"],
                                        "assignment_id": "ASSIGN-ann"}

    with transaction(factory) as session:
        (costs,) = run_costs(session, [run.run_id])
    assert (costs.rewards_paid, costs.bonuses_paid) == (1.0, 0.25)
    assert (costs.rewards_pending, costs.bonuses_pending) == (0.5, 1.0)
    assert costs.fee_rate == 0.0 and costs.total_paid == 1.25 and costs.total_pending == 1.5
    assert costs.units == {"launched": 1, "accepted": 2, "rejected": 1, "soft_rejected": 1}


def test_a_csv_spreads_uploads_and_calls_into_columns(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=1)
    _, agent_id = submitted(factory, run, "eve", {"rating": "4", "photo": UPLOAD})
    with transaction(factory) as session:
        session.add(RemoteCall(agent_id=agent_id, task_run_id=run.run_id, request_id="r1", target="classify",
                               args_json=json.dumps({"text": "a good day"}),
                               response_json=json.dumps({"label": "positive"}), status="answered"))
        session.execute(update(Agent).where(Agent.id == agent_id).values(task_metadata={"feedback": "fine"}))

    (record,) = records(factory, run)
    (call,) = record["data"]["requests"]
    assert call["args"] == {"text": "a good day"} and call["response"] == {"label": "positive"}
    assert call["args_json"] == json.dumps({"text": "a good day"})  # Mephisto's own fields stay

    out = io.StringIO()
    with transaction(factory) as session:
        write_records(unit_records(session, [run.run_id]), out, "csv")
    (row,) = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["outputs.rating"] == "4"
    assert row["outputs.photo.storage_key"] == UPLOAD["storage_key"] and row["outputs.photo.name"] == "photo.png"
    assert row["requests.0.args.text"] == "a good day" and row["requests.0.response.label"] == "positive"
    assert row["provider.assignment_id"] == "ASSIGN-eve" and row["payment.reward"] == "0.5"
    assert row["payment.reward_paid"] == "" and "review.decision" not in row  # submitted, not reviewed
    assert row["metadata.feedback"] == "fine"


@pytest.mark.system
def test_the_costs_command_sums_a_run(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data_dir / 'mephisto-dist.db'}")
    upgrade(engine)
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=3, task_name="costed")
    paid, _ = submitted(factory, run, "ann", {"answer": "yes"})
    submitted(factory, run, "bob", {"answer": "no"})
    reviewed(factory, paid, Decision.APPROVE, "good", bonus=0.3)
    engine.dispose()

    shown = run_cli(data_dir, "costs", "--task-name", "costed")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "costed" in line)
    # rewards paid 0.50, bonuses 0.30, fees 0 (mock), total 0.80, pending: bob's 0.50 reward.
    assert [cell.strip() for cell in row.split("│")[5:10]] == ["0.50", "0.30", "0.00 (0%)", "0.80", "0.50"]
    assert_refused(run_cli(data_dir, "costs"), "give exactly one of --task-name NAME or --run RUN_ID")
    unknown = run_cli(data_dir, "costs", "--task-name", "nope")
    assert unknown.returncode == 4 and "no task named 'nope'" in unknown.stderr, unknown.stderr  # not found
