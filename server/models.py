"""All ORM models of the amtrace server, in one place (SQLAlchemy 2 typed mappings)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import false as sa_false
from sqlalchemy import (JSON, Boolean, Date, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator):
    """A timestamp stored and returned in UTC on every database (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; amtrace stores UTC-aware timestamps only")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    """Server time in UTC, the only clock records use."""
    return datetime.now(timezone.utc)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (so Alembic migrations are reproducible)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


# --- people -------------------------------------------------------------------------------------

class User(Base):
    """A person; ids come from an AUTOINCREMENT sequence and users are deactivated, never deleted."""

    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Kiosk credential: the badge number identifies (it is printed on the badge, not a secret); the PIN
    # is the secret and is stored only as an Argon2id hash, like the password.
    badge_number: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    pin_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Credential guard (server/auth/guard.py): a lockout that ends by itself (longer each time), the version
    # every access token must carry (raised to revoke them all), and a password an administrator set, which the
    # person must replace before signing anything (21 CFR 11.300).
    locked_until: Mapped[datetime | None] = mapped_column(nullable=True)
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())


class MachineAuthorisation(Base):
    """A person's authorisation (training) to operate one machine."""

    __tablename__ = "machine_authorisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    training_reference: Mapped[str] = mapped_column(String(200))
    granted_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    valid_until: Mapped[date | None] = mapped_column(Date, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


# --- machines -----------------------------------------------------------------------------------

class Machine(Base):
    """An AM machine: identity, location, versions last reported by the edge, due dates."""

    __tablename__ = "machines"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    manufacturer: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(100))
    serial_number: Mapped[str] = mapped_column(String(100))
    site: Mapped[str] = mapped_column(String(100))
    room: Mapped[str] = mapped_column(String(100))
    software_revision: Mapped[str | None] = mapped_column(String(100), nullable=True)
    firmware_revision: Mapped[str | None] = mapped_column(String(100), nullable=True)
    hardware_revision: Mapped[str | None] = mapped_column(String(100), nullable=True)
    build_prep_software: Mapped[str | None] = mapped_column(String(200), nullable=True)
    calibration_due: Mapped[date | None] = mapped_column(Date, nullable=True)
    maintenance_due: Mapped[date | None] = mapped_column(Date, nullable=True)
    # Days between preventive maintenances: logging one sets maintenance_due (issue 16: an operator could type any
    # date and clear "maintenance overdue").
    maintenance_interval_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    identity_reported_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MaintenanceRecord(Base):
    """One maintenance intervention in a machine's log."""

    __tablename__ = "maintenance_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    requires_requalification: Mapped[bool] = mapped_column(Boolean)
    performed_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    performed_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_maintenance_due: Mapped[date | None] = mapped_column(Date, nullable=True)
    # Set when a supervisor gave the next due date instead of the computed one: why.
    due_override_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class OperatorPresence(Base):
    """An operator identified at the kiosk for one job on its machine: what an agent's gate request must match."""

    __tablename__ = "operator_presence"
    __table_args__ = (Index("ix_operator_presence_job_user", "job_id", "user_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    via: Mapped[str] = mapped_column(String(16), default="kiosk")


# --- qualification ------------------------------------------------------------------------------

class QualificationScope(Base):
    """Qualification of one machine for one process × material × product family, with its baseline."""

    __tablename__ = "qualification_scopes"
    __table_args__ = (UniqueConstraint("machine_id", "process", "material", "product_family",
                                       name="uq_scope_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    process: Mapped[str] = mapped_column(String(100))
    material: Mapped[str] = mapped_column(String(100))
    product_family: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(32), default="unqualified")
    state_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    valid_until: Mapped[date | None] = mapped_column(Date, nullable=True)
    qualified_at: Mapped[datetime | None] = mapped_column(nullable=True)
    qualified_software_revision: Mapped[str | None] = mapped_column(String(100), nullable=True)
    qualified_firmware_revision: Mapped[str | None] = mapped_column(String(100), nullable=True)
    qualified_build_prep_software: Mapped[str | None] = mapped_column(String(200), nullable=True)
    qualified_site: Mapped[str | None] = mapped_column(String(100), nullable=True)
    qualified_room: Mapped[str | None] = mapped_column(String(100), nullable=True)
    qualified_material_supplier: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RequalificationTrigger(Base):
    """An event that required (re)qualification of a scope, with where it came from."""

    __tablename__ = "requalification_triggers"

    id: Mapped[int] = mapped_column(primary_key=True)
    scope_id: Mapped[int] = mapped_column(ForeignKey("qualification_scopes.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text)
    old_value: Mapped[str | None] = mapped_column(String(200), nullable=True)
    new_value: Mapped[str | None] = mapped_column(String(200), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    requalification_id: Mapped[int | None] = mapped_column(ForeignKey("requalifications.id"), nullable=True)


class Requalification(Base):
    """A (re)qualification record: trigger(s), risk decision, protocol, locked criteria, results, approval."""

    __tablename__ = "requalifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    scope_id: Mapped[int] = mapped_column(ForeignKey("qualification_scopes.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # initial | requalification
    state: Mapped[str] = mapped_column(String(32), default="open")  # open|criteria_locked|approved|rejected
    risk_decision: Mapped[str] = mapped_column(String(16))  # full | partial | none
    rationale: Mapped[str] = mapped_column(Text)
    protocol: Mapped[str] = mapped_column(Text)
    acceptance_criteria: Mapped[list[Any]] = mapped_column(JSON, default=list)
    criteria_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    criteria_locked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    criteria_locked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    valid_until: Mapped[date] = mapped_column(Date)
    started_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    approval_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    closing_note: Mapped[str | None] = mapped_column(Text, nullable=True)

    artefacts: Mapped[list["TestArtefact"]] = relationship(order_by="TestArtefact.id", lazy="selectin")


class TestArtefact(Base):
    """A test coupon built for a (re)qualification, its place on the plate and measured result."""

    __tablename__ = "test_artefacts"
    __test__ = False  # not a pytest test class

    id: Mapped[int] = mapped_column(primary_key=True)
    requalification_id: Mapped[int] = mapped_column(ForeignKey("requalifications.id"), index=True)
    artefact_type: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(100))
    x_mm: Mapped[float] = mapped_column(Float)
    y_mm: Mapped[float] = mapped_column(Float)
    z_mm: Mapped[float] = mapped_column(Float)
    orientation: Mapped[str] = mapped_column(String(64))
    property: Mapped[str] = mapped_column(String(64))
    measured_value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(32))
    passed: Mapped[bool] = mapped_column(Boolean)
    entered_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    entered_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- materials ----------------------------------------------------------------------------------

class MaterialLot(Base):
    """A lot of feedstock (powder) with its certificate, type and reuse count."""

    __tablename__ = "material_lots"

    id: Mapped[int] = mapped_column(primary_key=True)
    lot_number: Mapped[str] = mapped_column(String(100), unique=True)
    material: Mapped[str] = mapped_column(String(100))
    supplier: Mapped[str] = mapped_column(String(200))
    certificate_ref: Mapped[str] = mapped_column(String(200))
    lot_type: Mapped[str] = mapped_column(String(16))  # virgin | used | blend
    reuse_count: Mapped[int] = mapped_column(Integer, default=0)
    reuse_limit: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="released")  # released | quarantined
    expires_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- designs ------------------------------------------------------------------------------------

class Case(Base):
    """A clinical case: pseudonymous patient reference, clinician, institution, surgery date (no name)."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_ref: Mapped[str] = mapped_column(String(64), unique=True)
    clinician: Mapped[str] = mapped_column(String(200))
    institution: Mapped[str] = mapped_column(String(200))
    surgery_date: Mapped[date] = mapped_column(Date)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The clinician as a user (R17: only they, or the delegate they name, accept the delivery); `clinician` keeps
    # the printed name. None only for cases opened before clinicians were linked.
    clinician_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", name="fk_case_clinician"), nullable=True)
    delegate_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", name="fk_case_delegate"), nullable=True)
    imaging_date: Mapped[date | None] = mapped_column(Date, nullable=True)


class SurgeryDateChange(Base):
    """A change of a case's surgery date, with its reason and signature (append-only)."""

    __tablename__ = "surgery_date_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    old_date: Mapped[date] = mapped_column(Date)
    new_date: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)


class Design(Base):
    """A device design for a case; its content lives in immutable iterations."""

    __tablename__ = "designs"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    process: Mapped[str] = mapped_column(String(100))
    material: Mapped[str] = mapped_column(String(100))
    product_family: Mapped[str] = mapped_column(String(100))
    regulatory_category: Mapped[str] = mapped_column(String(32))  # custom_made | patient_matched
    gtin: Mapped[str | None] = mapped_column(String(14), nullable=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Label data (R17); None only for designs created before the label was required.
    intended_use: Mapped[str | None] = mapped_column(Text, nullable=True)
    anatomical_site: Mapped[str | None] = mapped_column(String(200), nullable=True)


class DesignTeamMember(Base):
    """A design engineer the design's author named: they may add iterations to it too (issue 16: anyone could)."""

    __tablename__ = "design_team"
    __table_args__ = (UniqueConstraint("design_id", "user_id", name="uq_design_team_member"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    design_id: Mapped[int] = mapped_column(ForeignKey("designs.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    added_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class DesignIteration(Base):
    """One immutable iteration of a design: its files' hashes and the software used."""

    __tablename__ = "design_iterations"
    __table_args__ = (UniqueConstraint("design_id", "number", name="uq_iteration_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    design_id: Mapped[int] = mapped_column(ForeignKey("designs.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    software_name: Mapped[str] = mapped_column(String(200))
    software_version: Mapped[str] = mapped_column(String(100))
    change_note: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft | approved | superseded
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    files: Mapped[list["DesignFile"]] = relationship(order_by="DesignFile.id", lazy="selectin")


class DesignFile(Base):
    """A file of a design iteration, identified by the SHA-256 the server computed."""

    __tablename__ = "design_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    iteration_id: Mapped[int] = mapped_column(ForeignKey("design_iterations.id"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)


# --- signatures and audit -----------------------------------------------------------------------

class Signature(Base):
    """An electronic signature: who, when, meaning, and the hash of the exact record signed."""

    __tablename__ = "signatures"
    # Signatures of a record are looked up by it on every release-gate decision (the design iteration's
    # approvals) and every stage view; a plant signs several records per device, so never a full scan.
    __table_args__ = (Index("ix_signatures_record", "record_type", "record_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    printed_name: Mapped[str] = mapped_column(String(200))
    signer_role: Mapped[str] = mapped_column(String(32))
    meaning: Mapped[str] = mapped_column(String(16))  # authored | reviewed | approved | performed
    record_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(64))
    record_sha256: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    seal: Mapped[str] = mapped_column(String(64))  # HMAC over all the fields above


class AuditEntry(Base):
    """One append-only, hash-chained audit trail entry."""

    __tablename__ = "audit_entries"
    # A device's or job's entries are read at every archive and by the audit page's filter: never a chain scan.
    __table_args__ = (Index("ix_audit_entries_record_id", "record_id"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    record_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(64))
    old_values: Mapped[str] = mapped_column(Text)
    new_values: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    entry_hash: Mapped[str] = mapped_column(String(64))


# --- jobs and devices ---------------------------------------------------------------------------

class Job(Base):
    """One build on one machine with one material lot."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    material_lot_id: Mapped[int] = mapped_column(ForeignKey("material_lots.id"))
    process: Mapped[str] = mapped_column(String(100))
    material: Mapped[str] = mapped_column(String(100))
    product_family: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), default="planned")  # planned | released | closed
    build_parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    devices: Mapped[list["Device"]] = relationship(order_by="Device.id", lazy="selectin")


class Device(Base):
    """A device (or test coupon) on a job, with its unique device code and UDI."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_code: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # device | coupon
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), nullable=True)
    design_iteration_id: Mapped[int | None] = mapped_column(ForeignKey("design_iterations.id"), nullable=True)
    regulatory_category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    udi_element_string: Mapped[str | None] = mapped_column(String(200), nullable=True)
    udi_hri: Mapped[str | None] = mapped_column(String(200), nullable=True)
    position: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="in_production")  # in_production|delivered|scrapped
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Shipment(Base):
    """A delivery list: released devices sent together to one clinician, dispatched by production, signed for by
    the clinician (R17)."""

    __tablename__ = "shipments"

    id: Mapped[int] = mapped_column(primary_key=True)
    institution: Mapped[str] = mapped_column(String(200))
    clinician_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | dispatched | accepted
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(nullable=True)
    list_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(nullable=True)

    items: Mapped[list["ShipmentItem"]] = relationship(order_by="ShipmentItem.id", lazy="selectin")


class ShipmentItem(Base):
    """A device on a delivery list, with its label data as frozen at dispatch."""

    __tablename__ = "shipment_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("shipments.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), unique=True)
    label: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class DeviceCodeCounter(Base):
    """Per-year counter behind the internal serial part of device codes."""

    __tablename__ = "device_code_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)


class StageStep(Base):
    """One stage of one device (build … delivery) with its gate: start, completion, acceptance."""

    __tablename__ = "stage_steps"
    __table_args__ = (UniqueConstraint("device_id", "stage", name="uq_device_stage"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|in_progress|completed|accepted
    deadline: Mapped[datetime] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    started_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    completed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    completion_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    accepted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    acceptance_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)
    judgement: Mapped[str | None] = mapped_column(Text, nullable=True)
    impact_assessment: Mapped[str | None] = mapped_column(Text, nullable=True)
    impact_assessed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    impact_assessed_at: Mapped[datetime | None] = mapped_column(nullable=True)


# --- nonconformities ----------------------------------------------------------------------------

class Nonconformity(Base):
    """A nonconformity raised by a person or the edge; blocks what it names (device, job, machine, material lot,
    design iteration) until dispositioned."""

    __tablename__ = "nonconformities"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # person | edge
    kind: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    machine_id: Mapped[str | None] = mapped_column(ForeignKey("machines.id"), nullable=True, index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), nullable=True, index=True)
    material_lot_id: Mapped[int | None] = mapped_column(ForeignKey("material_lots.id"), nullable=True, index=True)
    design_iteration_id: Mapped[int | None] = mapped_column(ForeignKey("design_iterations.id"), nullable=True,
                                                            index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    raised_by: Mapped[str] = mapped_column(String(200))
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | dispositioned
    disposition: Mapped[str | None] = mapped_column(String(32), nullable=True)
    disposition_rationale: Mapped[str | None] = mapped_column(Text, nullable=True)
    disposition_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)
    dispositioned_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ImpactAssessment(Base):
    """An overdue step's impact assessment with its signature (append-only; the step shows the latest)."""

    __tablename__ = "impact_assessments"

    id: Mapped[int] = mapped_column(primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("stage_steps.id"), index=True)
    assessment: Mapped[str] = mapped_column(Text)
    assessed_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    assessed_at: Mapped[datetime] = mapped_column(default=utcnow)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)


class Notification(Base):
    """Something a person must know (a nonconformity on their work), kept until they mark it read."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    record_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The outbound webhook's durable queue (server/notifications/push.py): pushed once the receiver answered 2xx.
    pushed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    push_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    push_after: Mapped[datetime | None] = mapped_column(nullable=True)
    push_error: Mapped[str | None] = mapped_column(Text, nullable=True)


# --- release gate and agents --------------------------------------------------------------------

class GateDecision(Base):
    """A release-gate decision with every reason and a snapshot of its inputs."""

    __tablename__ = "gate_decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[int] = mapped_column(Integer, index=True)
    build_file_sha256: Mapped[str] = mapped_column(String(64))
    operator_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(200))
    allowed: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)


class Agent(Base):
    """An edge agent, known by the SHA-256 of its token and scoped to its machines."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    issued_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    machines: Mapped[list["AgentMachine"]] = relationship(lazy="selectin")


class AgentMachine(Base):
    """A machine an agent may act for."""

    __tablename__ = "agent_machines"

    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), primary_key=True)


class BuildFileCheck(Base):
    """A build-file check result reported by the edge."""

    __tablename__ = "build_file_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    file_name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    passed: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    nonconformity_id: Mapped[int | None] = mapped_column(ForeignKey("nonconformities.id"), nullable=True)


# --- validated cycles, manual steps and sealed device records (issue #6) ------------------------

class CycleRecipe(Base):
    """A versioned validated cycle (post-processing, cleaning, sterilization) with its window; approved by signature."""

    __tablename__ = "cycle_recipes"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_recipe_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    process: Mapped[str] = mapped_column(String(32))  # steam | ethylene_oxide | radiation | heat_treatment | cleaning
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    content_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="draft")  # draft | approved | superseded
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    approval_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ProcessCycle(Base):
    """One run of a furnace, washer or sterilizer on a load of devices, evaluated against its recipe version."""

    __tablename__ = "process_cycles"

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    recipe_id: Mapped[int] = mapped_column(ForeignKey("cycle_recipes.id"), index=True)
    process: Mapped[str] = mapped_column(String(32))
    cycle_ref: Mapped[str | None] = mapped_column(String(100), nullable=True)  # the machine's own cycle number
    state: Mapped[str] = mapped_column(String(16), default="running")  # running | evaluated
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    verdict: Mapped[str | None] = mapped_column(String(8), nullable=True)  # pass | fail
    evaluation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    evaluated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    performed_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CycleLoadItem(Base):
    """A device in the load of a process cycle."""

    __tablename__ = "cycle_load_items"

    cycle_id: Mapped[int] = mapped_column(ForeignKey("process_cycles.id"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True, index=True)


class ManualStep(Base):
    """A manual post-processing step or inspection of one device, with measurements, photos and signature."""

    __tablename__ = "manual_steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # support_removal | surface_finishing | inspection | other
    description: Mapped[str] = mapped_column(Text)
    measurements: Mapped[list[Any]] = mapped_column(JSON, default=list)
    photos: Mapped[list[Any]] = mapped_column(JSON, default=list)
    result: Mapped[str] = mapped_column(String(8))  # pass | fail
    performed_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    performed_at: Mapped[datetime] = mapped_column(default=utcnow)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)
    nonconformity_id: Mapped[int | None] = mapped_column(ForeignKey("nonconformities.id"), nullable=True)


class DeviceSeal(Base):
    """Digest of a released device's time series and records, also written into the audit chain."""

    __tablename__ = "device_seals"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), unique=True)
    sealed_at: Mapped[datetime] = mapped_column()
    range_start: Mapped[datetime] = mapped_column()
    range_end: Mapped[datetime] = mapped_column()
    point_count: Mapped[int] = mapped_column(Integer)
    series_sha256: Mapped[str] = mapped_column(String(64))
    records_sha256: Mapped[str] = mapped_column(String(64))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    audit_seq: Mapped[int] = mapped_column(Integer)


class BuildSummaryRecord(Base):
    """A released device's process-monitoring summary (signals, events, plots), computed once from InfluxDB.

    Append-only: written at release (or by `amtrace-server dhr seal|summarize`) and never updated; its SHA-256
    is also in an HMAC-chained `build_summary_stored` audit entry, so a change in SQL is detectable."""

    __tablename__ = "build_summaries"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), unique=True)
    computed_at: Mapped[datetime] = mapped_column()
    range_start: Mapped[datetime] = mapped_column()
    range_end: Mapped[datetime] = mapped_column()
    # Canonical JSON text, not a JSON column: the hash is over exactly these bytes on every database.
    summary: Mapped[str] = mapped_column(Text)
    summary_sha256: Mapped[str] = mapped_column(String(64))
    audit_seq: Mapped[int] = mapped_column(Integer)


class LiveMachineState(Base):
    """A machine's latest live state as its agent reported it: one row per machine, shared by every server instance.

    Not a record (left out of the row seals): it is overwritten by each heartbeat and read by the dashboards."""

    __tablename__ = "live_machine_states"

    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), primary_key=True)
    agent: Mapped[str] = mapped_column(String(100))
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column()


class DisplayToken(Base):
    """A wall display's read-only access to the live dashboard, created and revoked by a production manager.

    Known by the SHA-256 of its secret (shown once); it never expires by time, only by revocation."""

    __tablename__ = "display_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditVerification(Base):
    """One run of `amtrace-server audit verify`: when, what it found; the newest is scraped by Prometheus."""

    __tablename__ = "audit_verifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    head_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    entries_checked: Mapped[int] = mapped_column(Integer)
    problems: Mapped[int] = mapped_column(Integer)
    first_problem: Mapped[str | None] = mapped_column(Text, nullable=True)


class DeviceArchive(Base):
    """A released device's self-contained archive, written once after its seal (server/archive)."""

    __tablename__ = "device_archives"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), unique=True)
    archive_id: Mapped[str] = mapped_column(String(64))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    files: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    written_at: Mapped[datetime] = mapped_column()
    audit_seq: Mapped[int] = mapped_column(Integer)


class DeviceRetention(Base):
    """How long a released device's records are kept: set once when its release is accepted (server/retention)."""

    __tablename__ = "device_retention"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), unique=True)
    product_family: Mapped[str] = mapped_column(String(100))
    lifetime_years: Mapped[float] = mapped_column(Float)
    extra_years: Mapped[float] = mapped_column(Float)
    rule: Mapped[str] = mapped_column(String(200))
    released_at: Mapped[datetime] = mapped_column()
    retain_until: Mapped[date] = mapped_column(Date, index=True)


class RetainedSample(Base):
    """A test coupon or a retained device kept for later testing: where it is, in what condition, until when."""

    __tablename__ = "retained_samples"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), unique=True)
    location: Mapped[str] = mapped_column(String(200))
    condition: Mapped[str] = mapped_column(String(200))
    retain_until: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16), default="stored")  # stored | withdrawn | disposed
    registered_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)


class SampleCustody(Base):
    """One step in a retained sample's chain of custody; withdrawals and disposals carry a signature."""

    __tablename__ = "sample_custody"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("retained_samples.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))  # registered | moved | withdrawn | disposed
    at: Mapped[datetime] = mapped_column(default=utcnow)
    by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    from_location: Mapped[str | None] = mapped_column(String(200), nullable=True)
    to_location: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(200), nullable=True)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"), nullable=True)
