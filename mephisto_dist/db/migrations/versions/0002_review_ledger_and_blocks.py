"""provider-call ledger and worker blocks

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('worker', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_blocked', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('block_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('blocked_at', sa.DateTime(timezone=True), nullable=True))

    op.create_table('provider_call',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('provider_type', sa.String(length=64), nullable=False),
    sa.Column('worker_id', sa.Integer(), nullable=False),
    sa.Column('task_run_id', sa.Integer(), nullable=True),
    sa.Column('unit_id', sa.Integer(), nullable=True),
    sa.Column('unit_review_id', sa.Integer(), nullable=True),
    sa.Column('amount', sa.Float(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('receipt', sa.Text(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['task_run_id'], ['task_run.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], ),
    sa.ForeignKeyConstraint(['unit_review_id'], ['unit_review.id'], ),
    sa.ForeignKeyConstraint(['worker_id'], ['worker.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key')
    )
    with op.batch_alter_table('provider_call', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_call_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_provider_call_unit_id'), ['unit_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_provider_call_worker_id'), ['worker_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('provider_call', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_call_worker_id'))
        batch_op.drop_index(batch_op.f('ix_provider_call_unit_id'))
        batch_op.drop_index(batch_op.f('ix_provider_call_status'))

    op.drop_table('provider_call')
    with op.batch_alter_table('worker', schema=None) as batch_op:
        batch_op.drop_column('blocked_at')
        batch_op.drop_column('block_reason')
        batch_op.drop_column('is_blocked')
