"""device archives written at release

Revision ID: 0019_device_archives
Revises: 0018_retained_samples
"""
import sqlalchemy as sa
from alembic import op


revision = '0019_device_archives'
down_revision = '0018_retained_samples'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """One archive per released device."""
    op.create_table(
        'device_archives',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('device_id', sa.Integer(), sa.ForeignKey('devices.id'), nullable=False, unique=True),
        sa.Column('archive_id', sa.String(64), nullable=False),
        sa.Column('manifest_sha256', sa.String(64), nullable=False),
        sa.Column('files', sa.Integer(), nullable=False),
        sa.Column('size_bytes', sa.Integer(), nullable=False),
        sa.Column('written_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('audit_seq', sa.Integer(), nullable=False))


def downgrade() -> None:
    """Drop it."""
    op.drop_table('device_archives')
