-- the head schema (revision 0017) of a SQLite database, written by db.migrate.sqlite_schema_script
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
CREATE TABLE project (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);
CREATE TABLE qualification (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	created_at DATETIME NOT NULL, description TEXT, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);
CREATE TABLE requester (
	id INTEGER NOT NULL, 
	provider_type VARCHAR(64) NOT NULL, 
	requester_name VARCHAR(255) NOT NULL, 
	created_at DATETIME NOT NULL, aws_profile VARCHAR(255), endpoint_url TEXT, removed_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (provider_type, requester_name)
);
CREATE TABLE granted_qualification (
	id INTEGER NOT NULL, 
	qualification_id INTEGER NOT NULL, 
	worker_id INTEGER NOT NULL, 
	value INTEGER NOT NULL, 
	granted_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(qualification_id) REFERENCES qualification (id), 
	FOREIGN KEY(worker_id) REFERENCES worker (id), 
	UNIQUE (qualification_id, worker_id)
);
CREATE INDEX ix_granted_qualification_worker_id ON granted_qualification (worker_id);
CREATE TABLE task (
	id INTEGER NOT NULL, 
	task_name VARCHAR(255) NOT NULL, 
	task_type VARCHAR(64) NOT NULL, 
	project_id INTEGER, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(project_id) REFERENCES project (id), 
	UNIQUE (task_name)
);
CREATE TABLE assignment (
	id INTEGER NOT NULL, 
	task_run_id INTEGER NOT NULL, 
	data_index INTEGER NOT NULL, 
	data JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(task_run_id) REFERENCES task_run (id)
);
CREATE INDEX ix_assignment_task_run_id ON assignment (task_run_id);
CREATE TABLE onboarding_agent (
	id VARCHAR(64) NOT NULL, 
	task_run_id INTEGER NOT NULL, 
	worker_id INTEGER NOT NULL, 
	registration_id VARCHAR(255) NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	provider_data JSON NOT NULL, 
	outputs JSON, 
	created_at DATETIME NOT NULL, 
	status_changed_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(task_run_id) REFERENCES task_run (id), 
	FOREIGN KEY(worker_id) REFERENCES worker (id), 
	UNIQUE (task_run_id, registration_id)
);
CREATE INDEX ix_onboarding_agent_worker_id ON onboarding_agent (worker_id);
CREATE TABLE unit (
	id INTEGER NOT NULL, 
	assignment_id INTEGER NOT NULL, 
	task_run_id INTEGER NOT NULL, 
	unit_index INTEGER NOT NULL, 
	pay_amount FLOAT NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	agent_id VARCHAR(64), 
	worker_id INTEGER, 
	provider_unit_id VARCHAR(255), 
	created_at DATETIME NOT NULL, 
	status_changed_at DATETIME NOT NULL, 
	launched_at DATETIME, 
	assigned_at DATETIME, 
	completed_at DATETIME, launch_id VARCHAR(64), launch_attempts INTEGER DEFAULT '0' NOT NULL, launch_retry_at DATETIME, launch_error TEXT, launch_failed_at DATETIME, counted_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(assignment_id) REFERENCES assignment (id), 
	FOREIGN KEY(task_run_id) REFERENCES task_run (id), 
	FOREIGN KEY(worker_id) REFERENCES worker (id), 
	UNIQUE (assignment_id, unit_index)
);
CREATE INDEX ix_unit_run_status_id ON unit (task_run_id, status, id);
CREATE INDEX ix_unit_worker_id ON unit (worker_id);
CREATE TABLE agent (
	id VARCHAR(64) NOT NULL, 
	unit_id INTEGER NOT NULL, 
	assignment_id INTEGER NOT NULL, 
	task_run_id INTEGER NOT NULL, 
	worker_id INTEGER NOT NULL, 
	registration_id VARCHAR(255) NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	provider_data JSON NOT NULL, 
	init_data JSON NOT NULL, 
	outputs JSON, 
	task_metadata JSON, 
	created_at DATETIME NOT NULL, 
	status_changed_at DATETIME NOT NULL, 
	submitted_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(assignment_id) REFERENCES assignment (id), 
	FOREIGN KEY(task_run_id) REFERENCES task_run (id), 
	FOREIGN KEY(unit_id) REFERENCES unit (id), 
	FOREIGN KEY(worker_id) REFERENCES worker (id), 
	UNIQUE (assignment_id, worker_id), 
	UNIQUE (task_run_id, registration_id)
);
CREATE INDEX ix_agent_unit_id ON agent (unit_id);
CREATE INDEX ix_agent_worker_id ON agent (worker_id);
CREATE TABLE unit_review (
	id INTEGER NOT NULL, 
	unit_id INTEGER NOT NULL, 
	worker_id INTEGER NOT NULL, 
	task_run_id INTEGER NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	note TEXT, 
	bonus FLOAT, 
	bonus_paid_at DATETIME, 
	created_at DATETIME NOT NULL, decided_by VARCHAR(255), 
	PRIMARY KEY (id), 
	FOREIGN KEY(task_run_id) REFERENCES task_run (id), 
	FOREIGN KEY(unit_id) REFERENCES unit (id), 
	FOREIGN KEY(worker_id) REFERENCES worker (id)
);
CREATE INDEX ix_unit_review_unit_id ON unit_review (unit_id);
CREATE INDEX ix_unit_review_worker_id ON unit_review (worker_id);
CREATE TABLE "worker" (
	id INTEGER NOT NULL, 
	provider_type VARCHAR(64) NOT NULL, 
	worker_name VARCHAR(255) NOT NULL, 
	created_at DATETIME NOT NULL, 
	is_blocked BOOLEAN DEFAULT 0 NOT NULL, 
	block_reason TEXT, 
	blocked_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (provider_type, worker_name)
);
CREATE TABLE provider_call (
	id INTEGER NOT NULL, 
	idempotency_key VARCHAR(255) NOT NULL, 
	action VARCHAR(16) NOT NULL, 
	provider_type VARCHAR(64) NOT NULL, 
	worker_id INTEGER NOT NULL, 
	task_run_id INTEGER, 
	unit_id INTEGER, 
	unit_review_id INTEGER, 
	amount FLOAT, 
	reason TEXT, 
	payload JSON NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	receipt TEXT, 
	last_error TEXT, 
	created_at DATETIME NOT NULL, 
	claimed_at DATETIME, 
	done_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(task_run_id) REFERENCES task_run (id), 
	FOREIGN KEY(unit_id) REFERENCES unit (id), 
	FOREIGN KEY(unit_review_id) REFERENCES unit_review (id), 
	FOREIGN KEY(worker_id) REFERENCES worker (id), 
	UNIQUE (idempotency_key)
);
CREATE INDEX ix_provider_call_status ON provider_call (status);
CREATE INDEX ix_provider_call_unit_id ON provider_call (unit_id);
CREATE INDEX ix_provider_call_worker_id ON provider_call (worker_id);
CREATE TABLE remote_call (
	id INTEGER NOT NULL, 
	agent_id VARCHAR(64) NOT NULL, 
	task_run_id INTEGER NOT NULL, 
	request_id VARCHAR(64) NOT NULL, 
	target VARCHAR(255) NOT NULL, 
	args_json TEXT NOT NULL, 
	response_json TEXT, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	error TEXT, 
	created_at DATETIME NOT NULL, 
	claimed_at DATETIME, 
	answered_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(task_run_id) REFERENCES task_run (id), 
	UNIQUE (agent_id, request_id)
);
CREATE INDEX ix_remote_call_status ON remote_call (status);
CREATE INDEX ix_remote_call_task_run_id ON remote_call (task_run_id);
CREATE TABLE server (
	id INTEGER NOT NULL, 
	task_run_id INTEGER, 
	architect VARCHAR(32) NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	address TEXT, 
	pid INTEGER, 
	instance_id VARCHAR(64), 
	status VARCHAR(16) NOT NULL, 
	note TEXT, 
	created_at DATETIME NOT NULL, 
	status_changed_at DATETIME NOT NULL, 
	heartbeat_at DATETIME, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_server_task_run_id ON server (task_run_id);
CREATE INDEX ix_server_status ON server (status);
CREATE TABLE reconcile_record (
	id INTEGER NOT NULL, 
	reconciler VARCHAR(32) NOT NULL, 
	subject VARCHAR(255) NOT NULL, 
	task_run_id INTEGER, 
	found TEXT NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	error TEXT, 
	created_at DATETIME NOT NULL, 
	done_at DATETIME, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_reconcile_record_task_run_id ON reconcile_record (task_run_id);
CREATE INDEX ix_reconcile_record_created_at ON reconcile_record (created_at);
CREATE TABLE provider_submission (
	id INTEGER NOT NULL, 
	provider_type VARCHAR(64) NOT NULL, 
	requester_name VARCHAR(255) NOT NULL, 
	hit_id VARCHAR(255) NOT NULL, 
	assignment_id VARCHAR(255) NOT NULL, 
	worker_name VARCHAR(255) NOT NULL, 
	task_run_id INTEGER, 
	unit_id INTEGER, 
	answer TEXT, 
	provider_status VARCHAR(32) NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	submitted_at DATETIME, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (assignment_id)
);
CREATE INDEX ix_provider_submission_task_run_id ON provider_submission (task_run_id);
CREATE INDEX ix_unit_launch_id ON unit (launch_id);
CREATE TABLE outbox_message (
	id INTEGER NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	"key" VARCHAR(255) NOT NULL, 
	task_run_id INTEGER, 
	payload JSON NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	last_error TEXT, 
	created_at DATETIME NOT NULL, 
	claimed_at DATETIME, 
	done_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);
CREATE INDEX ix_outbox_message_status ON outbox_message (status);
CREATE INDEX ix_outbox_message_run_status ON outbox_message (task_run_id, status);
CREATE TABLE agent_message (
	id INTEGER NOT NULL, 
	task_run_id INTEGER NOT NULL, 
	agent_id VARCHAR(64) NOT NULL, 
	seq INTEGER NOT NULL, 
	direction VARCHAR(8) NOT NULL, 
	data JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (agent_id, seq)
);
CREATE TABLE "task_run" (
	id INTEGER NOT NULL, 
	task_id INTEGER NOT NULL, 
	requester_id INTEGER NOT NULL, 
	blueprint_type VARCHAR(64) NOT NULL, 
	architect_type VARCHAR(64) NOT NULL, 
	provider_type VARCHAR(64) NOT NULL, 
	sandbox BOOLEAN NOT NULL, 
	config JSON NOT NULL, 
	task_dir TEXT NOT NULL, 
	build_dir TEXT NOT NULL, 
	server_url TEXT, 
	max_concurrent_units INTEGER NOT NULL, 
	is_completed BOOLEAN NOT NULL, 
	shutdown_requested_at DATETIME, 
	shutdown_reason TEXT, 
	created_at DATETIME NOT NULL, 
	completed_at DATETIME, 
	bundle_key VARCHAR(128), 
	screening_units_made INTEGER DEFAULT '0' NOT NULL, 
	gold_units_made INTEGER DEFAULT '0' NOT NULL, 
	imported_from VARCHAR(255), 
	PRIMARY KEY (id), 
	CONSTRAINT uq_task_run_imported_from UNIQUE (imported_from), 
	FOREIGN KEY(task_id) REFERENCES task (id), 
	FOREIGN KEY(requester_id) REFERENCES requester (id)
);
CREATE INDEX ix_task_run_task_id ON task_run (task_id);
CREATE TABLE review_batch (
	id INTEGER NOT NULL, 
	task_run_id INTEGER, 
	decision VARCHAR(16) NOT NULL, 
	note TEXT, 
	bonus FLOAT, 
	decided_by VARCHAR(255), 
	unit_ids JSON NOT NULL, 
	total INTEGER NOT NULL, 
	position INTEGER NOT NULL, 
	decided INTEGER NOT NULL, 
	skipped INTEGER NOT NULL, 
	last_skip TEXT, 
	created_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_review_batch_task_run_id ON review_batch (task_run_id);
INSERT INTO alembic_version (version_num) VALUES ('0017');
