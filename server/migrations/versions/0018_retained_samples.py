"""retained samples (coupons, retained devices) and their chain of custody

Revision ID: 0018_retained_samples
Revises: 0017_device_retention
"""
import sqlalchemy as sa
from alembic import op


revision = '0018_retained_samples'
down_revision = '0017_device_retention'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The samples and their custody steps."""
    op.create_table(
        'retained_samples',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('device_id', sa.Integer(), sa.ForeignKey('devices.id'), nullable=False, unique=True),
        sa.Column('location', sa.String(200), nullable=False),
        sa.Column('condition', sa.String(200), nullable=False),
        sa.Column('retain_until', sa.Date(), nullable=False),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('registered_by', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False))
    op.create_table(
        'sample_custody',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('sample_id', sa.Integer(), sa.ForeignKey('retained_samples.id'), nullable=False),
        sa.Column('action', sa.String(16), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('by_user_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('from_location', sa.String(200), nullable=True),
        sa.Column('to_location', sa.String(200), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('reference', sa.String(200), nullable=True),
        sa.Column('signature_id', sa.Integer(), sa.ForeignKey('signatures.id'), nullable=True))
    op.create_index('ix_sample_custody_sample_id', 'sample_custody', ['sample_id'])


def downgrade() -> None:
    """Drop them."""
    op.drop_index('ix_sample_custody_sample_id', 'sample_custody')
    op.drop_table('sample_custody')
    op.drop_table('retained_samples')
