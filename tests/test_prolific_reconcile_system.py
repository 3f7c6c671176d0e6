"""Beat reconciles Prolific, against real processes: an attached ``mephisto-dist run`` on a prolific-local
study is SIGKILLed with everything it started, while a participant completes the study on Prolific without
ever reaching our server; the run is then shut down while Prolific cannot be reached, so the study stays
ACTIVE. One Celery worker and beat, started again with Prolific back, stop the study and record the
submission, which ``hits unreceived``, ``hits outstanding`` and ``status`` show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import ProviderSubmission
from mephisto_dist.settings import load_settings
from tests.conftest import wait_for
from tests.prolific_local_process import FAKE_TOKEN, come_back, prolific_local, take_part
from tests.system import ROOT, celery_beat, celery_worker, free_port, make_runtime
from tests.test_lifecycle_system import AttachedRun, _external_env
from tests.test_reconcile_system import kill_everything

pytestmark = pytest.mark.system
AUTH = {"Authorization": f"Token {FAKE_TOKEN}"}
PROVIDER = ("mephisto/provider=prolific", "mephisto.provider.requester_name=lab")


def our_studies(prolific: str) -> list[dict[str, Any]]:
    listed = httpx.get(f"{prolific}/api/v1/studies/", headers=AUTH).json()["results"]
    return [s for s in listed if str(s["internal_name"]).startswith("mephisto-dist deployment=default ")]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], cwd=ROOT,
                          env={**env, "COLUMNS": "250"}, capture_output=True, text=True, timeout=120, check=False)


def test_beat_stops_the_study_of_a_killed_run_and_records_a_submission_that_never_reached_us(
        tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROLIFIC_CREDENTIALS_FILE", str(tmp_path / "prolific" / "credentials"))
    port = free_port()
    db, log = tmp_path / "prolific.sqlite3", tmp_path / "prolific.log"
    settings_env = _external_env(tmp_path, redis_url, MEPHISTO_DIST_RECONCILE_EVERY_S="1",
                                 MEPHISTO_DIST_HEARTBEAT_EVERY_S="1", MEPHISTO_DIST_BEAT_LOCK_TIMEOUT_S="3")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEPHISTO_DIST_")}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(tmp_path / "data"),
                "PROLIFIC_CREDENTIALS_FILE": str(tmp_path / "prolific" / "credentials"), **settings_env})
    with prolific_local(db, log, port=port) as prolific:
        registered = cli(env, "register", "prolific", "name=lab", f"api_key={FAKE_TOKEN}", f"endpoint_url={prolific}")
        assert registered.returncode == 0, registered.stderr
        run = AttachedRun(tmp_path, *PROVIDER, rows=3, env=env)
        try:
            run.wait_for_output(r"launched in", timeout_s=90)
            [study] = wait_for(lambda: [s for s in our_studies(prolific) if s["total_available_places"] == 3],
                               timeout_s=60, message="the run's study with 3 places")
            # A participant takes part and comes back with the code without our server ever seeing them.
            unseen = take_part(prolific, study["id"], "PNEVERSEEN")
            code = study["completion_codes"][0]["code"]
            assert come_back(f"{prolific}/submissions/complete?cc={code}", "PNEVERSEEN")["status"] == \
                "AWAITING REVIEW"
        finally:
            kill_everything(run)
    # Prolific cannot be reached while the researcher stops the run: the study stays ACTIVE there.
    stopped = cli(env, "shutdown", "1", "--force")
    assert stopped.returncode == 3 and "Prolific" in stopped.stderr, stopped.stderr + stopped.stdout

    settings = load_settings(env)
    rt = make_runtime(tmp_path / "data", settings.database_url, redis_url)
    redis.Redis.from_url(redis_url).delete("mephisto")  # tasks sent before the kill must not do the work
    try:
        with prolific_local(db, log, port=port) as prolific, \
                celery_worker(settings, tmp_path / "worker.log"), celery_beat(settings, tmp_path / "beat.log"):
            assert httpx.get(f"{prolific}/api/v1/studies/{study['id']}/", headers=AUTH).json()["status"] == "ACTIVE"

            def cleaned() -> bool:
                status = httpx.get(f"{prolific}/api/v1/studies/{study['id']}/", headers=AUTH).json()["status"]
                with transaction(rt.sessions) as session:
                    recorded = session.scalars(select(ProviderSubmission)).all()
                return status == "AWAITING REVIEW" and len(recorded) == 1

            try:
                wait_for(cleaned, timeout_s=60, interval_s=0.5,
                         message="beat to stop the study and record the submission that never reached us")
            except AssertionError as late:
                logs = {name: (tmp_path / name).read_text()[-6000:] for name in ("worker.log", "beat.log")}
                raise AssertionError(f"{late}\n" + "\n".join(f"--- {k}\n{v}" for k, v in logs.items())) from None
            # Stopped: nobody can take part any more; beat does not stop it twice.
            assert httpx.post(f"{prolific}/local/studies/{study['id']}/start",
                              json={"participant_id": "PLATE"}).status_code == 400
            outstanding = cli(env, "hits", "outstanding")
            assert outstanding.returncode == 0, outstanding.stderr
            text = " ".join(outstanding.stdout.split())
            assert "Studies of lab (prolific): 1 ours" in text and study["id"] in text, outstanding.stdout
            assert "done (run 1: its run is being shut down)" in text or "done (run 1: its run is finished)" in text
        with transaction(rt.sessions) as session:
            [recorded] = session.scalars(select(ProviderSubmission)).all()
            assert recorded.assignment_id == unseen["submission_id"] and recorded.worker_name == "PNEVERSEEN"
            assert recorded.hit_id == study["id"] and recorded.task_run_id == 1
            assert recorded.status == "needs review" and recorded.provider_status == "AWAITING REVIEW"
    finally:
        rt.close()
    listed = cli(env, "hits", "unreceived", "--run", "1")
    assert unseen["submission_id"] in listed.stdout and "PNEVERSEEN" in listed.stdout, listed.stdout
    assert "on the provider that never reached us" in " ".join(listed.stdout.split())
    said = " ".join(cli(env, "status", "1").stdout.split())
    assert "1 submission(s) completed on prolific never reached us" in said, said
    for path in tmp_path.joinpath("data").rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
