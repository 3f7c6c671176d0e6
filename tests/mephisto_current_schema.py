"""A small Mephisto data directory in Mephisto's current schema, built by hand for the importer's tests.

Mephisto releases after 1.1.1 are not on PyPI, so this is not Mephisto's output: the DDL below is its
current schema as its repository defines it (``mephisto/abstractions/databases/local_database_tables.py``
plus its migrations ``20240418_data_porter_feature``, which drops AUTOINCREMENT for random integer ids and
adds ``granted_qualifications.update_date``, and ``20241002_add_qualification_description`` with the
``worker_review`` table), recorded in its ``migrations`` table. The rows are one run of a static task with
an onboarding step: two workers, three units (accepted with a review note, completed, and one Mephisto
left assigned), the folders Mephisto writes for them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

DDL = """
CREATE TABLE projects (project_id INTEGER PRIMARY KEY, project_name TEXT NOT NULL UNIQUE,
    creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE TABLE tasks (task_id INTEGER PRIMARY KEY, task_name TEXT NOT NULL UNIQUE, task_type TEXT NOT NULL,
    project_id INTEGER, parent_task_id INTEGER,
    creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE TABLE requesters (requester_id INTEGER PRIMARY KEY, requester_name TEXT NOT NULL UNIQUE,
    provider_type TEXT NOT NULL, creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE TABLE task_runs (task_run_id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL, requester_id INTEGER NOT NULL,
    init_params TEXT NOT NULL, is_completed BOOLEAN NOT NULL, provider_type TEXT NOT NULL,
    task_type TEXT NOT NULL, sandbox BOOLEAN NOT NULL,
    creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE TABLE assignments (assignment_id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL,
    task_run_id INTEGER NOT NULL, requester_id INTEGER NOT NULL, task_type TEXT NOT NULL,
    provider_type TEXT NOT NULL, sandbox BOOLEAN NOT NULL,
    creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE TABLE units (unit_id INTEGER PRIMARY KEY, assignment_id INTEGER NOT NULL, unit_index INTEGER NOT NULL,
    pay_amount FLOAT NOT NULL, provider_type TEXT NOT NULL, status TEXT NOT NULL, agent_id INTEGER,
    worker_id INTEGER, task_type TEXT NOT NULL, task_id INTEGER NOT NULL, task_run_id INTEGER NOT NULL,
    sandbox BOOLEAN NOT NULL, requester_id INTEGER NOT NULL,
    creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')), UNIQUE (assignment_id, unit_index));
CREATE TABLE workers (worker_id INTEGER PRIMARY KEY, worker_name TEXT NOT NULL UNIQUE,
    provider_type TEXT NOT NULL, creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE TABLE agents (agent_id INTEGER PRIMARY KEY, worker_id INTEGER NOT NULL, unit_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL, task_run_id INTEGER NOT NULL, assignment_id INTEGER NOT NULL,
    task_type TEXT NOT NULL, provider_type TEXT NOT NULL, status TEXT NOT NULL,
    creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE TABLE onboarding_agents (onboarding_agent_id INTEGER PRIMARY KEY, worker_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL, task_run_id INTEGER NOT NULL, task_type TEXT NOT NULL, status TEXT NOT NULL,
    creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE TABLE qualifications (qualification_id INTEGER PRIMARY KEY, qualification_name TEXT NOT NULL UNIQUE,
    creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')), description CHAR(500));
CREATE TABLE granted_qualifications (granted_qualification_id INTEGER PRIMARY KEY, worker_id INTEGER NOT NULL,
    qualification_id INTEGER NOT NULL, value INTEGER NOT NULL,
    update_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')),
    creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')), UNIQUE (worker_id, qualification_id));
CREATE TABLE worker_review (id INTEGER PRIMARY KEY, unit_id INTEGER, worker_id INTEGER NOT NULL, task_id INTEGER,
    status TEXT, review_note TEXT, bonus INTEGER, blocked_worker BOOLEAN DEFAULT false,
    updated_qualification_id INTEGER, updated_qualification_value INTEGER, revoked_qualification_id INTEGER,
    creation_date DATETIME DEFAULT(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')));
CREATE TABLE imported_data (id INTEGER PRIMARY KEY, source_file_name TEXT NOT NULL, data_labels TEXT NOT NULL,
    table_name TEXT NOT NULL, unique_field_names TEXT NOT NULL, unique_field_values TEXT NOT NULL,
    creation_date DATETIME DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, status TEXT NOT NULL,
    error_message TEXT NULL, creation_date DATETIME DEFAULT CURRENT_TIMESTAMP);
"""

# Mephisto's current ids are random integers (``make_randomized_int_id``).
TASK, REQUESTER, RUN, PROJECT = 1048576001, 1048576002, 1048576003, 1048576004
ASSIGNMENTS = (1048576101, 1048576102)
UNITS = (1048576201, 1048576202, 1048576203)
AGENTS = (1048576301, 1048576302, 1048576303)
WORKERS = (1048576401, 1048576402)
QUALIFICATION, ONBOARDING_AGENT = 1048576501, 1048576601
INIT_PARAMS = json.dumps("blueprint:\n  _blueprint_type: static_task\narchitect:\n  _architect_type: local\n"
                         "provider:\n  _provider_type: mock\ntask:\n  task_name: current-task\n")


def make_current_data_dir(root: Path) -> Path:
    """Write the data directory under ``root``; return it."""
    root.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(root / "database.db")
    with connection:
        connection.executescript(DDL)
        connection.executemany("INSERT INTO migrations (name, status) VALUES (?, 'completed')",
                               [("20240418_data_porter_feature",), ("20241002_add_qualification_description",)])
        connection.execute("INSERT INTO projects VALUES (?, 'lab-project', '2025-03-01 10:00:00.000')", (PROJECT,))
        connection.execute("INSERT INTO tasks VALUES (?, 'current-task', 'static_task', ?, NULL, "
                           "'2025-03-01 10:00:00.000')", (TASK, PROJECT))
        connection.execute("INSERT INTO requesters VALUES (?, 'MOCK_REQUESTER', 'mock', '2025-03-01 10:00:00.000')",
                           (REQUESTER,))
        connection.execute("INSERT INTO task_runs VALUES (?, ?, ?, ?, 1, 'mock', 'static_task', 1, "
                           "'2025-03-01 10:00:01.250')", (RUN, TASK, REQUESTER, INIT_PARAMS))
        for assignment in ASSIGNMENTS:
            connection.execute("INSERT INTO assignments VALUES (?, ?, ?, ?, 'static_task', 'mock', 1, "
                               "'2025-03-01 10:00:02.000')", (assignment, TASK, RUN, REQUESTER))
        connection.executemany("INSERT INTO workers VALUES (?, ?, 'mock', '2025-03-01 10:01:00.000')",
                               [(WORKERS[0], "dana_sandbox"), (WORKERS[1], "eli_sandbox")])
        units = [(UNITS[0], ASSIGNMENTS[0], 0, "accepted", AGENTS[0], WORKERS[0]),
                 (UNITS[1], ASSIGNMENTS[0], 1, "completed", AGENTS[1], WORKERS[1]),
                 (UNITS[2], ASSIGNMENTS[1], 0, "assigned", AGENTS[2], WORKERS[0])]
        for unit_id, assignment, index, status, agent, worker in units:
            connection.execute("INSERT INTO units VALUES (?, ?, ?, 0.25, 'mock', ?, ?, ?, 'static_task', ?, ?, 1, ?, "
                               "'2025-03-01 10:00:03.000')",
                               (unit_id, assignment, index, status, agent, worker, TASK, RUN, REQUESTER))
            agent_status = {"accepted": "approved", "assigned": "in task"}.get(status, status)
            connection.execute("INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?, 'static_task', 'mock', ?, "
                               "'2025-03-01 10:02:00.000')", (agent, worker, unit_id, TASK, RUN, assignment, agent_status))
        connection.execute("INSERT INTO onboarding_agents VALUES (?, ?, ?, ?, 'static_task', 'approved', "
                           "'2025-03-01 10:01:30.000')", (ONBOARDING_AGENT, WORKERS[0], TASK, RUN))
        connection.execute("INSERT INTO qualifications VALUES (?, 'current-task-onboarded', "
                           "'2025-03-01 10:01:40.000', 'passed the onboarding')", (QUALIFICATION,))
        connection.execute("INSERT INTO granted_qualifications VALUES (1048576701, ?, ?, 1, '2025-03-02 09:00:00.000', "
                           "'2025-03-01 10:01:40.000')", (WORKERS[0], QUALIFICATION))
        connection.execute("INSERT INTO worker_review (unit_id, worker_id, task_id, status, review_note, bonus) "
                           "VALUES (?, ?, ?, 'accepted', 'clear and careful', NULL)", (UNITS[0], WORKERS[0], TASK))
    connection.close()
    run_dir = root / "data" / "runs" / "lab-project" / str(RUN)
    rows = {ASSIGNMENTS[0]: {"text": "first"}, ASSIGNMENTS[1]: {"text": "second"}}
    for assignment, row in rows.items():
        (run_dir / str(assignment)).mkdir(parents=True)
        (run_dir / str(assignment) / "assign_data.json").write_text(json.dumps({"shared": row, "unit_data": [{}, {}]}))
    for agent, assignment, outputs in ((AGENTS[0], ASSIGNMENTS[0], {"label": "yes"}),
                                       (AGENTS[1], ASSIGNMENTS[0], {"label": "no"})):
        folder = run_dir / str(assignment) / str(agent)
        folder.mkdir()
        (folder / "agent_data.json").write_text(json.dumps({"inputs": rows[assignment], "outputs": outputs}))
        (folder / "agent_meta.json").write_text(json.dumps({
            "task_start": 1740823320.0, "task_end": 1740823380.5,
            "tips": [{"header": "Tip", "text": "read twice", "id": "t1", "accepted": False}], "feedback": None}))
    onboarding = run_dir / "onboarding" / f"onboarding_{ONBOARDING_AGENT}"
    onboarding.mkdir(parents=True)
    (onboarding / "agent_data.json").write_text(json.dumps({"inputs": {}, "outputs": {"answer": "4"}}))
    return root
