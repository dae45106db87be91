"""Bodies of the agent API: the wire contract itself is edge/contract.py (both sides import it); here what only the
server's administration of agents uses."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from edge.contract import (AgentContext, BuildFileCheckIn, CycleWindow, ExcursionIn, ExcursionOut, HeartbeatIn,
                           HeartbeatOut, IdentityIn, IdentityOut, JobApprovals, LocalOverrideIn, LocalOverrideOut)

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

__all__ = ["AgentContext", "AgentCreate", "AgentIssued", "AgentOut", "BuildFileCheckIn", "BuildFileCheckOut",
           "CycleWindow", "ExcursionIn", "ExcursionOut", "HeartbeatIn", "HeartbeatOut", "IdentityIn",
           "IdentityOut", "JobApprovals", "LocalOverrideIn", "LocalOverrideOut", "RevokeIn"]
