"""build summaries: each released device's process-monitoring summary, computed once at release

Revision ID: 0005_build_summaries
Revises: 0004_kiosk_badge
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_build_summaries'
down_revision = '0004_kiosk_badge'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create build_summaries (one row per device, append-only)."""
    op.create_table('build_summaries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('range_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('range_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('summary_sha256', sa.String(length=64), nullable=False),
    sa.Column('audit_seq', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_build_summaries_device_id_devices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_build_summaries')),
    sa.UniqueConstraint('device_id', name=op.f('uq_build_summaries_device_id'))
    )


def downgrade() -> None:
    """Drop build_summaries."""
    op.drop_table('build_summaries')
