"""The review app's pages with more completed units than one page shows (issue 22): units by worker come
a page at a time, each unit once, in the app served in this process against a real database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.review_app.app import UNITS_PER_PAGE
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration
from tests.factories import make_run, now
from tests.test_mephisto_api import api_client


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_units_by_worker_come_a_page_at_a_time(engine: Engine, tmp_path: Path) -> None:
    factory = make_sessionmaker(engine)
    count = UNITS_PER_PAGE + 7
    run = make_run(factory, assignments=count, task_name="paged-task")
    with transaction(factory) as session:
        for i in range(count):
            reg = Registration.from_request({"provider_data": {"worker_name": f"w{i % 3}", "assignment_id": f"a{i}"}})
            details = claims.register_agent(session, run, reg, now=now())
            assert details.agent_id
            claims.submit_task(session, run, details.agent_id, {"answer": i}, now=now())
    with api_client(engine, tmp_path / "data") as client:
        assert client.post("/login", data={"reviewer": "ada", "password": "correct-horse"}).status_code == 303
        first = client.get(f"/runs/{run.run_id}/review").text
        assert f"{UNITS_PER_PAGE} of {count} completed unit(s)" in first
        link = re.search(r'href="(/runs/\d+/review\?after=\d+)"', first)
        assert link is not None
        second = client.get(link.group(1)).text
        assert f"7 of {count} completed unit(s)" in second and "review?after=" not in second
    shown = [re.findall(r'<article class="unit" id="u(\d+)"', page) for page in (first, second)]
    assert len(shown[0]) == UNITS_PER_PAGE and len(shown[1]) == 7
    assert len(set(shown[0]) | set(shown[1])) == count  # every unit once
