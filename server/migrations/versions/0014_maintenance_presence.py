"""maintenance rules and operator presence: a machine's maintenance interval, the reason for a due-date override,
and the kiosk identification an agent's gate request must match

Revision ID: 0014_maintenance_presence
Revises: 0013_design_team
"""
import sqlalchemy as sa
from alembic import op


revision = '0014_maintenance_presence'
down_revision = '0013_design_team'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Two columns and the presence table."""
    with op.batch_alter_table('machines') as batch:
        batch.add_column(sa.Column('maintenance_interval_days', sa.Integer(), nullable=True))
    with op.batch_alter_table('maintenance_records') as batch:
        batch.add_column(sa.Column('due_override_reason', sa.Text(), nullable=True))
    op.create_table(
        'operator_presence',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('machine_id', sa.String(64), sa.ForeignKey('machines.id'), nullable=False),
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id'), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('via', sa.String(16), nullable=False))
    op.create_index('ix_operator_presence_job_user', 'operator_presence', ['job_id', 'user_id', 'at'])


def downgrade() -> None:
    """Drop them."""
    op.drop_index('ix_operator_presence_job_user', 'operator_presence')
    op.drop_table('operator_presence')
    with op.batch_alter_table('maintenance_records') as batch:
        batch.drop_column('due_override_reason')
    with op.batch_alter_table('machines') as batch:
        batch.drop_column('maintenance_interval_days')
