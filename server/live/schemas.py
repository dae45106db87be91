"""Shapes of live machine state: what an agent's heartbeat carries and what dashboards receive."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MachineState = Literal["building", "idle", "offline", "unknown"]


class LiveAlert(BaseModel):
    """An alert the agent raised for a machine (limit excursion, connection lost, …)."""

    model_config = ConfigDict(extra="ignore")

    severity: Literal["info", "warning", "alarm"] = Field(description="How serious the alert is")
    message: str = Field(max_length=500, description="What happened, in words")
    ts_ns: int = Field(ge=0, description="When it happened, nanoseconds since the epoch")


class LiveMachineReport(BaseModel):
    """One machine's state as the agent reports it in heartbeat status.machines.<id>."""

    model_config = ConfigDict(extra="ignore")

    connected: bool = Field(description="The agent is connected to the machine")
    state: MachineState = Field(description="building, idle, offline or unknown")
    job: str | None = Field(default=None, description="Job on the machine, e.g. JOB-1 or 1")
    layer: int | None = Field(default=None, ge=0, description="Current layer of a printer")
    layers_total: int | None = Field(default=None, ge=0, description="Layers in the build")
    software_revision: str | None = Field(default=None, description="Control software revision read now")
    alerts: list[LiveAlert] = Field(default_factory=list, description="Current alerts")
    updated_ns: int = Field(ge=0, description="When the agent took this state, ns since the epoch")


class LiveMachine(LiveMachineReport):
    """A machine's live state as the server holds it."""

    machine_id: str
    agent: str = Field(description="Name of the agent that reported it")
    received_at: str = Field(description="Server time the heartbeat arrived (ISO 8601, UTC)")
    progress_pct: float | None = Field(default=None, description="layer / layers_total × 100 when both are known")
    stale: bool = Field(default=False, description="No heartbeat for longer than the offline limit")
