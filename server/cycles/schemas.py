"""Request and response bodies of the cycles API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.cycles.evaluation import Criterion, ResidueResult
from server.limits import Instant, TEXT_MAX


class RecipeIn(BaseModel):
    """A new version of a validated cycle recipe."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    name: str = Field(min_length=1, max_length=100, description="Recipe name, e.g. STEAM-134-4MIN")
    parameters: dict[str, Any] = Field(description="Validated window; 'process' selects the schema "
                                                   "(steam, ethylene_oxide, radiation, heat_treatment, cleaning)")


class PasswordIn(BaseModel):
    """Re-authentication for a signature."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    password: str = Field(min_length=1, description="The signer's password (21 CFR 11.200)")


class SignatureOut(BaseModel):
    """A signature as shown to people: printed name, role, meaning, time."""

    id: int
    printed_name: str
    role: str
    meaning: str
    signed_at: datetime


class RecipeOut(BaseModel):
    """A recipe version."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    version: int
    process: str
    parameters: dict[str, Any]
    content_sha256: str
    state: str
    created_at: datetime
    approved_at: datetime | None
    approval_signature_id: int | None


class CycleStartIn(BaseModel):
    """Start of a cycle on a load of devices."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    machine_id: str = Field(min_length=1, max_length=64)
    recipe_id: int = Field(description="The approved recipe version the machine runs")
    device_codes: list[str] = Field(min_length=1, max_length=1000, description="Device codes in the load")
    started_at: Instant | None = Field(default=None, description="Cycle start (default now), with time zone")
    cycle_ref: str | None = Field(default=None, max_length=100, description="The machine's cycle number")


class CycleCompleteIn(BaseModel):
    """Completion of a cycle, signed by the operator who started it."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    password: str = Field(min_length=1)
    ended_at: Instant | None = Field(default=None, description="Cycle end (default now), with time zone")
    residue_results: list[ResidueResult] = Field(default_factory=list, description="Cleaning: residue tests")


class CycleOut(BaseModel):
    """A cycle record with its verdict and every criterion."""

    id: int
    machine_id: str
    process: str
    recipe_id: int
    recipe_name: str
    recipe_version: int
    cycle_ref: str | None
    device_codes: list[str]
    state: str
    started_at: datetime
    ended_at: datetime | None
    operator_id: int
    verdict: str | None
    criteria: list[Criterion]
    samples: int | None
    signature: SignatureOut | None
    nonconformity_ids: list[int]


class MeasurementIn(BaseModel):
    """An inspection measurement against its tolerance."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    name: str = Field(min_length=1, max_length=100, description="Feature, e.g. cup_outer_diameter")
    nominal: float
    tol_minus: float = Field(ge=0, description="Lower tolerance (positive number)")
    tol_plus: float = Field(ge=0, description="Upper tolerance")
    measured: float
    unit: str = Field(min_length=1, max_length=16)


class PhotoIn(BaseModel):
    """A photo of the step (small JPEG/PNG), stored by SHA-256."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    file_name: str = Field(min_length=1, max_length=255)
    caption: str = Field(default="", max_length=500)
    content_base64: str = Field(max_length=8_000_000, description="File content, base64 (at most ~6 MB)")


class ManualStepIn(BaseModel):
    """A manual post-processing step or inspection, signed by who performed it."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    kind: str = Field(description="support_removal | surface_finishing | inspection | rework | other")
    description: str = Field(min_length=1, max_length=4000)
    measurements: list[MeasurementIn] = Field(default_factory=list)
    photos: list[PhotoIn] = Field(default_factory=list, max_length=10)
    password: str = Field(min_length=1)


class ManualStepOut(BaseModel):
    """A recorded manual step with the server's judgement of each measurement."""

    id: int
    device_code: str
    kind: str
    description: str
    measurements: list[dict[str, Any]]
    photos: list[dict[str, Any]]
    result: str
    performed_by: int
    performed_at: datetime
    signature: SignatureOut | None
    nonconformity_id: int | None
