"""notification push: each notice's delivery to the outbound webhook (pushed, attempts, next try, last error)

Revision ID: 0011_notification_push
Revises: 0010_delivery
"""
import sqlalchemy as sa
from alembic import op


revision = '0011_notification_push'
down_revision = '0010_delivery'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The notifications table is the webhook's durable queue: a row is pushed until the receiver took it."""
    with op.batch_alter_table('notifications') as t:
        t.add_column(sa.Column('pushed_at', sa.DateTime(timezone=True), nullable=True))
        t.add_column(sa.Column('push_attempts', sa.Integer(), nullable=False, server_default='0'))
        t.add_column(sa.Column('push_after', sa.DateTime(timezone=True), nullable=True))
        t.add_column(sa.Column('push_error', sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table('notifications') as t:
        for column in ('push_error', 'push_after', 'push_attempts', 'pushed_at'):
            t.drop_column(column)
