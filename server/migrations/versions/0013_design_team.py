"""design team: who may add iterations to a design (its author and the design engineers they name)

Revision ID: 0013_design_team
Revises: 0012_credential_guard
"""
import sqlalchemy as sa
from alembic import op


revision = '0013_design_team'
down_revision = '0012_credential_guard'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """One row per design and named engineer (the author is the design's created_by)."""
    op.create_table(
        'design_team',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('design_id', sa.Integer(), sa.ForeignKey('designs.id'), nullable=False, index=True),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('added_by', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('design_id', 'user_id', name='uq_design_team_member'))


def downgrade() -> None:
    """Drop it."""
    op.drop_table('design_team')
