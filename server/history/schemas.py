"""Build history rows, per-build signal summaries, and the device history record (DHR) schema.

DHR_SCHEMA_VERSION changes when a field is removed or changes meaning (additions keep the major number)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from server.timeseries.gaps import DataGap  # noqa: F401 - part of the history schemas (re-exported)

DHR_SCHEMA_VERSION = "1.0"  # part of the sealed records sections: an addition must not change it
SOURCE_STORED = "stored at release"
SOURCE_LIVE = "live"
SummarySource = Literal["stored at release", "live"]


class BuildRow(BaseModel):
    """One device and the build that made it, with its status."""

    device_code: str
    kind: str = Field(description="device | coupon")
    job_id: int
    machine_id: str
    material_lot: str
    design_name: str | None
    design_iteration_id: int | None
    design_iteration: int | None = Field(description="Iteration number within the design")
    build_started_at: datetime = Field(description="When the job was created (start of its records)")
    device_state: str
    status: str = Field(description="released | blocked | delivered | scrapped | in_production")
    nonconforming: bool = Field(description="A nonconformity was ever recorded on the device or its job")


class HistoryPage(BaseModel):
    """One page of a build history query."""

    total: int
    page: int
    page_size: int
    sort: str
    items: list[BuildRow]


class SignalSummary(BaseModel):
    """Summary of one signal over one build (InfluxDB aggregates)."""

    measurement: str
    field: str
    signal: str
    unit: str
    limits: dict[str, float] = Field(description="warn_low/warn_high/alarm_low/alarm_high as declared by the edge")
    samples: int
    min: float | None
    max: float | None
    mean: float | None
    samples_outside_warning: int
    samples_outside_alarm: int
    seconds_outside_warning: float = Field(description="Samples outside × mean sampling interval")
    seconds_outside_alarm: float


class BuildEvent(BaseModel):
    """An event recorded by the edge under the device code."""

    at: datetime
    kind: str = Field(description="excursion | excursion_end | gap | connection_lost | build_file_check | …")
    severity: str
    signal: str | None
    message: str
    value: float | None
    limit: float | None


class PlotExcursion(BaseModel):
    """A stretch of a plot where the signal was beyond a limit (from the bucket extremes: no sample is missed)."""

    start_ns: int
    end_ns: int
    severity: Literal["warning", "alarm"]
    side: Literal["low", "high"]
    limit: float
    extreme: float = Field(description="The lowest (low side) or highest (high side) value in the stretch")


class PlotSeries(BaseModel):
    """A signal over time for a plot, with its limits.

    values are the mean per interval; lows and highs the minimum and maximum in the same interval (the envelope a
    plot draws, so a one-sample spike is never averaged away); excursions every stretch beyond a limit."""

    measurement: str
    field: str
    label: str
    unit: str
    limits: dict[str, float]
    times_ns: list[int]
    values: list[float]
    lows: list[float] = Field(default_factory=list, description="Minimum per interval (empty in older summaries)")
    highs: list[float] = Field(default_factory=list, description="Maximum per interval (empty in older summaries)")
    excursions: list[PlotExcursion] = Field(default_factory=list, description="Stretches beyond a limit")


class BuildSummary(BaseModel):
    """Signals and events of one device's build."""

    device_code: str
    machine_id: str
    job_id: int
    start: datetime
    end: datetime
    signals: list[SignalSummary]
    events: list[BuildEvent]
    plots: list[PlotSeries] = Field(default_factory=list)
    data_gaps: list[DataGap] = Field(default_factory=list, description=(
        "Outages of the machine's data during the build (an empty list: none recorded)"))
    source: SummarySource = Field(SOURCE_LIVE, description=(
        "'stored at release': computed once from InfluxDB when the device was released and read from the "
        "records; 'live': computed from InfluxDB for this request (provisional until release)"))
    computed_at: datetime | None = Field(None, description="When the stored summary was computed (stored only)")
    summary_sha256: str | None = Field(None, description="SHA-256 of the stored summary (stored only)")
    note: str | None = Field(None, description="Why a released device's summary is live, when it is")


class StoredSummary(BaseModel):
    """What is stored once per released device: its build summary with plots, and each cycle's plot."""

    build: BuildSummary
    cycle_plots: dict[int, list[PlotSeries]] = Field(default_factory=dict, description="cycle id -> plot series")
    cycle_gaps: dict[int, list[DataGap]] = Field(default_factory=dict, description=(
        "cycle id -> outages of the cycle machine's data during the cycle (absent: stored before gaps were)"))


# --- device history record ---------------------------------------------------------------------

class SignatureManifest(BaseModel):
    """A signature as it is shown and printed: printed name, role, meaning, time (21 CFR 11.50)."""

    id: int
    printed_name: str
    role: str
    meaning: str
    signed_at: datetime
    record_type: str
    record_id: str


class DhrDevice(BaseModel):
    """The device itself."""

    device_code: str
    kind: str
    regulatory_category: str | None
    udi_hri: str | None
    udi_element_string: str | None
    position: dict[str, Any]
    state: str
    status: str


class DhrCase(BaseModel):
    """The clinical case, pseudonymous: no patient name ever appears."""

    case_id: int
    patient_ref: str = Field(description="Pseudonymous patient reference")
    institution: str
    clinician: str
    surgery_date: date


class DhrDesignFile(BaseModel):
    """A design/build file and its SHA-256."""

    file_name: str
    sha256: str
    size_bytes: int


class DhrDesign(BaseModel):
    """The design iteration built, its hashes and its approvals."""

    design_id: int
    name: str
    process: str
    material: str
    product_family: str
    iteration_id: int
    iteration: int
    status: str
    software: str
    content_sha256: str
    files: list[DhrDesignFile]
    approvals: list[SignatureManifest]


class DhrMaterialLot(BaseModel):
    """The material lot the job used."""

    lot_number: str
    material: str
    supplier: str
    certificate_ref: str
    lot_type: str
    reuse_count: int


class DhrMachine(BaseModel):
    """The build machine: identity, and software and qualification as the release gate saw them at build time."""

    machine_id: str
    manufacturer: str
    model: str
    serial_number: str
    site: str
    room: str
    software_at_build: str | None
    firmware_at_build: str | None
    build_prep_software_at_build: str | None
    qualification_at_build: dict[str, Any] | None


class DhrBuildFileCheck(BaseModel):
    """A build-file check reported by the edge."""

    file_name: str
    sha256: str
    passed: bool
    detail: str
    checked_at: datetime


class DhrGateDecision(BaseModel):
    """A release-gate decision on the job."""

    decision_id: int
    allowed: bool
    reasons: list[dict[str, Any]]
    decided_at: datetime
    requested_by: str


class DhrProcessMonitoring(BaseModel):
    """The build's signals and events from InfluxDB: stored at release, or live before it."""

    start: datetime
    end: datetime
    signals: list[SignalSummary]
    events: list[BuildEvent]
    plots: list[PlotSeries]
    data_gaps: list[DataGap] = Field(default_factory=list, description=(
        "Outages of the build machine's data during the build, each recovered or lost (empty: none recorded)"))
    source: SummarySource = Field(SOURCE_LIVE, description=(
        "'stored at release': the summary computed from InfluxDB when the device was released, read from the "
        "records (its SHA-256 is in the audit chain); 'live': computed from InfluxDB for this request, "
        "provisional (device not released, seal deferred, or released before summaries were stored)"))
    computed_at: datetime | None = Field(None, description="When the stored summary was computed")
    summary_sha256: str | None = Field(None, description="SHA-256 of the stored summary (see dhr verify)")
    note: str | None = Field(None, description="Why a released device's summary is live, when it is")


class DhrCycle(BaseModel):
    """A post-processing, cleaning or sterilization cycle the device was in, with its verdict."""

    cycle_id: int
    process: str
    machine_id: str
    recipe: str
    recipe_version: int
    cycle_ref: str | None
    load: list[str]
    started_at: datetime
    ended_at: datetime | None
    verdict: str | None
    criteria: list[dict[str, Any]]
    performed_by: SignatureManifest | None
    plot: list[PlotSeries]
    data_gaps: list[DataGap] = Field(default_factory=list, description=(
        "Outages of the cycle machine's data during the cycle, each recovered or lost (empty: none recorded)"))


class DhrManualStep(BaseModel):
    """A manual step with its results."""

    step_id: int
    kind: str
    description: str
    measurements: list[dict[str, Any]]
    photos: list[dict[str, Any]]
    result: str
    performed_at: datetime
    signature: SignatureManifest | None


class DhrStage(BaseModel):
    """A stage gate with its performer and acceptor signatures."""

    stage: str
    state: str
    deadline: datetime
    started_at: datetime | None
    completed_at: datetime | None
    result: str | None
    performed: SignatureManifest | None
    accepted_at: datetime | None
    judgement: str | None
    accepted: SignatureManifest | None
    impact_assessment: str | None


class DhrNonconformity(BaseModel):
    """A nonconformity that concerns the device, with its disposition and what it stops."""

    nonconformity_id: int
    kind: str
    description: str
    raised_by: str
    raised_at: datetime
    state: str
    disposition: str | None
    rationale: str | None
    signature: SignatureManifest | None
    scope: str = Field("this job", description=(
        "What it stops: 'this job' (the device or its job), 'machine …', 'material lot …', 'design iteration …'"))


class DhrLocalOverride(BaseModel):
    """An interval in which the device's data was tagged by a local assignment on the agent instead of the
    server's job context (from its local_override nonconformity)."""

    nonconformity_id: int
    machine_id: str | None
    job: str = Field(description="The job label given locally on the agent")
    start: datetime
    end: datetime | None = Field(description="None: not reported ended (still running, or the agent never said)")
    reason: str
    state: str = Field(description="The nonconformity's state: open or dispositioned")


class DhrRetention(BaseModel):
    """How long this device's records are kept (set when its release was accepted)."""

    retain_until: date
    product_family: str
    lifetime_years: float
    extra_years: float
    rule: str = Field(description="Where the rule came from: the product family's own, or the default")
    basis: str = Field(description="How retain_until is computed and the requirements behind it")


class DhrArchive(BaseModel):
    """The device's self-contained archive, written once after its release (server/archive)."""

    state: Literal["written", "missing", "damaged"] = Field(description=(
        "written: present and its manifest and record file match their hashes (dhr verify checks every file); "
        "missing: the device is sealed but no archive was written yet; damaged: a hash does not match"))
    archive_id: str | None = None
    written_at: datetime | None = None
    manifest_sha256: str | None = None
    files: int | None = None
    size_bytes: int | None = None
    location: str | None = None
    problems: list[str] = Field(default_factory=list)
    full_resolution: str = Field(default="", description="How to get every point of the device at full resolution")


class DhrRetainedSample(BaseModel):
    """A coupon or retained device of this device's job (or the device itself), where it is and what happened."""

    sample_id: int
    device_code: str
    kind: str
    location: str
    condition: str
    retain_until: date
    state: str = Field(description="stored, withdrawn (destructive test) or disposed")
    last_step: str = Field(description="The newest custody step, with when and why")


class DhrSeal(BaseModel):
    """The digest written into the audit chain when the device was released."""

    sealed_at: datetime
    range_start: datetime
    range_end: datetime
    point_count: int
    series_sha256: str
    records_sha256: str
    audit_seq: int


class DhrUnrecordedData(BaseModel):
    """Process data stored under the device's code on a machine, outside the build and every recorded cycle."""

    machine_id: str
    measurement: str
    start: datetime
    end: datetime
    minutes: int = Field(description="Minutes with data in the stretch")


class DeviceHistoryRecord(BaseModel):
    """Everything recorded about how one device was made (schema version in schema_version)."""

    schema_version: str = DHR_SCHEMA_VERSION
    generated_at: datetime
    generated_by: str
    device: DhrDevice
    case: DhrCase | None
    design: DhrDesign | None
    material_lot: DhrMaterialLot
    machine: DhrMachine
    job_id: int
    build_parameters: dict[str, Any]
    build_file_checks: list[DhrBuildFileCheck]
    release_gate: list[DhrGateDecision]
    process_monitoring: DhrProcessMonitoring
    cycles: list[DhrCycle]
    manual_steps: list[DhrManualStep]
    stages: list[DhrStage]
    nonconformities: list[DhrNonconformity]
    unrecorded_process_data: list[DhrUnrecordedData] = Field(default_factory=list, description=(
        "Process data under the device code with no recorded cycle for it (e.g. a furnace run nobody recorded): "
        "said, never silently left out; read from InfluxDB with the process monitoring"))
    unrecorded_check: str | None = Field(default=None, description=(
        "Whether unrecorded_process_data was looked for: checked, or not checked and why (InfluxDB unreachable)"))
    local_overrides: list[DhrLocalOverride] = Field(default_factory=list, description=(
        "Intervals in which this device's data was tagged by a local override of the server's job context"))
    related_nonconformities: list[DhrNonconformity] = Field(default_factory=list, description=(
        "Nonconformities of the device's machine (raised while its job was there), material lot or design "
        "iteration: they stop the device too"))
    delivery: DhrStage | None
    retained_samples: list[DhrRetainedSample] = Field(default_factory=list, description=(
        "Coupons and retained devices of this device's job (and the device itself, if retained)"))
    retention: DhrRetention | None = Field(default=None, description=(
        "Until when the records are kept; None until the release is accepted"))
    archive: DhrArchive | None = Field(default=None, description=(
        "The self-contained archive written after release; None until the device is sealed"))
    seal: DhrSeal | None
