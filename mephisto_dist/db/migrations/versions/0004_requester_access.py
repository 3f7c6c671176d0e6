"""how a requester's account is reached: AWS profile name and endpoint (never a key)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('requester', schema=None) as batch_op:
        batch_op.add_column(sa.Column('aws_profile', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('endpoint_url', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('requester', schema=None) as batch_op:
        batch_op.drop_column('endpoint_url')
        batch_op.drop_column('aws_profile')
