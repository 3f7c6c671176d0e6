"""remote procedure calls of live tasks

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('remote_call',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('task_run_id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('args_json', sa.Text(), nullable=False),
    sa.Column('response_json', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['task_run_id'], ['task_run.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('agent_id', 'request_id')
    )
    with op.batch_alter_table('remote_call', schema=None) as batch_op:
        batch_op.create_index('ix_remote_call_status', ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_remote_call_task_run_id'), ['task_run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('remote_call', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_remote_call_task_run_id'))
        batch_op.drop_index('ix_remote_call_status')
    op.drop_table('remote_call')
