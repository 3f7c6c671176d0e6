"""worker-facing servers and reconcile records

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('server',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_run_id', sa.Integer(), nullable=True),
    sa.Column('architect', sa.String(length=32), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('address', sa.Text(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('instance_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_server_task_run_id', 'server', ['task_run_id'])
    op.create_index('ix_server_status', 'server', ['status'])
    op.create_table('reconcile_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reconciler', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('task_run_id', sa.Integer(), nullable=True),
    sa.Column('found', sa.Text(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_reconcile_record_task_run_id', 'reconcile_record', ['task_run_id'])
    op.create_index('ix_reconcile_record_created_at', 'reconcile_record', ['created_at'])


def downgrade() -> None:
    op.drop_table('reconcile_record')
    op.drop_table('server')
