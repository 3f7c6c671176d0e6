"""task runs imported from a Mephisto data directory: the key of the run they came from

Revision ID: 0016
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('task_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('imported_from', sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint('uq_task_run_imported_from', ['imported_from'])


def downgrade() -> None:
    with op.batch_alter_table('task_run', schema=None) as batch_op:
        batch_op.drop_constraint('uq_task_run_imported_from', type_='unique')
        batch_op.drop_column('imported_from')
