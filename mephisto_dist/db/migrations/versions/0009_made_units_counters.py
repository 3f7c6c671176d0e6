"""units a run made for single workers: screening and gold units counted on the run's row

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('task_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('screening_units_made', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('gold_units_made', sa.Integer(), server_default='0', nullable=False))
    # A run already going counts what it made so far.
    for column, index in (('screening_units_made', -1), ('gold_units_made', -2)):
        op.execute(f"UPDATE task_run SET {column} = (SELECT count(*) FROM unit WHERE unit.task_run_id = task_run.id "
                   f"AND unit.unit_index = {index})")


def downgrade() -> None:
    with op.batch_alter_table('task_run', schema=None) as batch_op:
        batch_op.drop_column('gold_units_made')
        batch_op.drop_column('screening_units_made')
