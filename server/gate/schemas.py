"""Bodies of the release-gate API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from server.limits import TEXT_MAX


class GateRequest(BaseModel):
    """The edge (or an operator) asks before a build starts."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    machine_id: str
    # Strict: JSON `false` is not job 0 (schemathesis found lax parsing answering "Job 0 does not exist").
    job_id: StrictInt
    build_file_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the file the machine received")
    operator_id: StrictInt | None = Field(default=None, description="User id of the operator at the machine "
                                                              "(defaults to the caller when an operator asks)")


class Reason(BaseModel):
    """Why the gate refused."""

    code: str = Field(description="Stable code, e.g. machine_not_qualified")
    message: str = Field(description="Plain words an operator understands")


class GateDecisionOut(BaseModel):
    """The gate's answer."""

    allowed: bool
    reasons: list[Reason]
    decision_id: int


class GateDecisionRecord(GateDecisionOut):
    """A recorded decision with its inputs."""

    machine_id: str
    job_id: int
    build_file_sha256: str
    operator_id: int | None
    requested_by: str
    decided_at: datetime
    inputs: dict[str, Any]


class PresenceOut(BaseModel):
    """An operator identified at the kiosk for a job: the edge agent may name them for it until valid_until."""

    job_id: int
    machine_id: str
    operator_id: int
    at: datetime
    valid_until: datetime
