"""retention date of each released device

Revision ID: 0017_device_retention
Revises: 0016_audit_verifications
"""
import sqlalchemy as sa
from alembic import op


revision = '0017_device_retention'
down_revision = '0016_audit_verifications'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """One row per released device."""
    op.create_table(
        'device_retention',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('device_id', sa.Integer(), sa.ForeignKey('devices.id'), nullable=False, unique=True),
        sa.Column('product_family', sa.String(100), nullable=False),
        sa.Column('lifetime_years', sa.Float(), nullable=False),
        sa.Column('extra_years', sa.Float(), nullable=False),
        sa.Column('rule', sa.String(200), nullable=False),
        sa.Column('released_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('retain_until', sa.Date(), nullable=False))
    op.create_index('ix_device_retention_retain_until', 'device_retention', ['retain_until'])


def downgrade() -> None:
    """Drop it."""
    op.drop_index('ix_device_retention_retain_until', 'device_retention')
    op.drop_table('device_retention')
