"""notifications: what a person must know (a nonconformity raised on their work), until they read it

Revision ID: 0009_notifications
Revises: 0008_signed_assessments
"""
import sqlalchemy as sa
from alembic import op


revision = '0009_notifications'
down_revision = '0008_signed_assessments'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """One row per person and notice."""
    op.create_table(
        'notifications',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False, index=True),
        sa.Column('kind', sa.String(length=64), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('record_type', sa.String(length=64), nullable=False),
        sa.Column('record_id', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('read_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop it."""
    op.drop_table('notifications')
