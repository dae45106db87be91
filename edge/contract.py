"""The agent↔server contract: what an edge agent sends and what the server answers, one set of models.

The server's agent API (server/agents/router.py) serves and accepts exactly these, and the agent's link
(edge/serverlink.py) reads and sends them, so a field changes on both sides at once and the edge never reads
the server's answers as untyped dictionaries. Pydantic only: both installs have it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge.validation.approvals import JobApprovals

# The longest free text a field takes (the server's own bound, server.limits.TEXT_MAX; a test keeps them equal).
TEXT_MAX = 4000

__all__ = ["AgentContext", "BuildFileCheckIn", "CycleWindow", "ExcursionIn", "ExcursionOut", "HeartbeatIn",
           "HeartbeatOut", "IdentityIn", "IdentityOut", "JobApprovals", "NonconformityBrief", "ScopeBrief"]


class ScopeBrief(BaseModel):
    """A qualification scope of the machine as the edge needs it: the start stays blocked unless qualified."""

    id: int
    state: str
    state_reason: str | None = None


class NonconformityBrief(BaseModel):
    """An open nonconformity on the job: the start stays blocked until it is dispositioned."""

    id: int
    kind: str
    description: str


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
    machine_ids: list[str] | None = Field(
        default=None, description="The machines the server holds this agent responsible for (None: an older server)")

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
    scopes: list[ScopeBrief] = Field(description="Each scope of the machine: id, state, state_reason")


class CycleWindow(BaseModel):
    """A cycle as recorded: what ran on the machine from start to end (None while running)."""

    job_id: str
    device_codes: list[str]
    start_ns: int
    end_ns: int | None


class AgentContext(BaseModel):
    """What is on the machine now."""

    machine_id: str
    job_id: str | None
    job_state: str | None
    device_codes: list[str]
    approvals: JobApprovals | None
    started_ns: int | None = Field(
        default=None, description="When the job or cycle started (Unix ns), so readings from then on carry its devices")
    open_nonconformities: list[NonconformityBrief] = Field(
        default_factory=list,
        description="Open nonconformities on the job ({id, kind, description}): the edge keeps the start blocked")
    blocking_reasons: list[str] = Field(
        default_factory=list,
        description="Why the job may not start now although the gate released it (its material lot quarantined "
                    "or expired since): the edge keeps the start blocked")
    scopes: list[ScopeBrief] = Field(
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


class LocalOverrideIn(BaseModel):
    """A local assignment that overrode the server's job context on a server-managed machine: a nonconformity
    candidate for each device it tagged; sent again with end_ns once the local assignment ended."""

    model_config = ConfigDict(extra="forbid", str_max_length=TEXT_MAX)

    job: str = Field(max_length=100, description="The job label given locally")
    device_codes: list[str] = Field(max_length=1000, description="The device codes the data was tagged with")
    reason: str = Field(min_length=10, description="Why the operator overrode the server")
    start_ns: int = Field(ge=0, description="From when the data carried these codes")
    end_ns: int | None = Field(default=None, ge=0, description="Until when; none while it lasts")


class LocalOverrideOut(BaseModel):
    """The nonconformities that record the override."""

    nonconformity_ids: list[int]


class ExcursionOut(BaseModel):
    """Nonconformities raised for the excursion."""

    nonconformity_ids: list[int]
