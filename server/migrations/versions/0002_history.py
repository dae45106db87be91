"""history: validated cycle recipes, process cycles and their loads, manual steps, device seals

Revision ID: 0002_history
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_history'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables of validated cycles, manual steps and sealed device records."""
    op.create_table('cycle_recipes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('process', sa.String(length=32), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('approval_signature_id', sa.Integer(), nullable=True),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['approval_signature_id'], ['signatures.id'],
                            name=op.f('fk_cycle_recipes_approval_signature_id_signatures')),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_cycle_recipes_created_by_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cycle_recipes')),
    sa.UniqueConstraint('name', 'version', name='uq_recipe_version')
    )
    op.create_table('process_cycles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('machine_id', sa.String(length=64), nullable=False),
    sa.Column('recipe_id', sa.Integer(), nullable=False),
    sa.Column('process', sa.String(length=32), nullable=False),
    sa.Column('cycle_ref', sa.String(length=100), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('operator_id', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.String(length=8), nullable=True),
    sa.Column('evaluation', sa.JSON(), nullable=False),
    sa.Column('evaluated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('performed_signature_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], name=op.f('fk_process_cycles_machine_id_machines')),
    sa.ForeignKeyConstraint(['operator_id'], ['users.id'], name=op.f('fk_process_cycles_operator_id_users')),
    sa.ForeignKeyConstraint(['performed_signature_id'], ['signatures.id'],
                            name=op.f('fk_process_cycles_performed_signature_id_signatures')),
    sa.ForeignKeyConstraint(['recipe_id'], ['cycle_recipes.id'],
                            name=op.f('fk_process_cycles_recipe_id_cycle_recipes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_process_cycles'))
    )
    with op.batch_alter_table('process_cycles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_process_cycles_machine_id'), ['machine_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_process_cycles_recipe_id'), ['recipe_id'], unique=False)

    op.create_table('cycle_load_items',
    sa.Column('cycle_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cycle_id'], ['process_cycles.id'],
                            name=op.f('fk_cycle_load_items_cycle_id_process_cycles')),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_cycle_load_items_device_id_devices')),
    sa.PrimaryKeyConstraint('cycle_id', 'device_id', name=op.f('pk_cycle_load_items'))
    )
    with op.batch_alter_table('cycle_load_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cycle_load_items_device_id'), ['device_id'], unique=False)

    op.create_table('manual_steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('measurements', sa.JSON(), nullable=False),
    sa.Column('photos', sa.JSON(), nullable=False),
    sa.Column('result', sa.String(length=8), nullable=False),
    sa.Column('performed_by', sa.Integer(), nullable=False),
    sa.Column('performed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('signature_id', sa.Integer(), nullable=True),
    sa.Column('nonconformity_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_manual_steps_device_id_devices')),
    sa.ForeignKeyConstraint(['nonconformity_id'], ['nonconformities.id'],
                            name=op.f('fk_manual_steps_nonconformity_id_nonconformities')),
    sa.ForeignKeyConstraint(['performed_by'], ['users.id'], name=op.f('fk_manual_steps_performed_by_users')),
    sa.ForeignKeyConstraint(['signature_id'], ['signatures.id'],
                            name=op.f('fk_manual_steps_signature_id_signatures')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_manual_steps'))
    )
    with op.batch_alter_table('manual_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_manual_steps_device_id'), ['device_id'], unique=False)

    op.create_table('device_seals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('sealed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('range_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('range_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('point_count', sa.Integer(), nullable=False),
    sa.Column('series_sha256', sa.String(length=64), nullable=False),
    sa.Column('records_sha256', sa.String(length=64), nullable=False),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=False),
    sa.Column('audit_seq', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_seals_device_id_devices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_seals')),
    sa.UniqueConstraint('device_id', name=op.f('uq_device_seals_device_id'))
    )


def downgrade() -> None:
    """Drop the tables of this revision."""
    op.drop_table('device_seals')
    with op.batch_alter_table('manual_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_manual_steps_device_id'))
    op.drop_table('manual_steps')
    with op.batch_alter_table('cycle_load_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cycle_load_items_device_id'))
    op.drop_table('cycle_load_items')
    with op.batch_alter_table('process_cycles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_process_cycles_recipe_id'))
        batch_op.drop_index(batch_op.f('ix_process_cycles_machine_id'))
    op.drop_table('process_cycles')
    op.drop_table('cycle_recipes')
