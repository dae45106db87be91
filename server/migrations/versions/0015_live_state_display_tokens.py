"""live machine state in the database (shared by every server instance) and wall-display tokens

Revision ID: 0015_live_state_display_tokens
Revises: 0014_maintenance_presence
"""
import sqlalchemy as sa
from alembic import op


revision = '0015_live_state_display_tokens'
down_revision = '0014_maintenance_presence'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The live state table and the display tokens."""
    op.create_table(
        'live_machine_states',
        sa.Column('machine_id', sa.String(64), sa.ForeignKey('machines.id'), primary_key=True),
        sa.Column('agent', sa.String(100), nullable=False),
        sa.Column('report', sa.JSON(), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False))
    op.create_table(
        'display_tokens',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('label', sa.String(100), nullable=False),
        sa.Column('token_sha256', sa.String(64), nullable=False, unique=True),
        sa.Column('created_by', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_by', sa.Integer(), sa.ForeignKey('users.id'), nullable=True),
        sa.Column('revoke_reason', sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop them."""
    op.drop_table('display_tokens')
    op.drop_table('live_machine_states')
