"""the outcome of each scheduled audit verification, for the audit-verify-failed alert

Revision ID: 0016_audit_verifications
Revises: 0015_live_state_display_tokens
"""
import sqlalchemy as sa
from alembic import op


revision = '0016_audit_verifications'
down_revision = '0015_live_state_display_tokens'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """One row per `audit verify` run."""
    op.create_table(
        'audit_verifications',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ok', sa.Boolean(), nullable=False),
        sa.Column('head_seq', sa.Integer(), nullable=True),
        sa.Column('entries_checked', sa.Integer(), nullable=False),
        sa.Column('problems', sa.Integer(), nullable=False),
        sa.Column('first_problem', sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop it."""
    op.drop_table('audit_verifications')
