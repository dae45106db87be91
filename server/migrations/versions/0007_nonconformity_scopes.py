"""nonconformity scopes: a nonconformity may name a material lot or a design iteration

Revision ID: 0007_nonconformity_scopes
Revises: 0006_signature_record_index
"""
import sqlalchemy as sa
from alembic import op


revision = '0007_nonconformity_scopes'
down_revision = '0006_signature_record_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A nonconformity blocks what it names: also every job of a material lot, every device of a design iteration."""
    with op.batch_alter_table('nonconformities') as batch:
        batch.add_column(sa.Column('material_lot_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('design_iteration_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_nonconformities_material_lot', 'material_lots', ['material_lot_id'], ['id'])
        batch.create_foreign_key('fk_nonconformities_design_iteration', 'design_iterations',
                                 ['design_iteration_id'], ['id'])
        batch.create_index('ix_nonconformities_material_lot_id', ['material_lot_id'])
        batch.create_index('ix_nonconformities_design_iteration_id', ['design_iteration_id'])


def downgrade() -> None:
    """Drop the two scopes."""
    with op.batch_alter_table('nonconformities') as batch:
        batch.drop_index('ix_nonconformities_design_iteration_id')
        batch.drop_index('ix_nonconformities_material_lot_id')
        batch.drop_constraint('fk_nonconformities_design_iteration', type_='foreignkey')
        batch.drop_constraint('fk_nonconformities_material_lot', type_='foreignkey')
        batch.drop_column('design_iteration_id')
        batch.drop_column('material_lot_id')
