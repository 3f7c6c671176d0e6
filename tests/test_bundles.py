"""Run bundles: a run's built files and task-folder Python are stored once, by content hash, and every
other machine serves and imports them from its own cache; uploads go to the same store and export
fetches them. The "machines" here are processes with separate data directories that share only
PostgreSQL, Redis and S3 (moto's server, over HTTP); the task folder is gone before they start."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.models import Server, TaskRun
from mephisto_dist.errors import ConfigError, ServiceError
from mephisto_dist.runs.bundles import pack, store_bundle
from mephisto_dist.runs.preparation import create_run, enqueue_launch, prepare_run
from mephisto_dist.storage import open_storage
from mephisto_dist.storage.bundle_cache import BundleCache
from tests.conftest import wait_for
from tests.system import celery_worker, child_env, free_port, make_runtime, web_server
from tests.test_hooks import hooked_task_dir, launched, register

HOOKS = """
from helpers import ANSWER, INSTRUCTIONS

task_config = {"instructions": INSTRUCTIONS}


def validate_onboarding(data):
    return data.get("answer") == ANSWER


def on_unit_submitted(unit_data, outputs):
    with open(RECORD, "a") as out:
        out.write(json.dumps({"instructions": INSTRUCTIONS, "outputs": outputs}) + "\\n")
"""


def write_hooks(task_dir: Path, record: Path, instructions: str) -> None:
    (task_dir / "hooks.py").write_text(f"import json\nRECORD = {str(record)!r}\n" + HOOKS)
    (task_dir / "helpers.py").write_text(f"ANSWER = '4'\nINSTRUCTIONS = {instructions!r}\n")


def test_the_same_files_make_the_same_bundle_stored_once(tmp_path: Path) -> None:
    build = tmp_path / "build"
    (build / "img").mkdir(parents=True)
    (build / "task.html").write_text("<p>${x}</p>")
    (build / "img" / "a.png").write_bytes(b"\x89PNG")
    task = tmp_path / "task"
    (task / "pkg" / "__pycache__").mkdir(parents=True)
    (task / ".venv").mkdir()
    (task / "hooks.py").write_text("x = 1\n")
    (task / "pkg" / "mod.py").write_text("y = 2\n")
    (task / "pkg" / "__pycache__" / "mod.cpython-311.py").write_text("junk")
    (task / ".venv" / "site.py").write_text("junk")
    (task / "data.csv").write_text("a\n1\n")

    first = pack(build, task, tmp_path / "one.tar")
    (task / "hooks.py").touch()  # a newer mtime changes nothing
    assert pack(build, task, tmp_path / "two.tar") == first
    with tarfile.open(tmp_path / "one.tar") as tar:
        assert tar.getnames() == ["build/img/a.png", "build/task.html", "python/hooks.py", "python/pkg/mod.py"]

    storage = open_storage((tmp_path / "store").as_uri())
    assert store_bundle(storage, build, task) == first
    (task / "hooks.py").write_text("x = 2\n")
    second = store_bundle(storage, build, task)
    assert second != first and storage.exists(first) and storage.exists(second)

    cache = BundleCache(storage, tmp_path / "cache")
    local = cache.local(first)
    assert (local / "python" / "hooks.py").read_text() == "x = 1\n"
    assert (local / "build" / "img" / "a.png").read_bytes() == b"\x89PNG"
    assert cache.local(second) != local


def test_a_corrupt_bundle_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "store").as_uri())
    key = "bundles/" + "0" * 64 + ".tar"
    storage.put(key, io.BytesIO(b"not what was hashed"))
    cache = BundleCache(storage, tmp_path / "cache")
    with pytest.raises(ServiceError, match="corrupt"):
        cache.local(key)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_hooks_file_outside_the_task_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "hooks.py"
    outside.parent.mkdir()
    outside.write_text("x = 1\n")
    task_dir = hooked_task_dir(tmp_path, None, hooks_value=str(outside))
    with pytest.raises(ConfigError, match="must be inside the task folder"):
        prepare_run(task_dir, "example", [], check_port=False)


@pytest.mark.parametrize("folder", ["env", ".hidden", "sub/venv"])
def test_a_hooks_file_in_a_folder_the_bundle_leaves_out_is_refused(tmp_path: Path, folder: str) -> None:
    task_dir = hooked_task_dir(tmp_path, None, hooks_value=f"${{task_dir}}/{folder}/hooks.py")
    hooks = task_dir / folder / "hooks.py"
    hooks.parent.mkdir(parents=True)
    hooks.write_text("x = 1\n")
    with pytest.raises(ConfigError, match=f"is in a {folder.split('/')[-1]}/ folder, which a run's bundle leaves out"):
        prepare_run(task_dir, "example", [], check_port=False)


@pytest.mark.system
def test_machines_share_runs_through_storage_only(tmp_path: Path, pg_url: str, redis_url: str,
                                                  s3_storage_url: str) -> None:
    record = tmp_path / "submitted.jsonl"
    task_dir = hooked_task_dir(tmp_path, "", onboarding=True, rows=2)
    write_hooks(task_dir, record, "first version")
    (task_dir / "server_files" / "task.html").write_text("<p>v1 ${sentence}</p>")
    creator = make_runtime(tmp_path / "machine-a", pg_url, redis_url, STORAGE_URL=s3_storage_url)
    server = make_runtime(tmp_path / "machine-b", pg_url, redis_url, STORAGE_URL=s3_storage_url)
    try:
        first = create_run(creator, prepare_run(task_dir, "example", [], check_port=False))
        # The folder changes after the first run was created: that belongs to the next run only.
        write_hooks(task_dir, record, "second version")
        (task_dir / "server_files" / "task.html").write_text("<p>v2 ${sentence}</p>")
        second = create_run(creator, prepare_run(task_dir, "example", ["mephisto.task.task_name=next"],
                                                 check_port=False))
        shutil.rmtree(task_dir)  # no other machine has the folder; neither does this one any more
        assert not (tmp_path / "machine-a" / "bundle-cache").exists()

        with celery_worker(server.settings, tmp_path / "worker.log"), \
                web_server(server.settings, first, tmp_path / "web1.log") as url, \
                web_server(server.settings, second, tmp_path / "web2.log") as url2:
            enqueue_launch(creator, first)
            wait_for(lambda: launched(server, first) == 2, timeout_s=20, message="the first run to launch")
            assert httpx.get(url + "/task_config.json").json()["instructions"] == "first version"
            assert httpx.get(url2 + "/task_config.json").json()["instructions"] == "second version"
            assert httpx.get(url + "/task.html").text == "<p>v1 ${sentence}</p>"
            assert httpx.get(url2 + "/task.html").text == "<p>v2 ${sentence}</p>"

            agent = _onboard(url, "alice")
            upload = b"evidence bytes \x00\x01" * 1000
            response = httpx.post(url + "/submit_task", data={
                "USED_AGENT_ID": agent, "final_string_data": json.dumps({"rating": "5"})},
                files={"evidence": ("notes.txt", upload, "text/plain")})
            assert response.status_code == 200, response.text
            lines = wait_for(lambda: record.exists() and record.read_text().splitlines(), timeout_s=20,
                             message="on_unit_submitted to run from the bundle on the worker")
            assert json.loads(lines[0])["instructions"] == "first version"
        with transaction(server.sessions) as session:
            bundle_key = session.get(TaskRun, first).bundle_key  # type: ignore[union-attr]
        assert bundle_key is not None
        assert (tmp_path / "machine-b" / "bundle-cache" / bundle_key[len("bundles/"):-len(".tar")]).is_dir()

        export = _cli(tmp_path / "machine-c", server, "export", "--run", str(first),
                      "--download", str(tmp_path / "downloads"))
        assert export.returncode == 0, export.stderr
        records = [json.loads(line) for line in export.stdout.splitlines()]
        # alice's onboarding attempt is a record of its own after the unit's (its answers, no unit)
        (record_out,) = [record for record in records if record["unit_id"] is not None]
        assert [record["onboarding"] for record in records if record["unit_id"] is None] == ["passed"]
        evidence = record_out["data"]["outputs"]["evidence"]
        assert evidence["path"].startswith(s3_storage_url + "/uploads/")
        downloaded = tmp_path / "downloads" / Path(*evidence["storage_key"].split("/"))
        assert downloaded.read_bytes() == upload
        assert "downloaded 1 of 1 uploaded file(s)" in export.stderr
    finally:
        creator.close()
        server.close()


def _onboard(url: str, worker: str) -> str:
    first = register(url, worker)
    answer = httpx.post(url + "/submit_onboarding", json={"USED_AGENT_ID": first["agent_id"],
                                                          "onboarding_data": {"answer": "4"}})
    agent: Any = answer.json()["data"]["agent_id"]
    assert agent and not agent.startswith("onboarding_"), answer.text
    return str(agent)


def _cli(data_dir: Path, like: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = child_env(like.settings)
    env["MEPHISTO_DIST_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], env=env, check=False,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.system
def test_a_web_process_whose_storage_lacks_the_runs_bundle_refuses_to_serve(tmp_path: Path, pg_url: str,
                                                                            redis_url: str) -> None:
    """A machine configured with another store than the one the run was created with: the web process
    says so in one line and stops, its record closed with that reason, instead of serving 404s."""
    task_dir = hooked_task_dir(tmp_path, "", rows=1)
    creator = make_runtime(tmp_path / "machine-a", pg_url, redis_url,
                           STORAGE_URL=(tmp_path / "store-a").as_uri())
    other = make_runtime(tmp_path / "machine-b", pg_url, redis_url, STORAGE_URL=(tmp_path / "store-b").as_uri())
    try:
        run_id = create_run(creator, prepare_run(task_dir, "example", [], check_port=False))
        port = free_port()
        served = _cli(tmp_path / "machine-b", other, "web", "--run", str(run_id), "--port", str(port))
        assert served.returncode == 3, served.stdout + served.stderr  # storage lacks what the run needs
        (line,) = [text for text in served.stderr.splitlines() if "error" in text.lower()]
        assert "is not in this machine's storage" in line and str(tmp_path / "store-b") in line
        assert "MEPHISTO_DIST_STORAGE_URL" in line
        with transaction(other.sessions) as session:
            reasons = session.scalars(select(Server.note).where(Server.task_run_id == run_id)).all()
        assert len(reasons) == 1 and "is not in this machine's storage" in str(reasons[0])
    finally:
        creator.close()
        other.close()
