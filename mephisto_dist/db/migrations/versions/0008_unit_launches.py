"""unit launches: the launch that owns a unit's tokens, its attempts and its error

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.add_column(sa.Column('launch_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('launch_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('launch_retry_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('launch_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('launch_failed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_unit_launch_id'), ['launch_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unit_launch_id'))
        batch_op.drop_column('launch_failed_at')
        batch_op.drop_column('launch_error')
        batch_op.drop_column('launch_retry_at')
        batch_op.drop_column('launch_attempts')
        batch_op.drop_column('launch_id')
