"""Bodies of the machines API."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from server.limits import Day, TEXT_MAX


class MachineCreate(BaseModel):
    """Register a machine."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Machine id as in configs/machines")
    manufacturer: str
    model: str
    serial_number: str
    site: str = Field(description="Plant site of the installation")
    room: str = Field(description="Room of the installation")
    calibration_due: Day | None = None
    maintenance_due: Day | None = None
    maintenance_interval_days: int | None = Field(default=None, ge=1, le=3650, description=(
        "Days between preventive maintenances: logging one sets the next due date"))


class MachineOut(BaseModel):
    """A machine with its reported versions and due dates."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    manufacturer: str
    model: str
    serial_number: str
    site: str
    room: str
    software_revision: str | None
    firmware_revision: str | None
    hardware_revision: str | None
    build_prep_software: str | None
    calibration_due: date | None
    maintenance_due: date | None
    maintenance_interval_days: int | None = None
    identity_reported_at: datetime | None
    last_heartbeat_at: datetime | None


class RelocateIn(BaseModel):
    """A physical move of the machine."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    site: str
    room: str
    reason: str = Field(min_length=3, description="Why the machine was moved")


class DueDatesIn(BaseModel):
    """New calibration / maintenance due dates."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    calibration_due: Day | None = None
    maintenance_due: Day | None = None
    maintenance_interval_days: int | None = Field(default=None, ge=1, le=3650, description=(
        "New days between preventive maintenances"))
    reason: str = Field(min_length=3, description="E.g. the calibration certificate reference")


class MaintenanceIn(BaseModel):
    """A maintenance intervention."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    kind: str = Field(pattern=r"^[a-z_]{2,64}$", description=(
        "One of the configured kinds (GET /machines/maintenance/kinds), e.g. filter_change, laser_replaced"))
    description: str = Field(min_length=3)
    next_maintenance_due: Day | None = Field(default=None, description=(
        "Only to override the date computed from the machine's interval: production manager or quality engineer, "
        "with due_override_reason"))
    due_override_reason: str | None = Field(default=None, min_length=3, max_length=1000)


class MaintenanceOut(BaseModel):
    """A maintenance log entry."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    machine_id: str
    kind: str
    description: str
    requires_requalification: bool
    performed_by: int
    performed_at: datetime
    next_maintenance_due: date | None
    due_override_reason: str | None = None


class MaintenanceKindOut(BaseModel):
    """A kind of maintenance the plant logs."""

    kind: str
    label: str
    preventive: bool = Field(description="Logging it sets the next due date from the machine's interval")
    requalifying: bool = Field(description="Logging it moves the machine's qualified scopes to requalification")
