"""delivery: the case's clinician as a user (and a delegate), label data, delivery lists per shipment

Revision ID: 0010_delivery
Revises: 0009_notifications
"""
import sqlalchemy as sa
from alembic import op


revision = '0010_delivery'
down_revision = '0009_notifications'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Cases name their clinician (a user) and imaging date; designs their intended use and site; shipments."""
    with op.batch_alter_table('cases') as t:
        # Nullable: cases opened before this revision named their clinician only as text.
        t.add_column(sa.Column('clinician_id', sa.Integer(), sa.ForeignKey('users.id', name='fk_case_clinician'),
                               nullable=True))
        t.add_column(sa.Column('delegate_id', sa.Integer(), sa.ForeignKey('users.id', name='fk_case_delegate'),
                               nullable=True))
        t.add_column(sa.Column('imaging_date', sa.Date(), nullable=True))
    with op.batch_alter_table('designs') as t:
        t.add_column(sa.Column('intended_use', sa.Text(), nullable=True))
        t.add_column(sa.Column('anatomical_site', sa.String(length=200), nullable=True))
    op.create_table(
        'shipments',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('institution', sa.String(length=200), nullable=False),
        sa.Column('clinician_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False, index=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('created_by', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('dispatched_by', sa.Integer(), sa.ForeignKey('users.id'), nullable=True),
        sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('list_sha256', sa.String(length=64), nullable=True),
        sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'shipment_items',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('shipment_id', sa.Integer(), sa.ForeignKey('shipments.id'), nullable=False, index=True),
        # A device travels on one delivery list only.
        sa.Column('device_id', sa.Integer(), sa.ForeignKey('devices.id'), nullable=False, unique=True),
        sa.Column('label', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop them."""
    op.drop_table('shipment_items')
    op.drop_table('shipments')
    with op.batch_alter_table('designs') as t:
        t.drop_column('anatomical_site')
        t.drop_column('intended_use')
    with op.batch_alter_table('cases') as t:
        t.drop_column('imaging_date')
        t.drop_column('delegate_id')
        t.drop_column('clinician_id')
