"""Bodies of the qualification API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.limits import Day, TEXT_MAX

ScopeState = Literal["unqualified", "qualified", "requalification_required", "requalifying", "suspended"]


class ScopeCreate(BaseModel):
    """Declare a qualification scope."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    machine_id: str
    process: str = Field(description="E.g. LPBF")
    material: str = Field(description="Material specification, e.g. Ti-6Al-4V ELI")
    product_family: str = Field(description="E.g. acetabular cup")


class TriggerOut(BaseModel):
    """A recorded requalification trigger."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    scope_id: int
    kind: str
    source: str = Field(description="Who raised it: user:<id>, agent:<name> or system:amtrace")
    detail: str
    old_value: str | None
    new_value: str | None
    occurred_at: datetime
    requalification_id: int | None


class ScopeOut(BaseModel):
    """A scope with its state, validity and qualified baseline."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    machine_id: str
    process: str
    material: str
    product_family: str
    state: ScopeState
    state_reason: str | None
    valid_until: date | None
    qualified_at: datetime | None
    qualified_software_revision: str | None
    qualified_firmware_revision: str | None
    qualified_build_prep_software: str | None
    qualified_site: str | None
    qualified_room: str | None
    qualified_material_supplier: str | None


class TriggerIn(BaseModel):
    """A trigger raised by a person (material or handling change, excursion…)."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    kind: Literal["material_changed", "material_handling_changed", "build_prep_software_changed",
                  "process_excursion", "other"]
    detail: str = Field(min_length=3, description="What changed, in plain words")


class ReasonIn(BaseModel):
    """A reason, recorded in the audit trail."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    reason: str = Field(min_length=3)


class RequalificationCreate(BaseModel):
    """Open a (re)qualification record."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    scope_id: int
    risk_decision: Literal["full", "partial", "none"]
    rationale: str = Field(min_length=3, description="Why this depth of requalification is enough")
    protocol: str = Field(min_length=1, description="Protocol reference or text")
    valid_until: Day = Field(description="End of validity once approved")


class Criterion(BaseModel):
    """One acceptance criterion, fixed before results are entered."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    artefact_type: Literal["tensile_bar", "density_cube", "geometry_artefact", "surface_roughness", "other"]
    property: str = Field(description="Measured property, e.g. uts_mpa, relative_density_pct")
    min: float | None = None
    max: float | None = None
    unit: str
    min_count: int = Field(default=1, ge=1, description="Artefacts of this kind needed (worst-case locations)")


class CriteriaIn(BaseModel):
    """The acceptance criteria."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    criteria: list[Criterion] = Field(min_length=1)


class ArtefactIn(BaseModel):
    """A test artefact's position, orientation and measured result."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    artefact_type: Literal["tensile_bar", "density_cube", "geometry_artefact", "surface_roughness", "other"]
    label: str
    x_mm: float
    y_mm: float
    z_mm: float
    orientation: str = Field(description="E.g. XY, Z, 45deg")
    property: str
    measured_value: float
    unit: str


class ArtefactOut(ArtefactIn):
    """A stored test artefact and its pass/fail against the locked criteria."""

    model_config = ConfigDict(from_attributes=True, extra="ignore")

    id: int
    passed: bool
    entered_by: int
    entered_at: datetime


class ApproveIn(BaseModel):
    """The approving quality engineer's signature."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    password: str = Field(description="Re-entered at signing")
    material_supplier: str | None = Field(default=None, description="Qualified powder supplier (baseline)")


class RequalificationOut(BaseModel):
    """A (re)qualification record."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    scope_id: int
    kind: Literal["initial", "requalification"]
    state: Literal["open", "criteria_locked", "approved", "rejected"]
    risk_decision: str
    rationale: str
    protocol: str
    acceptance_criteria: list[Criterion]
    criteria_sha256: str | None
    criteria_locked_at: datetime | None
    valid_until: date
    started_by: int
    started_at: datetime
    approval_signature_id: int | None
    closed_at: datetime | None
    closing_note: str | None
    artefacts: list[ArtefactOut]


class ExpiryCheckOut(BaseModel):
    """Triggers raised by an expiry check."""

    triggers: list[TriggerOut]
