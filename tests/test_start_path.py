"""What the path to the first unit must not load (issue 23): each import below once sat on it, a fresh
interpreter's own, and cost the first worker a fraction of a second. A module loaded by the code under
test makes its assertion fail; each case runs in a new interpreter, since this one has loaded them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system


def _loaded_after(code: str, *modules: str) -> list[str]:
    probe = (f"import sys\n{code}\n"
             f"print(','.join(m for m in {list(modules)!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return [name for name in done.stdout.strip().split(",") if name]


def test_listing_the_architects_loads_no_aws_client() -> None:
    # The web server resolves its run by listing the architects that a deployment serves; boto3 (0.2 s)
    # loads only when the ec2 architect calls EC2.
    code = ("from mephisto_dist.architects import architect_types\n"
            "assert 'ec2' in architect_types()\n"
            "assert 'local' in architect_types(lambda cls: cls.served_by_deployment)")
    assert _loaded_after(code, "boto3", "botocore") == []


def test_a_queue_loads_celery_only_to_send() -> None:
    # A claim with nothing to send still reads Runtime.queue; Celery (half a second) loads at the first send.
    code = ("from mephisto_dist.queue import CeleryQueue\n"
            "queue = CeleryQueue('redis://127.0.0.1:1/0', 0.1)\n"
            "queue.close()")
    assert _loaded_after(code, "celery", "kombu") == []
    sent = ("from mephisto_dist.errors import ServiceError\n"
            "from mephisto_dist.queue import CeleryQueue\n"
            "queue = CeleryQueue('redis://127.0.0.1:1/0', 0.1)\n"
            "try:\n    queue.enqueue('mephisto_dist.nothing', 1)\nexcept ServiceError:\n    pass\n"
            "queue.close()")
    assert _loaded_after(sent, "celery") == ["celery"]


def test_the_run_command_loads_no_http_client_before_serving() -> None:
    assert _loaded_after("import mephisto_dist.cli.run", "urllib.request", "boto3", "celery", "alembic") == []


def test_a_first_run_creates_its_sqlite_schema_without_alembic(tmp_path: Path) -> None:
    # An embedded run's first use of its data directory: Alembic's imports and its 17 migrations' table
    # rebuilds took a fifth of a second; the schema they make is loaded from db/sqlite_schema.sql.
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    code = ("from mephisto_dist.db.engine import make_engine\n"
            "from mephisto_dist.db.migrate import HEAD_REVISION, Upgrade, upgrade\n"
            f"assert upgrade(make_engine({url!r})) == Upgrade(None, HEAD_REVISION)")
    assert _loaded_after(code, "alembic") == []


def test_the_web_server_forked_by_run_loads_no_yaml_reader() -> None:
    # `run` forks its web server once its own modules are loaded; OmegaConf and YAML (a twentieth of a
    # second) read the task folder after the fork, in the CLI alone: the server never reads one.
    code = ("import mephisto_dist.cli.run\n"
            "from mephisto_dist.web.standby import before_fork, preload\n"
            "before_fork()\n"
            "preload()")
    assert _loaded_after(code, "omegaconf", "yaml") == []
