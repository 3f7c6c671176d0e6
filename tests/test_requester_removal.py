"""A removed requester, on SQLite and PostgreSQL: out of listings, beat's HIT pass and new runs; its ended
runs keep their row; registering it again brings it back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import TaskRun
from mephisto_dist.errors import ConfigError, NotAllowed, NotFoundError
from mephisto_dist.providers.requesters import Keep, provider_access_args
from mephisto_dist.reconcile.hits import requester_providers
from mephisto_dist.runs.requesters import register_requester, registered_requesters, remove_requester
from mephisto_dist.runtime import Runtime
from tests.factories import make_run

LOCAL = "http://127.0.0.1:5999"


@pytest.fixture(autouse=True)
def aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws" / "config"))


def test_a_removed_requester_is_gone_from_listings_beat_and_new_runs_until_registered_again(
        runtime: Runtime) -> None:
    now = datetime.now(UTC)
    register_requester(runtime.sessions, "mturk_sandbox", "lab", keys=None, endpoint_url=LOCAL, now=now)
    assert [p.access.requester_name for p in requester_providers(runtime.sessions, "default")] == ["lab"]
    removed = remove_requester(runtime.sessions, "lab", None, forget_keys=False, now=now)
    assert removed.ended_runs == 0 and removed.marketplace and removed.keys_file is None
    assert registered_requesters(runtime.sessions) == []
    assert requester_providers(runtime.sessions, "default") == []
    with transaction(runtime.sessions) as session, pytest.raises(ConfigError, match="'lab' is not registered"):
        provider_access_args(session, "mturk_sandbox", {"requester_name": "lab"}, "default")
    with pytest.raises(NotFoundError):
        remove_requester(runtime.sessions, "lab", None, forget_keys=False, now=now)
    back = register_requester(runtime.sessions, "mturk_sandbox", "lab", keys=None, endpoint_url=Keep.ENDPOINT,
                              now=now)
    assert back.changes == () and back.endpoint is None  # deleted, so registered anew


def test_a_requester_with_ended_runs_is_kept_hidden_and_one_with_an_open_run_is_not_removed(
        runtime: Runtime) -> None:
    now = datetime.now(UTC)
    run_id = make_run(runtime.sessions, assignments=1, launch=False).run_id
    with pytest.raises(NotAllowed, match=f"open task run\\(s\\) {run_id};"):
        remove_requester(runtime.sessions, "mock_requester", "mock", forget_keys=False, now=now)
    with transaction(runtime.sessions) as session:
        session.execute(update(TaskRun).values(is_completed=True))
    removed = remove_requester(runtime.sessions, "mock_requester", None, forget_keys=False, now=now)
    assert removed.ended_runs == 1 and not removed.marketplace
    assert registered_requesters(runtime.sessions) == []
    with transaction(runtime.sessions) as session:
        assert session.get(TaskRun, run_id) is not None
    again = register_requester(runtime.sessions, "mock", "mock_requester", keys=None, endpoint_url=Keep.ENDPOINT,
                               now=now)
    assert not again.marketplace
    assert [r.requester_name for r in registered_requesters(runtime.sessions)] == ["mock_requester"]
