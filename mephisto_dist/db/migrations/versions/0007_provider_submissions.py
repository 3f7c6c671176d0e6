"""assignments submitted at the provider that never reached us

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('provider_submission',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider_type', sa.String(length=64), nullable=False),
    sa.Column('requester_name', sa.String(length=255), nullable=False),
    sa.Column('hit_id', sa.String(length=255), nullable=False),
    sa.Column('assignment_id', sa.String(length=255), nullable=False),
    sa.Column('worker_name', sa.String(length=255), nullable=False),
    sa.Column('task_run_id', sa.Integer(), nullable=True),
    sa.Column('unit_id', sa.Integer(), nullable=True),
    sa.Column('answer', sa.Text(), nullable=True),
    sa.Column('provider_status', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('assignment_id')
    )
    op.create_index('ix_provider_submission_task_run_id', 'provider_submission', ['task_run_id'])


def downgrade() -> None:
    op.drop_table('provider_submission')
