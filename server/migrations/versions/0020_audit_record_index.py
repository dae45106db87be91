"""index audit entries by record id

Revision ID: 0020_audit_record_index
Revises: 0019_device_archives
"""
from alembic import op


revision = '0020_audit_record_index'
down_revision = '0019_device_archives'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A device's (or job's) entries are read at every archive and audit-page filter: no full scan of the chain."""
    op.create_index('ix_audit_entries_record_id', 'audit_entries', ['record_id'])


def downgrade() -> None:
    """Drop it."""
    op.drop_index('ix_audit_entries_record_id', 'audit_entries')
