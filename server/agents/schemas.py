"""Bodies of the agent API (what the edge sends and receives)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge.validation.approvals import JobApprovals

from server.limits import TEXT_MAX


class AgentCreate(BaseModel):
    """Issue a token for an edge agent."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{2,100}$")
    machine_ids: list[str] = Field(min_length=1, description="Machines this agent may act for")


class AgentOut(BaseModel):
    """An agent (never its token)."""

    id: int
    name: str
    machine_ids: list[str]
    issued_at: datetime
    revoked_at: datetime | None
    last_seen_at: datetime | None


class AgentIssued(AgentOut):
    """A newly issued agent with its token, shown this once."""

    token: str = Field(description="Bearer token for the agent; only its SHA-256 is stored")


class RevokeIn(BaseModel):
    """Why the token is revoked."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    reason: str = Field(min_length=3)


class HeartbeatIn(BaseModel):
    """The agent is alive."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    machine_ids: list[str] | None = Field(default=None, description="Machines reachable now (default: all of its)")
    agent_version: str | None = None
    status: dict[str, Any] = Field(default_factory=dict, description="Free-form health (outbox depth, …)")


class HeartbeatOut(BaseModel):
    """Heartbeat acknowledged."""

    agent: str
    server_time: datetime
    live_status_problems: list[str] = Field(
        default_factory=list, description="Entries of status.machines that were refused, with where and why")


class IdentityIn(BaseModel):
    """Identity and revisions the edge read from the machine."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    # OPC 40001-1 makes Manufacturer and SerialNumber mandatory, Model and the revisions optional: a machine
    # reports what it has (None = not offered), rather than not at all.
    manufacturer: str = Field(min_length=1, max_length=100)
    serial_number: str = Field(min_length=1, max_length=100)
    model: str | None = Field(default=None, max_length=100)
    software_revision: str | None = Field(default=None, max_length=100)
    hardware_revision: str | None = Field(default=None, max_length=100)
    firmware_revision: str | None = None
    build_prep_software: str | None = None


class IdentityOut(BaseModel):
    """What the server recorded and whether the machine may build."""

    machine_id: str
    software_revision: str | None
    firmware_revision: str | None
    build_prep_software: str | None
    scopes: list[dict[str, Any]] = Field(description="Each scope of the machine: id, state, state_reason")


class CycleWindow(BaseModel):
    """A cycle as recorded: what ran on the machine from start to end (None while running)."""

    job_id: str
    device_codes: list[str]
    start_ns: int
    end_ns: int | None


class ContextOut(BaseModel):
    """What is on the machine now."""

    machine_id: str
    job_id: str | None
    job_state: str | None
    device_codes: list[str]
    approvals: JobApprovals | None
    started_ns: int | None = Field(
        default=None, description="When the job or cycle started (Unix ns), so readings from then on carry its devices")
    open_nonconformities: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Open nonconformities on the job ({id, kind, description}): the edge keeps the start blocked")
    blocking_reasons: list[str] = Field(
        default_factory=list,
        description="Why the job may not start now although the gate released it (its material lot quarantined "
                    "or expired since): the edge keeps the start blocked")
    scopes: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The machine's qualification scopes ({id, state, state_reason}): the edge keeps the start "
                    "blocked while one is not qualified, and lets it go the moment it is requalified")
    recent_cycles: list[CycleWindow] = Field(
        default_factory=list,
        description="The machine's cycles of the last 7 days with their recorded start and end, newest first: "
                    "the edge re-tags readings it wrote before it knew of them (a cycle recorded late)")


class BuildFileCheckIn(BaseModel):
    """A build-file check result."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    job_id: int | None = None
    file_name: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    passed: bool
    detail: str = ""


class BuildFileCheckOut(BaseModel):
    """A recorded build-file check."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    machine_id: str
    job_id: int | None
    file_name: str
    sha256: str
    passed: bool
    detail: str
    checked_at: datetime
    nonconformity_id: int | None


class ExcursionIn(BaseModel):
    """A process signal beyond its limit."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    job_id: int | None = None
    signal: str = Field(description="E.g. chamber_o2_ppm")
    value: float
    limit: float
    unit: str
    description: str = ""
    device_codes: list[str] = Field(default_factory=list, description="Devices affected (default: the job)")
    requires_requalification: bool = False


class ExcursionOut(BaseModel):
    """Nonconformities raised for the excursion."""

    nonconformity_ids: list[int]
