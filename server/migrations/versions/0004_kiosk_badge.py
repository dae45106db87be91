"""kiosk credential: badge number and PIN hash on users

Revision ID: 0004_kiosk_badge
Revises: 0002_history
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_kiosk_badge'
down_revision = '0002_history'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the badge number (unique) and the Argon2id hash of the PIN."""
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('badge_number', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('pin_hash', sa.String(length=255), nullable=True))
        batch.create_unique_constraint(batch.f('uq_users_badge_number'), ['badge_number'])


def downgrade() -> None:
    """Drop the kiosk credential."""
    with op.batch_alter_table('users') as batch:
        batch.drop_constraint(batch.f('uq_users_badge_number'), type_='unique')
        batch.drop_column('pin_hash')
        batch.drop_column('badge_number')
