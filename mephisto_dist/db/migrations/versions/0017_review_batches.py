"""review batches (a bulk decision worked by Celery, with its progress) and qualification descriptions

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'review_batch',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('task_run_id', sa.Integer(), nullable=True),
        sa.Column('decision', sa.String(length=16), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('bonus', sa.Float(), nullable=True),
        sa.Column('decided_by', sa.String(length=255), nullable=True),
        sa.Column('unit_ids', sa.JSON(), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('decided', sa.Integer(), nullable=False),
        sa.Column('skipped', sa.Integer(), nullable=False),
        sa.Column('last_skip', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_review_batch_task_run_id', 'review_batch', ['task_run_id'])
    with op.batch_alter_table('qualification', schema=None) as batch_op:
        batch_op.add_column(sa.Column('description', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('qualification', schema=None) as batch_op:
        batch_op.drop_column('description')
    op.drop_index('ix_review_batch_task_run_id', table_name='review_batch')
    op.drop_table('review_batch')
