"""What the kiosk and dashboard pages read and send (view models over the domain records)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.limits import TEXT_MAX
from server.live.schemas import LiveMachine
from server.qualification.schemas import RequalificationOut


class VerdictReason(BaseModel):
    """One reason the build may not start, in plain words."""

    code: str = Field(description="Release-gate reason code, or build_file_not_checked (kiosk)")
    message: str = Field(description="The reason as the operator reads it")


class Verdict(BaseModel):
    """Whether the machine is cleared to build this job now, with every reason when it is not."""

    cleared: bool
    reasons: list[VerdictReason]
    build_file_sha256: str | None = Field(description="The build-file hash the verdict was asked for")
    recorded_decision_id: int | None = Field(
        default=None, description="Gate decision id when the verdict was recorded (start request); none for a look")


class BuildFileCheckView(BaseModel):
    """The latest build-file check the machine's agent reported for a file of the job."""

    file_name: str
    sha256: str
    identical: bool = Field(description="True when the file matches the approved design")
    detail: str = Field(description="The agent's difference report summary")
    checked_at: datetime


class StepView(BaseModel):
    """A device's stage step as the kiosk shows it."""

    id: int
    stage: str
    label: str = Field(description="Stage name for people, e.g. Sterilization")
    state: Literal["pending", "in_progress", "completed", "accepted"]
    deadline: datetime
    overdue: bool
    result: str | None
    startable: bool = Field(description="The previous step is accepted and this one is pending")
    signable: bool = Field(description="In progress and started by the caller: can be signed as performed")


class DeviceView(BaseModel):
    """One device (or test coupon) of the job."""

    device_code: str
    kind: Literal["device", "coupon"]
    udi_hri: str | None
    state: str
    current_stage: str | None = Field(description="Label of the first step that is not yet accepted")
    steps: list[StepView]
    open_nonconformities: list[str] = Field(description="Open nonconformities blocking it, in words")


class MachineView(BaseModel):
    """The machine of the job."""

    id: str
    manufacturer: str
    model: str
    site: str
    room: str
    software_revision: str | None
    live: LiveMachine | None = Field(description="Live state from the agent, when one reported")


class JobView(BaseModel):
    """The job."""

    id: int
    label: str = Field(description="JOB-<id>, the code printed on the traveller")
    state: str
    process: str
    material: str
    product_family: str


class KioskView(BaseModel):
    """Everything the operator sees after scanning a code."""

    scanned: str
    machine: MachineView
    job: JobView
    devices: list[DeviceView]
    build_file_checks: list[BuildFileCheckView]
    verdict: Verdict


class StartOut(BaseModel):
    """Result of a start request: the recorded gate verdict and the build steps started."""

    verdict: Verdict
    started_devices: list[str]


class CompleteWithPinIn(BaseModel):
    """A step's result, signed as performed with the operator's PIN."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    result: str = Field(min_length=3, max_length=2000, description="What was done and measured, e.g. cycle id")
    pin: str = Field(min_length=1, max_length=12, description="The operator's PIN (re-authentication to sign)")


class NonconformityReported(BaseModel):
    """A nonconformity the operator reported."""

    id: int
    kind: str
    description: str
    device_code: str | None
    job_id: int | None
    photo_sha256: str | None


class ScopeView(BaseModel):
    """A qualification scope of a machine."""

    id: int
    label: str = Field(description="process / material / product family")
    state: str
    state_reason: str | None
    valid_until: date | None
    expires_in_days: int | None


class MachineRow(BaseModel):
    """A machine on the production manager's dashboard."""

    id: str
    name: str
    software_revision: str | None
    calibration_due: date | None
    maintenance_due: date | None
    scopes: list[ScopeView]
    live: LiveMachine | None
    open_nonconformities: int


class JobRow(BaseModel):
    """A job in progress or waiting."""

    id: int
    label: str
    machine_id: str
    state: str
    devices: int
    stage_summary: str = Field(description="e.g. 'build in progress' or '2 waiting for post-processing'")


class AtRiskRow(BaseModel):
    """A step or case at risk of missing its deadline."""

    device_code: str
    what: str = Field(description="The step (or case) that is at risk")
    state: str
    deadline: datetime
    overdue: bool
    hours_left: float


class NonconformityRow(BaseModel):
    """An open nonconformity."""

    id: int
    kind: str
    description: str
    machine_id: str | None
    job_id: int | None
    device_code: str | None
    raised_by: str
    raised_at: datetime
    photo_sha256: str | None = Field(default=None, description="SHA-256 of the photo, read through "
                                                               "GET /nonconformities/{id}/photo")


class DashboardOverview(BaseModel):
    """The production manager's view of the floor."""

    machines: list[MachineRow]
    jobs: list[JobRow]
    at_risk: list[AtRiskRow]
    nonconformities: list[NonconformityRow]
    generated_at: datetime


# --- quality engineering: design approval, (re)qualification records, recipe approval ----------------

class FileRow(BaseModel):
    """A file of a design iteration with the SHA-256 the server computed."""

    file_name: str
    sha256: str
    size_bytes: int


class SignatureView(BaseModel):
    """A signature as people read it (P11 11.50): printed name, role, date/time, meaning, record hash."""

    id: int
    printed_name: str
    signer_role: str
    meaning: str
    signed_at: datetime
    record_sha256: str


class ApprovalRow(BaseModel):
    """A design iteration with its files, software and who signed what."""

    iteration_id: int
    number: int
    design_id: int
    design_name: str
    case_id: int
    product_family: str
    regulatory_category: str
    software: str = Field(description="Design software name and version")
    change_note: str
    content_sha256: str
    status: Literal["draft", "approved"]
    created_at: datetime
    files: list[FileRow]
    signatures: list[SignatureView]
    awaiting: list[str] = Field(description="Roles whose signature is still missing")


class RequalificationLink(BaseModel):
    """A (re)qualification record of a scope, in short."""

    id: int
    kind: str
    state: str
    started_at: datetime


class ScopeRecords(BaseModel):
    """A qualification scope with its (re)qualification records, newest first."""

    id: int
    machine_id: str
    label: str = Field(description="process / material / product family")
    state: str
    state_reason: str | None
    valid_until: date | None
    records: list[RequalificationLink]


class TriggerView(BaseModel):
    """A trigger attached to the record."""

    id: int
    kind: str
    source: str
    detail: str
    occurred_at: datetime


class RequalificationView(BaseModel):
    """Everything the requalification page shows: the record, its scope, triggers, blockers, signature."""

    record: RequalificationOut
    scope: ScopeRecords
    triggers: list[TriggerView]
    started_by: str
    criteria_locked_by: str | None
    blockers: list[str] = Field(description="What still stops approval, in words (empty: it can be signed)")
    approval: SignatureView | None


class RecipeRow(BaseModel):
    """A recipe version with its validated window and approval signature."""

    id: int
    name: str
    version: int
    process: str
    parameters: dict
    content_sha256: str
    state: str
    created_at: datetime
    approval: SignatureView | None
