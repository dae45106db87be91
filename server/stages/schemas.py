"""Bodies of the stage-gate API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.limits import TEXT_MAX

Stage = Literal["build", "post_processing", "cleaning", "sterilization", "inspection", "release", "delivery"]


class StepOut(BaseModel):
    """One stage step of a device."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: int
    stage: Stage
    position: int
    state: Literal["pending", "in_progress", "completed", "accepted"]
    deadline: datetime
    overdue: bool = False
    started_at: datetime | None
    started_by: int | None
    completed_at: datetime | None
    completed_by: int | None
    completion_signature_id: int | None
    result: str | None
    accepted_at: datetime | None
    accepted_by: int | None
    acceptance_signature_id: int | None
    judgement: str | None
    impact_assessment: str | None
    impact_assessed_by: int | None
    impact_assessed_at: datetime | None


class CompleteIn(BaseModel):
    """Performer's result and signature."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    result: str = Field(min_length=1, description="What was done and measured (cycle id, parameters…)")
    password: str


class AcceptIn(BaseModel):
    """Acceptor's judgement and signature."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    judgement: str = Field(min_length=1, description="Judgement of order, completeness and conformity")
    password: str


class ImpactIn(BaseModel):
    """Impact assessment of an overdue step."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    assessment: str = Field(min_length=10, max_length=4000,
                            description="Effect of the delay on the device and the surgery date")
    password: str = Field(max_length=200, description="The assessor's password (electronic signature, reviewed)")


class ImpactAssessmentOut(BaseModel):
    """One signed impact assessment of an overdue step."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    step_id: int
    assessment: str
    assessed_by: int
    assessed_at: datetime
    signature_id: int | None
