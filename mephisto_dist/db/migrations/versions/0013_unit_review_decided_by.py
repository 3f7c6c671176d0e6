"""who made a review decision: the command's user or the review app's reviewer

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('unit_review', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decided_by', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('unit_review', schema=None) as batch_op:
        batch_op.drop_column('decided_by')
