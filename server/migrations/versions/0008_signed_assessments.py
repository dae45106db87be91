"""impact assessments and surgery-date changes: append-only, each with its signature

Revision ID: 0008_signed_assessments
Revises: 0007_nonconformity_scopes
"""
import sqlalchemy as sa
from alembic import op


revision = '0008_signed_assessments'
down_revision = '0007_nonconformity_scopes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Two append-only tables: an overdue step's impact assessments, a case's surgery-date changes."""
    op.create_table(
        'impact_assessments',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('step_id', sa.Integer(), sa.ForeignKey('stage_steps.id'), nullable=False, index=True),
        sa.Column('assessment', sa.Text(), nullable=False),
        sa.Column('assessed_by', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('assessed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('signature_id', sa.Integer(), sa.ForeignKey('signatures.id'), nullable=True))
    op.create_table(
        'surgery_date_changes',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('case_id', sa.Integer(), sa.ForeignKey('cases.id'), nullable=False, index=True),
        sa.Column('old_date', sa.Date(), nullable=False),
        sa.Column('new_date', sa.Date(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('changed_by', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('signature_id', sa.Integer(), sa.ForeignKey('signatures.id'), nullable=True))


def downgrade() -> None:
    """Drop both."""
    op.drop_table('surgery_date_changes')
    op.drop_table('impact_assessments')
