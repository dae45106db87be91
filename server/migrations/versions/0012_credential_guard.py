"""credential guard: timed lockout, token versions, passwords an administrator set must be changed

Revision ID: 0012_credential_guard
Revises: 0011_notification_push
"""
import sqlalchemy as sa
from alembic import op


revision = '0012_credential_guard'
down_revision = '0011_notification_push'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Three columns on users."""
    with op.batch_alter_table('users') as t:
        t.add_column(sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True))
        t.add_column(sa.Column('token_version', sa.Integer(), nullable=False, server_default='0'))
        t.add_column(sa.Column('must_change_password', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table('users') as t:
        for column in ('must_change_password', 'token_version', 'locked_until'):
            t.drop_column(column)
