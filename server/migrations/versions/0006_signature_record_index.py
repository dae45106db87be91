"""signature lookup by record: an index on signatures (record_type, record_id)

Revision ID: 0006_signature_record_index
Revises: 0005_build_summaries
"""
from alembic import op


revision = '0006_signature_record_index'
down_revision = '0005_build_summaries'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index signatures by the record they sign (the release gate reads them on every decision)."""
    op.create_index('ix_signatures_record', 'signatures', ['record_type', 'record_id'])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index('ix_signatures_record', table_name='signatures')
