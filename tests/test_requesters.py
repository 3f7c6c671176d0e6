"""``register`` and ``requesters``: keys kept in the AWS shared credentials file only, reachability
asked of a real mturk-local process, one-line refusals of bad input, registering again (the endpoint kept
unless given, every change said), and ``requesters remove``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from mephisto_dist.db.engine import transaction
from mephisto_dist.db.migrate import upgrade
from mephisto_dist.db.models import TaskRun
from mephisto_dist.runtime import Runtime
from mephisto_dist.settings import load_settings
from tests.factories import make_run
from tests.mturk_local_process import mturk_local
from tests.prolific_local_process import prolific_local

KEY_ID = "AKIDREGISTERTEST0001"
SECRET = "s3cr3t-never-to-be-seen-anywhere-0123456789"


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEPHISTO_DIST_", "AWS_", "PROLIFIC_"))}
    env.update({"MEPHISTO_DIST_DATA_DIR": str(home / "data"), "COLUMNS": "250",
                "PROLIFIC_CREDENTIALS_FILE": str(home / "prolific" / "credentials"),
                "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws" / "credentials"),
                "AWS_CONFIG_FILE": str(home / "aws" / "config")})
    return subprocess.run([sys.executable, "-m", "mephisto_dist.cli.app", *args], env=env, check=False,
                          capture_output=True, text=True, timeout=120)


def secret_nowhere(home: Path, *outputs: subprocess.CompletedProcess[str]) -> None:
    """The secret is in the credentials file and nowhere else: not in any output, nor any file we wrote."""
    for result in outputs:
        assert SECRET not in result.stdout + result.stderr
    for path in (home / "data").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.system
def test_register_keeps_keys_in_a_profile_and_requesters_reaches_the_api(tmp_path: Path) -> None:
    with mturk_local(tmp_path / "turk.sqlite3", tmp_path / "turk.log") as url:
        made = cli(tmp_path, "register", "mturk_sandbox", "name=lab", f"access_key_id={KEY_ID}",
                   f"secret_access_key={SECRET}", f"endpoint_url={url}")
        assert made.returncode == 0, made.stderr
        assert "profile 'lab'" in made.stdout and url in made.stdout
        credentials = tmp_path / "aws" / "credentials"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert f"aws_secret_access_key = {SECRET}" in credentials.read_text()
        cli(tmp_path, "register", "mturk_sandbox", "name=gone", "endpoint_url=http://127.0.0.1:9")
        listed = cli(tmp_path, "requesters")
        assert listed.returncode == 0, listed.stderr
        lab = next(line for line in listed.stdout.splitlines() if "lab" in line)
        assert "yes, balance $10000.00" in lab and "profile 'lab'" in lab
        gone = next(line for line in listed.stdout.splitlines() if "gone" in line)
        assert "no:" in gone and "AWS environment" in gone
        # Registering again without keys keeps using the profile already saved.
        again = cli(tmp_path, "register", "mturk_sandbox", "name=lab", f"endpoint_url={url}")
        assert "profile 'lab'" in again.stdout
        secret_nowhere(tmp_path, made, listed, again)


@pytest.mark.system
def test_a_prolific_requester_keeps_its_token_as_mephisto_does_and_reaches_prolific_local(tmp_path: Path) -> None:
    with prolific_local(tmp_path / "prolific.sqlite3", tmp_path / "prolific.log") as url:
        made = cli(tmp_path, "register", "prolific", "name=lab", f"api_key={SECRET}", f"endpoint_url={url}")
        assert made.returncode == 0, made.stderr
        assert "registered prolific requester 'lab' (credentials: key 'lab' in " in made.stdout and url in made.stdout
        keys = tmp_path / "prolific" / "credentials"
        assert stat.S_IMODE(keys.stat().st_mode) == 0o600
        assert json.loads(keys.read_text()) == {"lab": SECRET}  # Mephisto's own format: name to token
        listed = cli(tmp_path, "requesters")
        assert listed.returncode == 0, listed.stderr
        lab = next(line for line in listed.stdout.splitlines() if "lab" in line)
        assert "yes, account researcher@prolific-local.invalid" in lab and url in lab
        removed = cli(tmp_path, "requesters", "remove", "lab", "--forget-keys")
        assert removed.returncode == 0, removed.stderr
        assert json.loads(keys.read_text()) == {}
        secret_nowhere(tmp_path, made, listed, removed)


@pytest.mark.parametrize(("args", "needle"), [
    (["mturk"], "name=NAME"),
    (["mturk", "name=x", f"access_key_id={KEY_ID}"], "both access_key_id and secret_access_key"),
    (["mturk", "name=x", "colour=red"], "unknown key 'colour'"),
    (["mturk", "name=x", "endpoint_url=ftp://x"], "endpoint_url 'ftp://x'"),
    (["prolific", "name=x"], "api_key="),
    (["prolific", "name=x", f"access_key_id={KEY_ID}"], "prolific takes no access_key_id; its keys: api_key"),
    (["upwork", "name=x"], "cannot register a requester for 'upwork'"),
    (["mturk", "name=x", f"secret_access_key{SECRET}"], "is not key=value"),
])
@pytest.mark.system
def test_bad_registrations_are_refused_in_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    result = cli(tmp_path, "register", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert SECRET not in result.stderr


LOCAL = "http://127.0.0.1:5999"
SANDBOX = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"


@pytest.mark.system
def test_registering_again_keeps_the_endpoint_and_says_every_change(tmp_path: Path) -> None:
    made = cli(tmp_path, "register", "mturk_sandbox", "name=lab", f"access_key_id={KEY_ID}",
               f"secret_access_key={SECRET}", f"endpoint_url={LOCAL}")
    assert made.returncode == 0, made.stderr
    # Without endpoint_url= the rehearsal endpoint is kept, and said; nothing moves to the real sandbox.
    again = cli(tmp_path, "register", "mturk_sandbox", "name=lab")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"requester 'lab': keeping endpoint {LOCAL} (endpoint_url= with no URL: the provider's own)",
        f"registered mturk_sandbox requester 'lab' (credentials: profile 'lab', endpoint {LOCAL})"]
    # endpoint_url= with no URL moves it to the real sandbox, out loud.
    moved = cli(tmp_path, "register", "mturk_sandbox", "name=lab", "endpoint_url=")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines() == [
        f"requester 'lab': endpoint changed from {LOCAL} to {SANDBOX} (the provider's own)",
        "registered mturk_sandbox requester 'lab' (credentials: profile 'lab')"]
    back = cli(tmp_path, "register", "mturk_sandbox", "name=lab", f"endpoint_url={LOCAL}/")
    assert f"requester 'lab': endpoint changed from {SANDBOX} (the provider's own) to {LOCAL}" in back.stdout
    # A name is one account: the same name for the real marketplace is refused, in one line.
    other = cli(tmp_path, "register", "mturk", "name=lab")
    assert other.returncode == 2 and other.stderr.strip().splitlines() == [
        ("error: requester 'lab' is registered for mturk_sandbox; a name is one account: choose another name, "
        "or remove it first (mephisto-dist requesters remove lab)")], other.stderr
    listed = cli(tmp_path, "requesters", "--no-check")
    lab = next(line for line in listed.stdout.splitlines() if "lab" in line)
    assert "mturk_sandbox" in lab and LOCAL in lab and "not checked" in lab
    secret_nowhere(tmp_path, made, again, moved, back, other, listed)


def _database(home: Path) -> Runtime:
    runtime = Runtime(load_settings({"MEPHISTO_DIST_DATA_DIR": str(home / "data")}))
    upgrade(runtime.engine)
    return runtime


def _open_mock_run(home: Path) -> int:
    """An open run of the mock requester 'mock_requester' in the database the CLI uses under ``home``."""
    runtime = _database(home)
    try:
        return make_run(runtime.sessions, assignments=1, launch=False).run_id
    finally:
        runtime.close()


def _end_runs(home: Path) -> None:
    runtime = _database(home)
    try:
        with transaction(runtime.sessions) as session:
            session.execute(update(TaskRun).values(is_completed=True))
    finally:
        runtime.close()


@pytest.mark.system
def test_requesters_remove_refuses_open_runs_keeps_ended_ones_whole_and_says_where_the_keys_are(
        tmp_path: Path) -> None:
    open_run = _open_mock_run(tmp_path)
    refused = cli(tmp_path, "requesters", "remove", "mock_requester")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        (f"error: requester 'mock_requester' (mock) is used by open task run(s) {open_run}; shut them down "
        "first (mephisto-dist shutdown RUN_ID)")], refused.stderr
    assert "mock_requester" in cli(tmp_path, "requesters", "--no-check").stdout

    _end_runs(tmp_path)
    removed = cli(tmp_path, "requesters", "remove", "mock_requester")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == ("removed mock requester 'mock_requester' (kept, hidden, for its 1 ended "
                                      "run(s): their export and review still work)")
    assert "mock_requester" not in cli(tmp_path, "requesters", "--no-check").stdout
    shown = cli(tmp_path, "status", str(open_run))
    assert shown.returncode == 0, shown.stderr

    # A requester no run names is deleted; its keys stay where they are unless --forget-keys.
    cli(tmp_path, "register", "mturk_sandbox", "name=lab", f"access_key_id={KEY_ID}",
        f"secret_access_key={SECRET}", f"endpoint_url={LOCAL}")
    credentials = tmp_path / "aws" / "credentials"
    gone = cli(tmp_path, "requesters", "remove", "lab")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.strip() == "removed mturk_sandbox requester 'lab'"
    assert gone.stderr.strip().splitlines() == [
        f"its keys remain in profile 'lab' of {credentials} (--forget-keys deletes them)",
        ("warning: beat no longer expires or deletes HITs left on the account of requester 'lab'; register it "
        "again to list and clean them (mephisto-dist hits outstanding --requester lab)")], gone.stderr
    assert SECRET in credentials.read_text()
    assert "lab" not in cli(tmp_path, "requesters", "--no-check").stdout
    again = cli(tmp_path, "register", "mturk_sandbox", "name=lab", f"endpoint_url={LOCAL}")
    assert again.returncode == 0 and "profile 'lab'" in again.stdout, again.stderr
    forgotten = cli(tmp_path, "requesters", "remove", "lab", "--forget-keys")
    assert f"deleted profile 'lab' (its keys) from {credentials}" in forgotten.stderr, forgotten.stderr
    assert SECRET not in credentials.read_text()

    unknown = cli(tmp_path, "requesters", "remove", "nobody")
    assert unknown.returncode == 4 and unknown.stderr.strip().splitlines() == [
        "error: no requester named 'nobody' is registered (see mephisto-dist requesters)"], unknown.stderr
    secret_nowhere(tmp_path, gone, again, forgotten, unknown)
